"""Wrappers that put a cost signal into any Gymnasium env or change the MDP with it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, SupportsFloat

import gymnasium as gym

from sb3_safe.common.cost import (
    VIOLATION_KEY,
    check_gym_env,
    env_name,
    read_cost,
    read_violation,
    validate_cost,
)

CostFn = Callable[[Any, Any, Any, dict[str, Any]], SupportsFloat | bool]


class CostWrapper(gym.Wrapper):
    """Add ``info["cost"]`` and ``info["violation"]`` to any Gymnasium env from a user function.

    This is how an ordinary env joins the cost protocol of SPEC.md section 0: the function
    sees the transition ``(obs, action, next_obs, info)`` and returns the step's cost
    (a bool counts as 0 or 1). The returned value is validated like every other cost, so a
    NaN, infinite or negative cost raises :class:`~sb3_safe.common.cost.CostSignalError`.

    Works with any observation and action space (Box, Discrete, Dict, ...): the wrapper never
    looks inside them.

    :param env: the Gymnasium env to wrap
    :param cost_fn: ``cost_fn(obs, action, next_obs, info) -> float | bool``
    :param violation_threshold: a step is a violation when its cost is above this value
    """

    def __init__(self, env: gym.Env, cost_fn: CostFn, violation_threshold: float = 0.0) -> None:
        check_gym_env(env, "CostWrapper")
        if not callable(cost_fn):
            raise TypeError(f"CostWrapper needs a callable cost_fn(obs, action, next_obs, info), got {cost_fn!r}")
        super().__init__(env)
        self.cost_fn = cost_fn
        self.violation_threshold = float(violation_threshold)
        self._last_obs: Any = None
        self._step_index = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._last_obs = obs
        self._step_index = 0
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._last_obs is None:
            raise RuntimeError("CostWrapper.step() was called before reset()")
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        cost = validate_cost(self.cost_fn(self._last_obs, action, next_obs, info), env_name(self.env), self._step_index)
        info["cost"] = cost
        info[VIOLATION_KEY] = cost > self.violation_threshold
        self._last_obs = next_obs
        self._step_index += 1
        return next_obs, reward, terminated, truncated, info


class EarlyTerminationPenalty(gym.Wrapper):
    """End the episode on a violation and pay ``-penalty`` instead of the reward.

    This is the modified MDP of SMBPO (Thomas, Luo and Ma, *Safe Reinforcement Learning by
    Imagining the Near Future*, NeurIPS 2021) with the absorbing unsafe state folded into one
    terminal step. In the paper an unsafe state is absorbing and pays ``-C`` at every step, worth
    ``-C / (1 - gamma)`` in all; here the episode ends and pays ``-penalty`` once. So the bounds on C
    of :mod:`sb3_safe.smbpo.penalty` (for which every optimal policy of the modified MDP is safe)
    carry over with ``penalty = C / (1 - gamma)``, not ``penalty = C``: with C alone a violation
    soon enough can still beat a long safe path of negative rewards. The env must follow the cost
    protocol; the original reward of every step stays in ``info["original_reward"]``.

    :param env: a Gymnasium env that sets ``info["cost"]`` (and optionally ``info["violation"]``)
    :param penalty: >= 0, the reward paid on a violating step is ``-penalty`` (``C / (1 - gamma)`` for
        SMBPO's C, see above)
    """

    def __init__(self, env: gym.Env, penalty: float) -> None:
        check_gym_env(env, "EarlyTerminationPenalty")
        if not float(penalty) >= 0.0:
            raise ValueError(f"EarlyTerminationPenalty needs penalty >= 0, got {penalty}")
        super().__init__(env)
        self.penalty = float(penalty)
        self._step_index = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._step_index = 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        cost = read_cost(info, env_name(self.env), self._step_index)
        self._step_index += 1
        info["original_reward"] = reward
        if read_violation(info, cost):
            return obs, -self.penalty, True, truncated, info
        return obs, reward, terminated, truncated, info
