"""The SB3 policy of the shooting planners: a learned dynamics model plus a planner that acts with it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule

from sb3_safe.common.mdn import MDNDynamicsModel
from sb3_safe.guss.compiled import PackedMDN, can_compile, pack, rollout_policies, rollout_sequences
from sb3_safe.guss.planners import ShootingPlanner
from sb3_safe.guss.rollout import BatchedMLPPolicies


class PlanningPolicy(BasePolicy):
    """Model-predictive-control policy: plans with a D(AR)MDN model and returns the first action.

    Reference: Paolo et al., "Guided Safe Shooting" (2022), and Kégl et al. (ICLR 2021) for the
    model. The policy owns the dynamics model (:class:`~sb3_safe.common.mdn.MDNDynamicsModel`:
    weights and normalisers are its state dict, so SB3's save/load carry them) and its Adam
    optimizer; the planner (RS, S-RS, CEM, RCEM or GuSS) is attached by the algorithm with
    :meth:`set_planner`, since it also needs the env's safety predicate. Planning is done for one
    observation at a time (the algorithms support ``n_envs=1``), in NumPy through
    :meth:`~sb3_safe.common.mdn.MDNDynamicsModel.numpy_step` (see :mod:`sb3_safe.guss.rollout`
    for why).

    :param observation_space: flat Box observation space
    :param action_space: Box (bounded) or Discrete action space
    :param lr_schedule: learning-rate schedule of the model optimizer
    :param net_arch: hidden sizes of each per-dimension MLP of the mixture network (GuSS: [50, 50])
    :param n_components: mixture components per output dimension
    :param autoregressive: D(AR)MDN (True, the classic envs) or DMDN (False, the car)
    :param predict_cost: give the model a learned cost head
    :param optimizer_class: optimizer of the model
    :param optimizer_kwargs: extra optimizer arguments
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: Sequence[int] = (50, 50),
        n_components: int = 5,
        autoregressive: bool = True,
        predict_cost: bool = False,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            normalize_images=False,
        )
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(f"PlanningPolicy needs a flat Box observation space, got {observation_space}")
        if isinstance(action_space, spaces.Discrete):
            action_dim, discrete = int(action_space.n), True
        elif isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
            action_dim, discrete = int(action_space.shape[0]), False
        else:
            raise ValueError(f"PlanningPolicy needs a Discrete or flat Box action space, got {action_space}")
        self.net_arch = [int(size) for size in net_arch]
        self.n_components = int(n_components)
        self.autoregressive = bool(autoregressive)
        self.predict_cost = bool(predict_cost)
        self.dynamics = MDNDynamicsModel(
            int(observation_space.shape[0]),
            action_dim,
            discrete_actions=discrete,
            predict_cost=self.predict_cost,
            n_components=self.n_components,
            net_arch=self.net_arch,
            autoregressive=self.autoregressive,
        )
        self.optimizer = self.optimizer_class(self.dynamics.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)
        self.planner: ShootingPlanner | None = None

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            net_arch=self.net_arch,
            n_components=self.n_components,
            autoregressive=self.autoregressive,
            predict_cost=self.predict_cost,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
        )
        return data

    def set_planner(self, planner: ShootingPlanner) -> None:
        """Attach the planner used by :meth:`predict`."""
        self.planner = planner

    def reset_planner(self) -> None:
        """Forget the planner's warm-start state (at an episode start)."""
        if self.planner is not None:
            self.planner.reset()

    def forward(self, obs: th.Tensor, deterministic: bool = True) -> th.Tensor:
        return self._predict(obs, deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        if self.planner is None:
            raise RuntimeError("PlanningPolicy has no planner: it is attached by its algorithm (GuSS, RS, ...)")
        assert isinstance(observation, th.Tensor)
        if observation.shape[0] != 1:
            raise ValueError(
                "the shooting planners plan for one observation at a time (n_envs=1), "
                f"got a batch of {observation.shape[0]}"
            )
        action = np.asarray(self.planner.plan(observation[0].detach().cpu().numpy().astype(np.float32)))
        return th.as_tensor(action.reshape(1, *action.shape), device=observation.device)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Plan from ``observation`` and return the first action (SB3's ``predict``).

        ``episode_start`` (as passed by SB3's evaluation helpers and the zoo) resets the planner's
        warm start. Planning is deterministic given the planner's random generator.

        :param observation: one observation, or a batch of one
        :param state: unused (no recurrent state)
        :param episode_start: whether the observation starts an episode
        :param deterministic: unused: the model is always used in its deterministic mode
        :return: the action and the unchanged state
        """
        if episode_start is not None and bool(np.asarray(episode_start).reshape(-1)[0]):
            self.reset_planner()
        return super().predict(observation, state, episode_start, deterministic)


class NumpyDynamics:
    """Adapter giving an :class:`~sb3_safe.common.mdn.MDNDynamicsModel` the planners' NumPy interface.

    ``step`` is one batched model step; when the model's architecture allows it
    (:func:`~sb3_safe.guss.compiled.can_compile`) whole rollouts also run as compiled kernels
    (:mod:`sb3_safe.guss.compiled`), which :class:`~sb3_safe.guss.rollout.RolloutEvaluator` prefers.

    :param model: the learned model (its NumPy copy is refreshed automatically after fits/loads)
    :param compiled: use the compiled rollouts where the model allows them
    """

    def __init__(self, model: MDNDynamicsModel, compiled: bool = True) -> None:
        self.model = model
        self.supports_rollouts = bool(compiled) and can_compile(model)
        self._packed: PackedMDN | None = None
        self._packed_from: object = None

    def step(self, observations: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One deterministic model step for a batch (see ``MDNDynamicsModel.numpy_step``)."""
        return self.model.numpy_step(observations, actions)

    def _packed_model(self) -> PackedMDN:
        predictor, _ = self.model.numpy_snapshot()
        if self._packed is None or predictor is not self._packed_from:
            self._packed, self._packed_from = pack(self.model), predictor
        return self._packed

    def rollout_sequences(
        self, start: np.ndarray, action_sequences: np.ndarray, horizon: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Whole rollouts of open-loop sequences: predicted observations (n, H + 1, obs_dim), summed
        rewards (n,) and summed model costs (n,) or None without a cost head."""
        actions = action_sequences[:, :horizon]
        if self.model.discrete_actions:
            actions = np.eye(self.model.action_dim, dtype=np.float32)[np.asarray(actions, dtype=np.int64)]
        trajectory, returns, costs = rollout_sequences(self._packed_model(), start, actions)
        return trajectory, returns, costs if self.model.predict_cost else None

    def rollout_policies(
        self, start: np.ndarray, policies: BatchedMLPPolicies, params: np.ndarray, horizon: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """Whole rollouts of closed-loop policies: as :meth:`rollout_sequences`, plus the first actions."""
        trajectory, returns, costs, first_actions = rollout_policies(
            self._packed_model(),
            start,
            params,
            np.asarray(policies.sizes),
            policies.obs_scale,
            policies.low,
            policies.high,
            horizon,
        )
        return trajectory, returns, costs if self.model.predict_cost else None, first_actions


MlpPolicy = PlanningPolicy
