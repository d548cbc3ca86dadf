"""Tiny deterministic envs with hand-checkable states, rewards and costs, and helpers to read and compare results."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

COST_LIMIT = 2.0  # the per-episode budget used with ThreeChoiceEnv: it binds (see its docstring)


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


class ThreeChoiceEnv(gym.Env):
    """10-step episodes; action 0 pays nothing, action 1 pays 0.7 safely, action 2 pays 1 and costs 1.

    A uniform policy earns 5.7 at an episode cost of 3.3; the unconstrained optimum (always action 2)
    costs 10. Under a budget of 2 the best policy plays action 2 twice and action 1 otherwise (return
    7.6, cost 2): the constraint binds, and the learner must still move from action 0 to action 1.
    ``continuous=True`` gives a Box(-1, 1) action mapped to the three choices by thirds; ``dict_obs``
    wraps the observation in a Dict.
    """

    def __init__(self, continuous: bool = False, dict_obs: bool = False, horizon: int = 10) -> None:
        self.horizon = horizon
        self.continuous = continuous
        self.dict_obs = dict_obs
        box = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.observation_space = gym.spaces.Dict({"time": box}) if dict_obs else box
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32) if continuous else gym.spaces.Discrete(3)
        self.t = 0

    def _obs(self) -> Any:
        obs = np.array([self.t / self.horizon], dtype=np.float32)
        return {"time": obs} if self.dict_obs else obs

    def _choice(self, action: Any) -> int:
        if self.continuous:
            return int(np.digitize(float(np.asarray(action).reshape(-1)[0]), [-1 / 3, 1 / 3]))
        return int(action)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        choice = self._choice(action)
        self.t += 1
        reward = (0.0, 0.7, 1.0)[choice]
        return self._obs(), reward, False, self.t >= self.horizon, {"cost": float(choice == 2)}


def make_env(n_envs: int = 2, seed: int = 0, **env_kwargs: Any) -> VecEnv:
    """A VecEnv of ThreeChoiceEnv."""
    return make_vec_env(lambda: ThreeChoiceEnv(**env_kwargs), n_envs=n_envs, seed=seed)


def mean_episode_return(model: Any) -> float:
    return float(np.mean([info["r"] for info in model.ep_info_buffer]))


def read_csv_keys(folder: Path) -> set[str]:
    with open(folder / "progress.csv", newline="") as handle:
        return set(next(csv.reader(handle)))


def assert_same_weights(module: th.nn.Module, other: th.nn.Module) -> None:
    """The two modules hold the same tensors under the same names (e.g. a model and its saved-and-loaded copy)."""
    state, other_state = module.state_dict(), other.state_dict()
    assert state.keys() == other_state.keys(), f"tensors in only one: {sorted(state.keys() ^ other_state.keys())}"
    for name, tensor in state.items():
        assert th.equal(tensor, other_state[name]), f"{name} differs"
