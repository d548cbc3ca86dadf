"""Actor-critic policies with a cost value function, shared by PPOLag, TRPOLag and CPO."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    NatureCNN,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_safe.common.cost_value_head import CostValueHead, check_cost_value_head
from sb3_safe.common.dynamics import EnsembleLinear


class TwinCriticMlp(nn.Module):
    """Two value MLPs of the same shape (V and V_c) evaluated as one batched network.

    Each layer holds both members' weights, shape (2, in, out), and runs as one ``baddbmm``, so the
    cost critic adds no extra layers, kernel launches or optimiser tensors to the reward critic's:
    what makes PPOLag nearly as fast as PPO (a second, separate MLP cost ~25% of PPO's throughput).

    :param features_dim: input size
    :param hidden_sizes: hidden layer sizes (SB3's ``net_arch["vf"]``); the last one is the latent size
    :param activation_fn: activation after each hidden layer
    """

    def __init__(self, features_dim: int, hidden_sizes: list[int], activation_fn: type[nn.Module]) -> None:
        super().__init__()
        sizes = [features_dim, *hidden_sizes]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [EnsembleLinear(2, n_in, n_out), activation_fn()]
        self.hidden = nn.Sequential(*layers)
        self.head = EnsembleLinear(2, sizes[-1], 1)

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """:param features: shape (batch, features_dim)
        :return: the values and the cost values, each of shape (batch, 1)"""
        out = self.head(self.hidden(features.expand(2, *features.shape)))
        return out[0], out[1]

    def orthogonal_init(self, hidden_gain: float, head_gain: float) -> None:
        """SB3's ``ortho_init`` (orthogonal weights, zero biases) applied member by member."""
        layers = [layer for layer in self.hidden if isinstance(layer, EnsembleLinear)]
        with th.no_grad():
            for layer, gain in [*[(layer, hidden_gain) for layer in layers], (self.head, head_gain)]:
                for member in range(layer.n_members):
                    weight = th.empty(layer.out_features, layer.in_features)
                    nn.init.orthogonal_(weight, gain=gain)
                    layer.weight[member].copy_(weight.T)
                layer.bias.zero_()


class CostActorCriticPolicy(ActorCriticPolicy):
    """SB3's ``ActorCriticPolicy`` plus a cost value function V_c(s).

    Two layouts, chosen with ``cost_value_head`` (pass it in ``policy_kwargs``):

    * ``"separate"`` (default, as OmniSafe's cost critic): V_c has its own MLP with the hidden sizes
      of the value network (``net_arch["vf"]``). V and V_c are evaluated together by a
      :class:`TwinCriticMlp` (``value_net``), which replaces SB3's value MLP and value head.
    * ``"shared"``: a linear head (``cost_value_net``) on the value network's last hidden layer, next
      to ``value_net``; the cost loss then also trains the shared value layers.

    Every critic parameter has ``value`` in its name, so that sb3-contrib TRPO's actor-gradient code
    (which skips parameters named ``*value*``) leaves them out of the trust-region step. The policy
    optimiser covers them too. ``forward``, ``evaluate_actions`` and ``predict_values`` keep SB3's
    signatures; the ``*_with_cost`` variants also return the cost values of the same pass, ``act`` runs
    the actor alone and ``predict_critics`` the two critics alone.

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
        check_cost_value_head(cost_value_head)
        # Read by _build(), which the parent's __init__ calls.
        self.cost_value_head = cost_value_head
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        if self.cost_value_head == "shared":
            self.cost_value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
            if self.ortho_init:
                self.cost_value_net.apply(partial(self.init_weights, gain=1))
        else:
            # The twin critic takes over both the value MLP and the value head of SB3's layout.
            self.mlp_extractor.value_net = nn.Identity()
            self.value_net = TwinCriticMlp(self.features_dim, self._value_hidden_sizes(), self.activation_fn)
            if self.ortho_init:
                self.value_net.orthogonal_init(hidden_gain=np.sqrt(2), head_gain=1)
        # The parent built the optimiser before the cost parameters existed.
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _value_hidden_sizes(self) -> list[int]:
        if isinstance(self.net_arch, dict):
            return list(self.net_arch.get("vf", []))
        return list(self.net_arch)

    def _latents(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        features = self.extract_features(obs)
        if self.share_features_extractor:
            return self.mlp_extractor(features)
        pi_features, vf_features = features
        return self.mlp_extractor.forward_actor(pi_features), self.mlp_extractor.forward_critic(vf_features)

    def _critics(self, latent_vf: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        if self.cost_value_head == "shared":
            return self.value_net(latent_vf), self.cost_value_net(latent_vf)
        return self.value_net(latent_vf)

    def forward_with_cost(
        self, obs: th.Tensor, deterministic: bool = False
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """SB3's ``forward`` plus the cost values of the same pass.

        :param obs: observations
        :param deterministic: whether to sample or use deterministic actions
        :return: actions, values, cost values and the log-probability of the actions
        """
        latent_pi, latent_vf = self._latents(obs)
        values, cost_values = self._critics(latent_vf)
        distribution = self._get_action_dist_from_latent(latent_pi)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        actions = actions.reshape((-1, *self.action_space.shape))  # type: ignore[misc]
        return actions, values, cost_values, log_prob

    def act(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor]:
        """The actor half of ``forward``: actions and their log-probability, without the critics.

        The on-policy algorithms call it at every rollout step and evaluate both critics afterwards,
        over the whole rollout in one batched pass (see ``CostOnPolicyMixin.collect_rollouts``).

        :param obs: observations
        :param deterministic: whether to sample or use deterministic actions
        :return: actions and the log-probability of the actions
        """
        features = BasePolicy.extract_features(self, obs, self.pi_features_extractor)
        distribution = self._get_action_dist_from_latent(self.mlp_extractor.forward_actor(features))
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        return actions.reshape((-1, *self.action_space.shape)), log_prob  # type: ignore[misc]

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        actions, values, _, log_prob = self.forward_with_cost(obs, deterministic)
        return actions, values, log_prob

    def evaluate_actions_with_cost(
        self, obs: PyTorchObs, actions: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor | None]:
        """SB3's ``evaluate_actions`` plus the cost values of the same pass.

        :param obs: observations
        :param actions: actions
        :return: values, cost values, log-likelihood of the actions and the entropy
        """
        latent_pi, latent_vf = self._latents(obs)
        values, cost_values = self._critics(latent_vf)
        distribution = self._get_action_dist_from_latent(latent_pi)
        return values, cost_values, distribution.log_prob(actions), distribution.entropy()

    def evaluate_actions(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        values, _, log_prob, entropy = self.evaluate_actions_with_cost(obs, actions)
        return values, log_prob, entropy

    def predict_critics(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """Value and cost-value estimates of one pass.

        :param obs: observations (already a tensor or TensorDict)
        :return: the values and the cost values, each of shape (batch, 1)
        """
        features = BasePolicy.extract_features(self, obs, self.vf_features_extractor)
        return self._critics(self.mlp_extractor.forward_critic(features))

    def predict_values(self, obs: PyTorchObs) -> th.Tensor:
        return self.predict_critics(obs)[0]

    def predict_cost_values(self, obs: PyTorchObs) -> th.Tensor:
        """Cost-value estimates V_c(s).

        :param obs: observations (already a tensor or TensorDict)
        :return: the cost values, shape (batch, 1)
        """
        return self.predict_critics(obs)[1]

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
    "TwinCriticMlp",
]
