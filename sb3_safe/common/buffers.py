"""On-policy rollout buffers that also carry the per-step cost (SPEC.md 2.3).

They subclass SB3's :class:`~stable_baselines3.common.buffers.RolloutBuffer` and
:class:`~stable_baselines3.common.buffers.DictRolloutBuffer` and only add what a cost critic
needs: the step costs, the cost-value estimates, and a second GAE pass (with its own
``cost_gamma`` / ``cost_gae_lambda``) that yields cost returns and cost advantages.
The off-policy ``CostReplayBuffer`` lives in :mod:`sb3_safe.common.replay_buffers`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.type_aliases import PyTorchObs, TensorDict
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecNormalize

_COST_TENSOR_NAMES = ("cost_values", "cost_advantages", "cost_returns")


class CostRolloutBufferSamples(NamedTuple):
    """SB3's ``RolloutBufferSamples`` plus the cost fields (same field order first)."""

    observations: th.Tensor
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    old_cost_values: th.Tensor
    cost_advantages: th.Tensor
    cost_returns: th.Tensor


class CostDictRolloutBufferSamples(NamedTuple):
    """SB3's ``DictRolloutBufferSamples`` plus the cost fields (same field order first)."""

    observations: TensorDict
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    old_cost_values: th.Tensor
    cost_advantages: th.Tensor
    cost_returns: th.Tensor


def compute_gae(
    signals: np.ndarray,
    values: np.ndarray,
    episode_starts: np.ndarray,
    last_values: np.ndarray,
    dones: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> np.ndarray:
    """GAE(lambda) advantages of a (n_steps, n_envs) rollout, the recursion of SB3's ``RolloutBuffer``.

    :param signals: per-step rewards or costs, shape (n_steps, n_envs)
    :param values: value estimates of the visited states, shape (n_steps, n_envs)
    :param episode_starts: 1.0 where a step starts a new episode, shape (n_steps, n_envs)
    :param last_values: value estimates of the states after the last step, shape (n_envs,)
    :param dones: whether the last step ended an episode, shape (n_envs,)
    :param gamma: discount factor
    :param gae_lambda: GAE lambda
    :return: the advantages, shape (n_steps, n_envs)
    """
    n_steps = signals.shape[0]
    advantages = np.zeros_like(signals, dtype=np.float32)
    last_gae_lam = np.zeros_like(last_values, dtype=np.float32)
    for step in reversed(range(n_steps)):
        if step == n_steps - 1:
            next_non_terminal = 1.0 - dones.astype(np.float32)
            next_values = last_values
        else:
            next_non_terminal = 1.0 - episode_starts[step + 1]
            next_values = values[step + 1]
        delta = signals[step] + gamma * next_values * next_non_terminal - values[step]
        last_gae_lam = delta + gamma * gae_lambda * next_non_terminal * last_gae_lam
        advantages[step] = last_gae_lam
    return advantages


class _CostStorageMixin:
    """Adds cost storage and cost GAE to an SB3 rollout buffer (used with ``RolloutBuffer`` subclasses only)."""

    buffer_size: int
    n_envs: int
    pos: int
    full: bool
    generator_ready: bool
    episode_starts: np.ndarray
    device: th.device
    values: np.ndarray
    costs: np.ndarray
    cost_values: np.ndarray
    cost_returns: np.ndarray
    cost_advantages: np.ndarray

    def _init_cost_discount(
        self, gamma: float, gae_lambda: float, cost_gamma: float | None, cost_gae_lambda: float | None
    ) -> None:
        # Must run before the parent's __init__, which calls reset().
        self.cost_gamma = gamma if cost_gamma is None else cost_gamma
        self.cost_gae_lambda = gae_lambda if cost_gae_lambda is None else cost_gae_lambda
        if not 0.0 <= self.cost_gamma <= 1.0:
            raise ValueError(f"cost_gamma must be in [0, 1], got {self.cost_gamma}")
        if not 0.0 <= self.cost_gae_lambda <= 1.0:
            raise ValueError(f"cost_gae_lambda must be in [0, 1], got {self.cost_gae_lambda}")

    def reset(self) -> None:
        shape = (self.buffer_size, self.n_envs)
        self.costs = np.zeros(shape, dtype=np.float32)
        self.cost_values = np.zeros(shape, dtype=np.float32)
        self.cost_returns = np.zeros(shape, dtype=np.float32)
        self.cost_advantages = np.zeros(shape, dtype=np.float32)
        super().reset()  # type: ignore[misc]

    def add(self, *args: Any, cost: np.ndarray, cost_value: th.Tensor, **kwargs: Any) -> None:
        """Store one step: the parent's ``add`` arguments plus the step costs and cost values.

        :param args: the positional arguments of the parent's ``add``
        :param cost: the step costs, shape (n_envs,) (already bootstrapped on time-outs)
        :param cost_value: the cost-value estimates of the observations, shape (n_envs, 1) or (n_envs,)
        :param kwargs: the keyword arguments of the parent's ``add``
        """
        # The parent's add advances self.pos, so write the cost fields first.
        self.costs[self.pos] = np.asarray(cost, dtype=np.float32).reshape(self.n_envs)
        self.cost_values[self.pos] = cost_value.clone().cpu().numpy().flatten()
        super().add(*args, **kwargs)  # type: ignore[misc]

    def fill_critic_values(
        self, predict_critics: Callable[[PyTorchObs], tuple[th.Tensor, th.Tensor]], batch_size: int = 4096
    ) -> None:
        """Overwrite the stored values and cost values with the critics' estimates of the stored observations.

        For algorithms that act with the actor alone during a rollout and evaluate the critics once,
        batched, when it is complete (before the GAE passes).

        :param predict_critics: maps observations to (values, cost values), each of shape (batch, 1)
        :param batch_size: observations per forward pass (bounds the memory of image observations)
        """
        assert not self.generator_ready, "the critics must be evaluated before the buffer is flattened for sampling"
        n_obs = self.buffer_size * self.n_envs
        observations = self.observations  # type: ignore[attr-defined]
        if isinstance(observations, dict):
            flat: Any = {key: obs.reshape(n_obs, *obs.shape[2:]) for key, obs in observations.items()}
        else:
            flat = observations.reshape(n_obs, *observations.shape[2:])
        values, cost_values = [], []
        for start in range(0, n_obs, batch_size):
            chunk = slice(start, start + batch_size)
            batch = {key: obs[chunk] for key, obs in flat.items()} if isinstance(flat, dict) else flat[chunk]
            with th.no_grad():
                value, cost_value = predict_critics(obs_as_tensor(batch, self.device))  # type: ignore[attr-defined]
            values.append(value.cpu().numpy().reshape(-1))
            cost_values.append(cost_value.cpu().numpy().reshape(-1))
        self.values = np.concatenate(values).reshape(self.buffer_size, self.n_envs)
        self.cost_values = np.concatenate(cost_values).reshape(self.buffer_size, self.n_envs)

    def compute_cost_returns_and_advantage(self, last_cost_values: th.Tensor, dones: np.ndarray) -> None:
        """Cost GAE and TD(lambda) cost returns, the cost twin of ``compute_returns_and_advantage``.

        :param last_cost_values: cost-value estimates of the states after the last step (one per env)
        :param dones: whether the last step was terminal (one per env)
        """
        last = last_cost_values.clone().cpu().numpy().flatten()
        self.cost_advantages = compute_gae(
            self.costs, self.cost_values, self.episode_starts, last, dones, self.cost_gamma, self.cost_gae_lambda
        )
        self.cost_returns = self.cost_advantages + self.cost_values

    def get(self, batch_size: int | None = None) -> Generator[Any, None, None]:
        assert self.full, "the rollout buffer must be full before sampling"
        if not self.generator_ready:
            # The parent flattens its own tensors and sets generator_ready on its first pass.
            for name in _COST_TENSOR_NAMES:
                self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])  # type: ignore[attr-defined]
        # One (n, 3) array, so that a minibatch costs one gather and one tensor copy for the three fields;
        # rebuilt at every pass, after any change an algorithm made to the fields between passes.
        self._cost_columns = np.stack([self.__dict__[name].reshape(-1) for name in _COST_TENSOR_NAMES], axis=1)
        yield from super().get(batch_size)  # type: ignore[misc]

    def _cost_tensors(self, batch_inds: np.ndarray) -> tuple[th.Tensor, ...]:
        return self.to_torch(self._cost_columns[batch_inds]).unbind(dim=1)  # type: ignore[attr-defined]


