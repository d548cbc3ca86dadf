"""Replay buffers that store a per-transition cost next to the reward (SPEC.md section 0).

They are SB3's :class:`~stable_baselines3.common.buffers.ReplayBuffer` and
:class:`~stable_baselines3.common.buffers.DictReplayBuffer` with one more array, ``costs``,
and samples that carry it. Off-policy safe algorithms (SACLag, SMBPO's model buffer) use them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.type_aliases import TensorDict
from stable_baselines3.common.vec_env import VecNormalize

from sb3_safe.common.cost import read_vec_costs


class CostReplayBufferSamples(NamedTuple):
    """SB3's ``ReplayBufferSamples`` plus the ``costs`` of the sampled transitions, shape (batch, 1)."""

    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    costs: th.Tensor
    # Kept (always None here) so that code written for SB3's samples, e.g. SAC's n-step check, still works.
    discounts: th.Tensor | None = None


class CostDictReplayBufferSamples(NamedTuple):
    """SB3's ``DictReplayBufferSamples`` plus the ``costs`` of the sampled transitions, shape (batch, 1)."""

    observations: TensorDict
    actions: th.Tensor
    next_observations: TensorDict
    dones: th.Tensor
    rewards: th.Tensor
    costs: th.Tensor
    discounts: th.Tensor | None = None


def _costs_for_add(
    costs: np.ndarray | None, infos: list[dict[str, Any]], n_envs: int, env_id: str, step: int
) -> np.ndarray:
    """The costs to store for one ``add`` call: the given ones, else ``info["cost"]`` of each sub-env.

    Reading through :func:`read_vec_costs` means a missing or malformed cost raises
    :class:`~sb3_safe.common.cost.CostSignalError` instead of being stored as 0.
    """
    if costs is None:
        costs, _ = read_vec_costs(infos, env_id, step)
    costs = np.asarray(costs, dtype=np.float32).reshape(-1)
    if costs.shape != (n_envs,):
        raise ValueError(f"expected one cost per sub-env ({n_envs}), got an array of shape {costs.shape}")
    if not np.all(np.isfinite(costs)) or np.any(costs < 0):
        raise ValueError(f"costs must be finite and >= 0, got {costs}")
    return costs


class _CostColumn:
    """The ``costs`` array of a replay buffer and its filling, shared by the flat and dict buffers.

    A mixin before SB3's buffer class in the bases: ``env_id`` is its own keyword, every other
    argument goes to SB3's constructor, and ``add`` stores the costs before SB3's ``add`` moves
    ``pos``, so that a bad cost leaves the buffer untouched.
    """

    buffer_size: int
    n_envs: int
    pos: int

    def __init__(self, *args: Any, env_id: str = "env", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env_id = env_id
        self.costs = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)
        self._n_added = 0

    def add(
        self,
        obs: np.ndarray | dict[str, np.ndarray],
        next_obs: np.ndarray | dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
        costs: np.ndarray | None = None,
    ) -> None:
        """Store one transition per sub-env.

        :param costs: the transitions' costs, shape (n_envs,); read from ``infos`` when None
        """
        self.costs[self.pos] = _costs_for_add(costs, infos, self.n_envs, self.env_id, self._n_added)
        super().add(obs, next_obs, action, reward, done, infos)  # type: ignore[misc]
        self._n_added += 1


class CostReplayBuffer(_CostColumn, ReplayBuffer):
    """SB3's replay buffer with a ``costs`` array; samples are :class:`CostReplayBufferSamples`.

    ``add`` keeps SB3's signature (so ``OffPolicyAlgorithm._store_transition`` calls it unchanged)
    and takes the costs from ``infos[i]["cost"]``; callers that already hold the costs (e.g. model
    rollouts) pass them with the keyword ``costs``. Costs are never normalised by ``VecNormalize``.

    :param buffer_size: max number of transitions stored (over all sub-envs)
    :param observation_space: observation space
    :param action_space: action space
    :param device: PyTorch device of the sampled tensors
    :param n_envs: number of parallel environments
    :param optimize_memory_usage: SB3's memory-efficient variant (next obs read from the next slot)
    :param handle_timeout_termination: treat time-limit truncations as non-terminal
    :param env_id: env name used in cost error messages
    """

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> CostReplayBufferSamples:  # type: ignore[override]
        return super().sample(batch_size, env=env)  # type: ignore[return-value]

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> CostReplayBufferSamples:  # type: ignore[override]
        # Same as ReplayBuffer._get_samples; re-written (not wrapped) because the costs must be read
        # at the env indices that the parent draws internally.
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        if self.optimize_memory_usage:
            next_obs = self._normalize_obs(self.observations[(batch_inds + 1) % self.buffer_size, env_indices, :], env)
        else:
            next_obs = self._normalize_obs(self.next_observations[batch_inds, env_indices, :], env)
        data = (
            self._normalize_obs(self.observations[batch_inds, env_indices, :], env),
            self.actions[batch_inds, env_indices, :],
            next_obs,
            # Time-limit truncations are not terminal (SB3's convention).
            (self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices])).reshape(-1, 1),
            self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env),
            self.costs[batch_inds, env_indices].reshape(-1, 1),
        )
        return CostReplayBufferSamples(*tuple(map(self.to_torch, data)))


class CostDictReplayBuffer(_CostColumn, DictReplayBuffer):
    """SB3's dict-observation replay buffer with a ``costs`` array (see :class:`CostReplayBuffer`).

    :param buffer_size: max number of transitions stored (over all sub-envs)
    :param observation_space: a ``spaces.Dict`` observation space
    :param action_space: action space
    :param device: PyTorch device of the sampled tensors
    :param n_envs: number of parallel environments
    :param optimize_memory_usage: not supported by SB3's dict buffer (must be False)
    :param handle_timeout_termination: treat time-limit truncations as non-terminal
    :param env_id: env name used in cost error messages
    """

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> CostDictReplayBufferSamples:  # type: ignore[override]
        return super().sample(batch_size, env=env)  # type: ignore[return-value]

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> CostDictReplayBufferSamples:
        # Re-written from DictReplayBuffer._get_samples for the same reason as CostReplayBuffer's.
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        obs_ = self._normalize_obs({key: obs[batch_inds, env_indices, :] for key, obs in self.observations.items()}, env)
        next_obs_ = self._normalize_obs(
            {key: obs[batch_inds, env_indices, :] for key, obs in self.next_observations.items()}, env
        )
        assert isinstance(obs_, dict) and isinstance(next_obs_, dict)
        dones = self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices])
        return CostDictReplayBufferSamples(
            observations={key: self.to_torch(obs) for key, obs in obs_.items()},
            actions=self.to_torch(self.actions[batch_inds, env_indices]),
            next_observations={key: self.to_torch(obs) for key, obs in next_obs_.items()},
            dones=self.to_torch(dones).reshape(-1, 1),
            rewards=self.to_torch(self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env)),
            costs=self.to_torch(self.costs[batch_inds, env_indices].reshape(-1, 1)),
        )
