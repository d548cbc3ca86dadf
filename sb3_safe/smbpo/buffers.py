"""Replay buffers of SMBPO: the real buffer D (with violation flags) and the model buffer D-hat.

SMBPO (Thomas, Luo and Ma, NeurIPS 2021, appendix A.3) trains SAC on batches that take a fixed
fraction (10%) from the real buffer and the rest from the model buffer. Transitions into an
unsafe state are stored with a violation flag; the penalty is applied when a batch is sampled,
so that a penalty ``C`` recomputed at a later model fit applies to all stored data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from sb3_safe.common.cost import read_vec_costs


_COLUMNS = ("observations", "actions", "next_observations", "rewards", "violations", "terminals")


class ModelReplayBuffer:
    """Ring buffer of model-generated transitions, held as torch tensors on the training device.

    Model rollouts produce thousands of transitions per env step as batched tensors; keeping
    them as tensors avoids a round trip through numpy on every store and every sample.

    :param buffer_size: capacity in transitions (paper: 1e6)
    :param obs_dim: flat observation size
    :param action_dim: flat action size
    :param device: torch device of the storage
    """

    def __init__(self, buffer_size: int, obs_dim: int, action_dim: int, device: th.device | str = "cpu") -> None:
        if int(buffer_size) != buffer_size or buffer_size < 1:
            raise ValueError(f"ModelReplayBuffer: buffer_size must be a positive integer, got {buffer_size!r}")
        self.buffer_size = int(buffer_size)
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.device = th.device(device)
        self._allocate(self.buffer_size)
        self.pos = 0
        self.full = False

    def _allocate(self, capacity: int) -> None:
        self.observations = th.zeros(capacity, self.obs_dim, device=self.device)
        self.actions = th.zeros(capacity, self.action_dim, device=self.device)
        self.next_observations = th.zeros(capacity, self.obs_dim, device=self.device)
        self.rewards = th.zeros(capacity, device=self.device)
        self.violations = th.zeros(capacity, dtype=th.bool, device=self.device)
        self.terminals = th.zeros(capacity, dtype=th.bool, device=self.device)

    def size(self) -> int:
        """Number of stored transitions."""
        return self.buffer_size if self.full else self.pos

    def extend(
        self,
        obs: th.Tensor,
        actions: th.Tensor,
        next_obs: th.Tensor,
        rewards: th.Tensor,
        violations: th.Tensor,
        terminals: th.Tensor | None = None,
    ) -> None:
        """Store a batch of transitions (overwriting the oldest ones when full).

        :param obs: ``(n, obs_dim)``
        :param actions: ``(n, action_dim)``
        :param next_obs: ``(n, obs_dim)``
        :param rewards: ``(n,)`` model rewards (unpenalised)
        :param violations: ``(n,)`` bool, whether ``next_obs`` is unsafe
        :param terminals: ``(n,)`` bool, whether ``next_obs`` ends the episode for another reason
            than a violation (None: no row does)
        """
        n = obs.shape[0]
        if n == 0:
            return
        if terminals is None:
            terminals = th.zeros(n, dtype=th.bool, device=violations.device)
        if n > self.buffer_size:
            obs, actions, next_obs = obs[-self.buffer_size :], actions[-self.buffer_size :], next_obs[-self.buffer_size :]
            rewards, violations = rewards[-self.buffer_size :], violations[-self.buffer_size :]
            terminals = terminals[-self.buffer_size :]
            n = self.buffer_size
        idx = (self.pos + th.arange(n, device=self.device)) % self.buffer_size
        self.observations[idx] = obs.to(self.device, th.float32)
        self.actions[idx] = actions.to(self.device, th.float32)
        self.next_observations[idx] = next_obs.to(self.device, th.float32)
        self.rewards[idx] = rewards.to(self.device, th.float32).reshape(-1)
        self.violations[idx] = violations.to(self.device).reshape(-1).bool()
        self.terminals[idx] = terminals.to(self.device).reshape(-1).bool()
        self.full = self.full or self.pos + n >= self.buffer_size
        self.pos = (self.pos + n) % self.buffer_size

    def sample(self, batch_size: int) -> tuple[th.Tensor, ...]:
        """Uniform sample with replacement.

        :return: observations, actions, next observations, rewards ``(b,)``, violations ``(b,)``,
            terminals ``(b,)``
        """
        if self.size() == 0:
            raise RuntimeError("ModelReplayBuffer.sample: the buffer is empty")
        idx = th.randint(self.size(), (batch_size,), device=self.device)
        return (
            self.observations[idx],
            self.actions[idx],
            self.next_observations[idx],
            self.rewards[idx],
            self.violations[idx],
            self.terminals[idx],
        )

    def to(self, device: th.device | str) -> ModelReplayBuffer:
        """Move the storage to ``device`` (after loading on another machine)."""
        self.device = th.device(device)
        for name in _COLUMNS:
            setattr(self, name, getattr(self, name).to(self.device))
        return self

    def __getstate__(self) -> dict[str, Any]:
        # Pickle only the filled rows: a fresh 1e6 buffer must not make a 100 MB file.
        state = self.__dict__.copy()
        n = self.size()
        for name in _COLUMNS:
            state[name] = getattr(self, name)[:n].cpu()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Buffers saved before the terminal flags existed have none: no stored row was terminal then.
        stored = {name: state.pop(name) for name in _COLUMNS if name in state}
        self.__dict__.update(state)
        # Unpickle on the CPU: the saving machine's device (e.g. cuda) may not exist here; `to` moves it.
        self.device = th.device("cpu")
        self._allocate(self.buffer_size)
        n = stored["rewards"].shape[0]
        for name, values in stored.items():
            getattr(self, name)[:n] = values.to(self.device)


class SMBPOReplayBuffer(ReplayBuffer):
    """SB3 replay buffer of real transitions with violation flags, sampling SMBPO's mixed batches.

    ``sample(batch_size)`` returns ``round(real_ratio * batch_size)`` real transitions and the rest
    from :attr:`model_buffer` (all real while the model buffer is empty). Every transition whose
    violation flag is set gets ``done = 1`` and reward :attr:`unsafe_reward`, i.e. the critic
    target of an absorbing unsafe state (see :class:`sb3_safe.smbpo.SMBPO`).

    The real violation flags are read from ``info["violation"]`` through the cost protocol
    (:func:`sb3_safe.common.cost.read_vec_costs`), so an env without ``info["cost"]`` is an error.

    :param buffer_size: capacity of the real buffer (paper: 1e6)
    :param observation_space: observation space (flat Box)
    :param action_space: action space (Box)
    :param device: torch device
    :param n_envs: number of parallel envs
    :param optimize_memory_usage: not supported (SMBPO needs explicit next observations); must be False
    :param handle_timeout_termination: treat time-limit truncation as non-terminal (SB3's default)
    :param model_buffer_size: capacity of the model buffer (paper: 1e6)
    :param real_ratio: fraction of each batch drawn from real data (paper: 0.1)
    :param env_id: env name used in cost error messages
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        model_buffer_size: int = 1_000_000,
        real_ratio: float = 0.1,
        env_id: str = "env",
    ) -> None:
        if optimize_memory_usage:
            raise ValueError("SMBPOReplayBuffer does not support optimize_memory_usage=True")
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(f"SMBPO needs a flat Box observation space, got {observation_space}")
        if not 0.0 <= real_ratio <= 1.0:
            raise ValueError(f"SMBPOReplayBuffer: real_ratio must be in [0, 1], got {real_ratio}")
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=False,
            handle_timeout_termination=handle_timeout_termination,
        )
        self.violations = np.zeros((self.buffer_size, self.n_envs), dtype=bool)
        self.real_ratio = real_ratio
        self.env_id = env_id
        self.unsafe_reward = 0.0
        self.model_buffer = ModelReplayBuffer(model_buffer_size, self.obs_shape[0], self.action_dim, self.device)

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """SB3's ``add``, plus the violation flags of ``infos``."""
        _, violations = read_vec_costs(infos, self.env_id)
        self.violations[self.pos] = violations
        super().add(obs, next_obs, action, reward, done, infos)

    def real_size(self) -> int:
        """Number of stored real transitions (over all envs)."""
        return self.size() * self.n_envs

    def real_transitions(self) -> dict[str, th.Tensor]:
        """All stored real transitions as flat tensors on the buffer's device (for model fitting).

        :return: dict with ``observations``, ``actions``, ``next_observations``, ``rewards``
            ``(n,)`` and ``violations`` ``(n,)``
        """
        n = self.size()

        def flat(array: np.ndarray) -> th.Tensor:
            return th.as_tensor(array[:n].reshape(n * self.n_envs, *array.shape[2:]), device=self.device)

        return {
            "observations": flat(self.observations).float(),
            "actions": flat(self.actions).float(),
            "next_observations": flat(self.next_observations).float(),
            "rewards": flat(self.rewards).float(),
            "violations": flat(self.violations),
        }

    def reward_range(self) -> tuple[float, float]:
        """Smallest and largest real reward seen so far.

        :raises RuntimeError: when the buffer is empty
        """
        n = self.size()
        if n == 0:
            raise RuntimeError("SMBPOReplayBuffer.reward_range: no real transition stored yet")
        rewards = self.rewards[:n]
        return float(rewards.min()), float(rewards.max())

    def n_real_in_batch(self, batch_size: int) -> int:
        """How many of ``batch_size`` rows are drawn from real data."""
        if self.model_buffer.size() == 0:
            return batch_size
        return int(round(self.real_ratio * batch_size))

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """Mixed real/model batch with the unsafe-state penalty applied (real rows first).

        :param batch_size: number of rows
        :param env: must be None (observation normalisation is not supported by SMBPO)
        """
        if env is not None:
            raise ValueError("SMBPOReplayBuffer: VecNormalize is not supported (the model works on raw observations)")
        n_real = self.n_real_in_batch(batch_size)
        parts: list[tuple[th.Tensor, ...]] = []
        if n_real > 0:
            parts.append(self._sample_real(n_real))
        n_model = batch_size - n_real
        if n_model > 0:
            parts.append(self.model_buffer.sample(n_model))
        obs, actions, next_obs, rewards, violations, terminals = (th.cat(column) for column in zip(*parts))
        rewards = th.where(violations, th.full_like(rewards, self.unsafe_reward), rewards)
        dones = (violations | terminals).float()
        return ReplayBufferSamples(obs, actions, next_obs, dones.reshape(-1, 1), rewards.reshape(-1, 1))

    def _sample_real(self, n: int) -> tuple[th.Tensor, ...]:
        """``n`` real rows in the model buffer's column layout; the terminal flags are SB3's dones
        without time-limit truncations."""
        if self.size() == 0:
            raise RuntimeError("SMBPOReplayBuffer.sample: no real transition stored yet")
        upper = self.buffer_size if self.full else self.pos
        batch_inds = np.random.randint(0, upper, size=n)
        env_inds = np.random.randint(0, self.n_envs, size=n)
        dones = self.dones[batch_inds, env_inds] * (1 - self.timeouts[batch_inds, env_inds])
        return (
            self.to_torch(self.observations[batch_inds, env_inds]).float(),
            self.to_torch(self.actions[batch_inds, env_inds]).float(),
            self.to_torch(self.next_observations[batch_inds, env_inds]).float(),
            self.to_torch(self.rewards[batch_inds, env_inds]).float(),
            th.as_tensor(self.violations[batch_inds, env_inds], device=self.device),
            th.as_tensor(dones > 0, device=self.device),
        )
