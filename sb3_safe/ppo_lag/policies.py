"""Actor-critic policies with a cost value function, shared by PPOLag, TRPOLag and CPO."""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    NatureCNN,
    create_mlp,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

CostValueHead = Literal["separate", "shared"]


class CostActorCriticPolicy(ActorCriticPolicy):
    """SB3's ``ActorCriticPolicy`` plus a cost value function V_c(s).

    Two layouts, chosen with ``cost_value_head`` (pass it in ``policy_kwargs``):

    * ``"separate"`` (default, as OmniSafe's cost critic): its own MLP with the hidden sizes of the
      value network (``net_arch["vf"]``) on the critic's features, then a linear output.
    * ``"shared"``: a linear head on the value network's last hidden layer, next to ``value_net``;
      the cost loss then also trains the shared value layers.

    All cost parameters live in ``cost_value_net``: the name contains ``"value"`` so that
    sb3-contrib TRPO's actor-gradient code (which skips parameters named ``*value*``) leaves them out
    of the trust-region step. The policy optimiser covers them too.

    :param observation_space: observation space
    :param action_space: action space
    :param lr_schedule: learning-rate schedule
    :param cost_value_head: ``"separate"`` or ``"shared"`` (see above)
    :param kwargs: every other argument of :class:`~stable_baselines3.common.policies.ActorCriticPolicy`
        (``net_arch``, ``activation_fn``, ``ortho_init``, ``features_extractor_class``, ...)
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        cost_value_head: CostValueHead = "separate",
        **kwargs: Any,
    ) -> None:
        if cost_value_head not in ("separate", "shared"):
            raise ValueError(f"cost_value_head must be 'separate' or 'shared', got {cost_value_head!r}")
        # Read by _build(), which the parent's __init__ calls.
        self.cost_value_head = cost_value_head
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        self.cost_value_net = self._make_cost_value_net()
        # The parent built the optimiser before the cost network existed.
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _value_hidden_sizes(self) -> list[int]:
        if isinstance(self.net_arch, dict):
            return list(self.net_arch.get("vf", []))
        return list(self.net_arch)

    def _make_cost_value_net(self) -> nn.Module:
        if self.cost_value_head == "shared":
            head = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
            if self.ortho_init:
                head.apply(partial(self.init_weights, gain=1))
            return head
        layers = create_mlp(self.features_dim, 1, self._value_hidden_sizes(), self.activation_fn)
        net = nn.Sequential(*layers)
        if self.ortho_init:
            # Hidden layers as SB3's mlp_extractor (sqrt 2), output as SB3's value_net (1).
            net.apply(partial(self.init_weights, gain=np.sqrt(2)))
            net[-1].apply(partial(self.init_weights, gain=1))
        return net

    def predict_cost_values(self, obs: PyTorchObs) -> th.Tensor:
        """Cost-value estimates V_c(s).

        :param obs: observations (already a tensor or TensorDict)
        :return: the cost values, shape (batch, 1)
        """
        features = BasePolicy.extract_features(self, obs, self.vf_features_extractor)
        if self.cost_value_head == "shared":
            return self.cost_value_net(self.mlp_extractor.forward_critic(features))
        return self.cost_value_net(features)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(cost_value_head=self.cost_value_head)
        return data


class CostActorCriticCnnPolicy(CostActorCriticPolicy):
    """:class:`CostActorCriticPolicy` with SB3's ``NatureCNN`` features extractor by default (image observations).

    :param observation_space: observation space
    :param action_space: action space
    :param lr_schedule: learning-rate schedule
    :param cost_value_head: ``"separate"`` or ``"shared"``
    :param features_extractor_class: features extractor (default ``NatureCNN``)
    :param kwargs: every other argument of :class:`CostActorCriticPolicy`
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        cost_value_head: CostValueHead = "separate",
        features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            cost_value_head=cost_value_head,
            features_extractor_class=features_extractor_class,
            **kwargs,
        )


class CostMultiInputActorCriticPolicy(CostActorCriticPolicy):
    """:class:`CostActorCriticPolicy` for Dict observations (SB3's ``CombinedExtractor`` by default).

    :param observation_space: the Dict observation space
    :param action_space: action space
    :param lr_schedule: learning-rate schedule
    :param cost_value_head: ``"separate"`` or ``"shared"``
    :param features_extractor_class: features extractor (default ``CombinedExtractor``)
    :param kwargs: every other argument of :class:`CostActorCriticPolicy`
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        cost_value_head: CostValueHead = "separate",
        features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            cost_value_head=cost_value_head,
            features_extractor_class=features_extractor_class,
            **kwargs,
        )


MlpPolicy = CostActorCriticPolicy
CnnPolicy = CostActorCriticCnnPolicy
MultiInputPolicy = CostMultiInputActorCriticPolicy

__all__ = [
    "CnnPolicy",
    "CostActorCriticCnnPolicy",
    "CostActorCriticPolicy",
    "CostMultiInputActorCriticPolicy",
    "CostValueHead",
    "MlpPolicy",
    "MultiInputPolicy",
]
