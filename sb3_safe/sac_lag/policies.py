"""SAC policies with a twin cost Q-function for SACLag (SPEC.md 2.3)."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    NatureCNN,
)
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.sac.policies import SACPolicy
from torch import nn


class SACLagPolicy(SACPolicy):
    """SAC's actor and twin reward critic, plus a twin cost critic ``Q_c(s, a)`` and its target.

    The cost critic is built exactly like the reward critic (same ``net_arch`` critic part,
    ``n_critics`` heads, own features extractor unless ``share_features_extractor``), has its own
    optimiser (``cost_critic.optimizer``) and its own Polyak-averaged target ``cost_critic_target``.
    Since both live in the policy, ``save``/``load`` keep them.

    :param observation_space: observation space
    :param action_space: action space (``spaces.Box``)
    :param lr_schedule: learning rate schedule (could be constant)
    :param net_arch: sizes of the actor and critic networks (SB3 format)
    :param activation_fn: activation function
    :param use_sde: whether to use generalised State-Dependent Exploration
    :param log_std_init: initial log standard deviation
    :param use_expln: use ``expln()`` instead of ``exp()`` with gSDE
    :param clip_mean: clip of the mean output with gSDE
    :param features_extractor_class: features extractor class
    :param features_extractor_kwargs: its keyword arguments
    :param normalize_images: divide image observations by 255
    :param optimizer_class: optimiser class (Adam by default)
    :param optimizer_kwargs: optimiser keyword arguments, excluding the learning rate
    :param n_critics: number of reward critics and of cost critics
    :param share_features_extractor: share the actor's features extractor with both critics
    """

    cost_critic: ContinuousCritic
    cost_critic_target: ContinuousCritic

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        use_sde: bool = False,
        log_std_init: float = -3,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            use_sde=use_sde,
            log_std_init=log_std_init,
            use_expln=use_expln,
            clip_mean=clip_mean,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            n_critics=n_critics,
            share_features_extractor=share_features_extractor,
        )

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        if self.share_features_extractor:
            self.cost_critic = self.make_critic(features_extractor=self.actor.features_extractor)
            # As for the reward critic: the shared extractor is trained by the actor loss only.
            cost_parameters = [p for name, p in self.cost_critic.named_parameters() if "features_extractor" not in name]
        else:
            self.cost_critic = self.make_critic(features_extractor=None)
            cost_parameters = list(self.cost_critic.parameters())
        self.cost_critic_target = self.make_critic(features_extractor=None)
        self.cost_critic_target.load_state_dict(self.cost_critic.state_dict())
        self.cost_critic.optimizer = self.optimizer_class(
            cost_parameters,
            lr=lr_schedule(1),  # type: ignore[call-arg]
            **self.optimizer_kwargs,
        )
        self.cost_critic_target.set_training_mode(False)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        # SB3's SACPolicy omits it; without it a loaded policy would silently stop sharing.
        data["share_features_extractor"] = self.share_features_extractor
        return data

    def set_training_mode(self, mode: bool) -> None:
        """Put the actor and both critics in training (True) or evaluation (False) mode."""
        super().set_training_mode(mode)
        self.cost_critic.set_training_mode(mode)


MlpPolicy = SACLagPolicy


class CnnPolicy(SACLagPolicy):
    """:class:`SACLagPolicy` with SB3's ``NatureCNN`` features extractor by default (image observations).

    Parameters as in :class:`SACLagPolicy`.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN,
        **kwargs: Any,
    ) -> None:
        super().__init__(observation_space, action_space, lr_schedule, features_extractor_class=features_extractor_class, **kwargs)


class MultiInputPolicy(SACLagPolicy):
    """:class:`SACLagPolicy` with SB3's ``CombinedExtractor`` by default (dict observations).

    Parameters as in :class:`SACLagPolicy`.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor,
        **kwargs: Any,
    ) -> None:
        super().__init__(observation_space, action_space, lr_schedule, features_extractor_class=features_extractor_class, **kwargs)
