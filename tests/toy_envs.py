"""Tiny deterministic envs with hand-checkable states, rewards and costs."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class LineEnv(gym.Env):
    """A point on a line: x += action, reward x, episode of ``length`` steps; no cost signal.

    ``discrete=True`` gives Discrete(3) actions meaning -1, 0, +1.
    """

    def __init__(self, discrete: bool = False, length: int = 20, start: float = 0.0) -> None:
        self.discrete = discrete
        self.length = length
        self.start = start
        self.observation_space = gym.spaces.Box(-100.0, 100.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.state = np.array([start], dtype=np.float64)
        self.t = 0

    def move(self, action: Any) -> float:
        return float(int(action) - 1) if self.discrete else float(np.clip(np.asarray(action).item(), -1.0, 1.0))

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.state = np.array([self.start], dtype=np.float64)
        self.t = 0
        return self.state.astype(np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.state = self.state + self.move(action)
        self.t += 1
        return self.state.astype(np.float32), float(self.state[0]), False, self.t >= self.length, {}


def right_of_three(obs: Any, action: Any, next_obs: np.ndarray, info: dict) -> bool:
    """The toy safety rule: being at x > 3 is unsafe."""
    return bool(next_obs[0] > 3.0)


class SixTupleEnv(gym.Env):
    """A Safety-Gymnasium-style env: step returns (obs, reward, cost, terminated, truncated, info)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, costs: list[float], discrete: bool = True) -> None:
        self.costs = costs
        self.action_space = gym.spaces.Discrete(2) if discrete else gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action: Any) -> tuple:
        cost = self.costs[self.t]
        self.t += 1
        return np.full(2, 0.5, np.float32), 1.0, cost, False, self.t >= len(self.costs), {"extra": 7}
