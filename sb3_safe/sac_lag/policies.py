"""SAC policies with a twin cost Q-function for SACLag (SPEC.md 2.3)."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    NatureCNN,
)
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.sac.policies import SACPolicy
from torch import nn

from sb3_safe.common.cost_value_head import CostValueHead, check_cost_value_head
from sb3_safe.common.dynamics import EnsembleLinear


class RewardCostCritic(BaseModel):
    """The twin reward critics ``Q_r,i(s, a)`` and the twin cost critics ``Q_c,i(s, a)`` as one ensemble MLP.

    All ``2 * n_critics`` Q-functions are the members of one ensemble MLP whose layers are
    :class:`~sb3_safe.common.dynamics.EnsembleLinear` (weights ``(members, in, out)``, one batched
    matmul per layer), so one forward pass evaluates every Q-function: members ``0 .. n_critics - 1``
    are the reward critics, members ``n_critics .. 2 n_critics - 1`` the cost critics. Each member is
    the MLP that SB3's ``ContinuousCritic`` builds for one Q-network (input ``[features, action]``,
    the hidden sizes of ``net_arch`` with ``activation_fn`` after each, a scalar output) with its own
    independent weights, initialised with the same fan-in-scaled uniform law as ``nn.Linear``.
    Running the four small MLPs as one ensemble costs one kernel per layer instead of one per layer
    and Q-network, which is what the extra cost critic of SACLag would otherwise add to SAC's time.
    As SB3's ``ContinuousCritic`` does for its Q-networks, the features extractor runs once per call
    and all members read its features (so a trainable critic extractor, e.g. a CNN, is trained by
    the reward and the cost losses together).

    Two layouts, chosen with ``cost_value_head`` (the option of the same name of PPOLag's policy):

    * ``"separate"`` (default, as OmniSafe's SACLag): ``2 * n_critics`` members, each cost critic
      an MLP of its own. The critic arithmetic is twice SAC's.
    * ``"shared"``: ``n_critics`` members with two outputs each, ``(Q_r,i, Q_c,i)``: each cost critic
      is a second linear head on the last hidden layer of a reward critic, trained through the shared
      layers by the sum of the reward and the cost losses. The critic arithmetic is SAC's, plus one
      output unit per member.
    Reference: Haarnoja et al., *Soft Actor-Critic Algorithms and Applications* (2018) for the twin
    critics; Ha et al., *Learning to Walk in the Real World with Minimal Human Effort* (CoRL 2020)
    for the cost critic of SAC-Lagrangian.

    :param observation_space: observation space
    :param action_space: action space (``spaces.Box``)
    :param net_arch: hidden layer sizes of every Q-network
    :param features_extractor: the features extractor (the actor's when shared)
    :param features_dim: number of features it outputs
    :param activation_fn: activation function after each hidden layer
    :param normalize_images: divide image observations by 255
    :param n_critics: number of reward critics, and of cost critics
    :param share_features_extractor: the extractor is the actor's; it is then trained by the actor
        loss only (features computed without gradient here), as in SB3's ``ContinuousCritic``
    :param cost_value_head: ``"separate"`` or ``"shared"`` (see above)
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        n_critics: int = 2,
        share_features_extractor: bool = True,
        cost_value_head: CostValueHead = "separate",
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        if n_critics < 1:
            raise ValueError(f"RewardCostCritic: n_critics must be >= 1, got {n_critics}")
        check_cost_value_head(cost_value_head)
        self.share_features_extractor = share_features_extractor
        self.n_critics = n_critics
        self.cost_value_head = cost_value_head
        shared = cost_value_head == "shared"
        self.n_members = n_critics if shared else 2 * n_critics
        sizes = [features_dim + get_action_dim(self.action_space), *net_arch, 2 if shared else 1]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [EnsembleLinear(self.n_members, n_in, n_out), activation_fn()]
        # No activation after the scalar output (as SB3's create_mlp).
        self.q_networks = nn.Sequential(*layers[:-1])

    def all_q_values(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """Every Q-function at once.

        :param obs: observations (batch first)
        :param actions: actions of shape ``(batch, action_dim)``
        :return: Q-values of shape ``(2 * n_critics, batch, 1)``: the reward critics first, then the cost critics
        """
        with th.set_grad_enabled(not self.share_features_extractor):
            features = self.extract_features(obs, self.features_extractor)
        qvalue_input = th.cat([features, actions], dim=1)
        q_values = self.q_networks(qvalue_input.expand(self.n_members, -1, -1))
        if self.cost_value_head == "shared":
            return th.cat([q_values[..., :1], q_values[..., 1:]], dim=0)
        return q_values

    def forward(self, obs: th.Tensor, actions: th.Tensor) -> tuple[tuple[th.Tensor, ...], tuple[th.Tensor, ...]]:
        """The reward critics' and the cost critics' Q-values, each a tuple of ``(batch, 1)`` tensors
        (the format of SB3's ``ContinuousCritic``).

        :param obs: observations (batch first)
        :param actions: actions of shape ``(batch, action_dim)``
        :return: ``(reward Q-values, cost Q-values)``
        """
        q_values = self.all_q_values(obs, actions)
        return tuple(q_values[: self.n_critics].unbind(0)), tuple(q_values[self.n_critics :].unbind(0))


class SACLagPolicy(SACPolicy):
    """SAC's actor with one critic holding the twin reward Q-functions and the twin cost Q-functions.

    ``critic`` (and its Polyak-averaged copy ``critic_target``) is a :class:`RewardCostCritic`: the
    ``n_critics`` reward critics and ``n_critics`` cost critics built like SB3's critics (the critic
    part of ``net_arch``, ``activation_fn``, their own features extractor unless
    ``share_features_extractor``) but evaluated together as one ensemble. One optimiser
    (``critic.optimizer``) trains all of them; Adam's update is per parameter, so this is the same as
    one optimiser per critic with the same settings, and the cost critics' learning rate is the
    critic's (``learning_rate``). Since the critics live in the policy, ``save``/``load`` keep them.
    Reference: Haarnoja et al., *Soft Actor-Critic Algorithms and Applications* (2018); Ha et al.,
    *Learning to Walk in the Real World with Minimal Human Effort* (CoRL 2020).

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
    :param share_features_extractor: share the actor's features extractor with the critics
    :param cost_value_head: ``"separate"`` (each cost critic its own MLP) or ``"shared"`` (a second
        output of each reward critic, SAC's critic arithmetic); see :class:`RewardCostCritic`
    """

    critic: RewardCostCritic
    critic_target: RewardCostCritic

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
        cost_value_head: CostValueHead = "separate",
    ) -> None:
        # Set before SACPolicy.__init__, whose _build() calls make_critic() (RewardCostCritic checks it).
        self.cost_value_head = cost_value_head
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

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> RewardCostCritic:  # type: ignore[override]
        """Build a :class:`RewardCostCritic` (SACPolicy._build builds the critic, its target and its optimiser with it).

        :param features_extractor: the extractor to use (the actor's when shared), None for a new one
        :return: the critic
        """
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return RewardCostCritic(**critic_kwargs, cost_value_head=self.cost_value_head).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        # SB3's SACPolicy omits it; without it a loaded policy would silently stop sharing.
        data["share_features_extractor"] = self.share_features_extractor
        data["cost_value_head"] = self.cost_value_head
        return data


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