class CostRolloutBuffer(_CostStorageMixin, RolloutBuffer):
    """SB3's ``RolloutBuffer`` plus per-step costs, cost values, cost returns and cost advantages.

    ``add`` takes the parent's arguments plus the keywords ``cost`` and ``cost_value``;
    :meth:`compute_cost_returns_and_advantage` runs GAE on the costs, and the samples are
    :class:`CostRolloutBufferSamples` (the parent's fields, then ``old_cost_values``,
    ``cost_advantages``, ``cost_returns``).

    :param buffer_size: number of steps per env in a rollout
    :param observation_space: observation space
    :param action_space: action space
    :param device: PyTorch device
    :param gae_lambda: GAE lambda of the rewards
    :param gamma: discount factor of the rewards
    :param n_envs: number of parallel envs
    :param cost_gamma: discount factor of the costs (``None``: same as ``gamma``)
    :param cost_gae_lambda: GAE lambda of the costs (``None``: same as ``gae_lambda``)
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
        cost_gamma: float | None = None,
        cost_gae_lambda: float | None = None,
    ) -> None:
        self._init_cost_discount(gamma, gae_lambda, cost_gamma, cost_gae_lambda)
        super().__init__(
            buffer_size, observation_space, action_space, device, gae_lambda=gae_lambda, gamma=gamma, n_envs=n_envs
        )

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> CostRolloutBufferSamples:
        return CostRolloutBufferSamples(*super()._get_samples(batch_inds, env), *self._cost_tensors(batch_inds))


class CostDictRolloutBuffer(_CostStorageMixin, DictRolloutBuffer):
    """SB3's ``DictRolloutBuffer`` (Dict observations) with the cost fields of :class:`CostRolloutBuffer`.

    :param buffer_size: number of steps per env in a rollout
    :param observation_space: the Dict observation space
    :param action_space: action space
    :param device: PyTorch device
    :param gae_lambda: GAE lambda of the rewards
    :param gamma: discount factor of the rewards
    :param n_envs: number of parallel envs
    :param cost_gamma: discount factor of the costs (``None``: same as ``gamma``)
    :param cost_gae_lambda: GAE lambda of the costs (``None``: same as ``gae_lambda``)
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
        cost_gamma: float | None = None,
        cost_gae_lambda: float | None = None,
    ) -> None:
        self._init_cost_discount(gamma, gae_lambda, cost_gamma, cost_gae_lambda)
        super().__init__(
            buffer_size, observation_space, action_space, device, gae_lambda=gae_lambda, gamma=gamma, n_envs=n_envs
        )

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> CostDictRolloutBufferSamples:
        return CostDictRolloutBufferSamples(*super()._get_samples(batch_inds, env), *self._cost_tensors(batch_inds))
