"""The cost protocol (SPEC.md section 0): one place that reads and validates costs.

A safe environment is an ordinary Gymnasium env whose ``step`` info dict carries
``info["cost"]``, a finite float >= 0. Envs with a hard safety predicate also set
``info["violation"]``. Every part of sb3-safe reads costs through this module so
that a missing or malformed cost is reported the same way everywhere and is never
silently read as 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv

COST_KEY = "cost"
VIOLATION_KEY = "violation"


class CostSignalError(ValueError):
    """Raised when an env's ``info["cost"]`` is missing or is not a finite number >= 0."""


def env_name(env: Any) -> str:
    """A human-readable name for an env, a wrapper stack or a VecEnv, for error messages.

    :param env: a Gymnasium env, wrapper, SB3 VecEnv or anything else
    :return: the registered id when there is one, else the class name
    """
    spec = getattr(env, "spec", None)
    if spec is not None and getattr(spec, "id", None):
        return str(spec.id)
    if callable(getattr(env, "get_attr", None)) and callable(getattr(env, "env_method", None)):
        return _vec_env_name(env)
    unwrapped = getattr(env, "unwrapped", env)
    return type(unwrapped).__name__


def _vec_env_name(venv: Any) -> str:
    """The name of an SB3 VecEnv's first sub-env: its registered id, else the class name of its unwrapped env."""
    spec = venv.get_attr("spec", indices=[0])[0]
    if spec is not None:
        return str(spec.id)
    if isinstance(venv, DummyVecEnv):
        return type(venv.get_attr("unwrapped", indices=[0])[0]).__name__
    # Only a string comes back from another process: get_attr("unwrapped") would pickle the whole env back
    # from a SubprocVecEnv worker, which fails for envs holding locks or defined in __main__.
    description = venv.env_method("__str__", indices=[0])[0]
    return _innermost_env_name(str(description))


def _innermost_env_name(description: str) -> str:
    """The unwrapped env's class name in Gymnasium's ``str()`` of a wrapper stack.

    ``"<TimeLimit<CostWrapper<MyEnv instance>>>"`` gives ``"MyEnv"``. An env with its own ``__str__`` breaks
    that format; the result is then only a readable label for error messages.
    """
    names = re.findall(r"<([^<>\s]+)", description)
    return names[-1] if names else description


def _where(env_id: str, step: int | None) -> str:
    return f"env '{env_id}'" + ("" if step is None else f" at step {step}")


def validate_cost(value: Any, env_id: str = "env", step: int | None = None) -> float:
    """Check that ``value`` is a usable cost and return it as a float.

    :param value: the candidate cost (bools count as 0/1)
    :param env_id: env name used in the error message
    :param step: step index used in the error message
    :return: the cost as a Python float
    :raises CostSignalError: if the value is not a finite real number >= 0
    """
    if type(value) is float and 0.0 <= value < math.inf:
        # The common case, checked without numpy: this runs for every sub-env at every step.
        return value
    try:
        cost = float(np.asarray(value, dtype=np.float64).item())
    except (TypeError, ValueError) as exc:
        raise CostSignalError(
            f"{_where(env_id, step)}: info['{COST_KEY}'] must be a single real number, got {value!r}"
        ) from exc
    if math.isnan(cost):
        raise CostSignalError(f"{_where(env_id, step)}: info['{COST_KEY}'] is NaN")
    if math.isinf(cost):
        raise CostSignalError(f"{_where(env_id, step)}: info['{COST_KEY}'] is infinite ({cost})")
    if cost < 0:
        raise CostSignalError(f"{_where(env_id, step)}: info['{COST_KEY}'] is negative ({cost}); costs must be >= 0")
    return cost


def read_cost(info: Mapping[str, Any], env_id: str = "env", step: int | None = None) -> float:
    """Read and validate ``info["cost"]`` of one env step.

    :param info: the info dict returned by ``env.step``
    :param env_id: env name used in the error message
    :param step: step index used in the error message
    :return: the step's cost
    :raises CostSignalError: if the cost is missing, NaN, infinite or negative
    """
    if COST_KEY not in info:
        raise CostSignalError(
            f"{_where(env_id, step)}: info['{COST_KEY}'] is missing. sb3-safe needs a cost signal on every "
            "step: use one of the safe envs (e.g. 'SafePendulum-v0'), wrap the env with "
            "sb3_safe.wrappers.CostWrapper(env, cost_fn), or convert a Safety-Gymnasium env with "
            "sb3_safe.wrappers.SafetyGymnasiumAdapter."
        )
    return validate_cost(info[COST_KEY], env_id, step)


def read_violation(info: Mapping[str, Any], cost: float) -> bool:
    """Whether a step violated the safety constraint.

    Envs with a hard predicate set ``info["violation"]``; for the others any positive cost
    counts as a violation (the convention of Safety Gym's per-step cost indicator).

    :param info: the info dict returned by ``env.step``
    :param cost: the step's validated cost
    :return: the violation flag
    """
    return bool(info.get(VIOLATION_KEY, cost > 0.0))


def read_vec_costs(
    infos: Sequence[Mapping[str, Any]], env_id: str = "env", step: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read costs and violation flags from the infos of one VecEnv step.

    :param infos: one info dict per sub-env
    :param env_id: env name used in the error message
    :param step: step index used in the error message
    :return: costs (float64, shape (n_envs,)) and violations (bool, shape (n_envs,))
    """
    costs = np.array([read_cost(info, env_id, step) for info in infos], dtype=np.float64)
    violations = np.array([read_violation(info, cost) for info, cost in zip(infos, costs)], dtype=bool)
    return costs, violations


def check_gym_env(env: Any, who: str) -> gym.Env:
    """Raise a clear ``TypeError`` unless ``env`` is a Gymnasium env.

    :param env: the object passed in as an env
    :param who: the class or function that received it, for the message
    :return: ``env`` unchanged
    """
    if not isinstance(env, gym.Env):
        hint = ""
        if hasattr(env, "step_async"):
            hint = " It looks like an SB3 VecEnv: wrap each sub-env before vectorising it."
        elif hasattr(env, "step") and hasattr(env, "reset"):
            hint = (
                " It has step/reset but is not a gymnasium.Env (an old gym or Safety-Gymnasium env?): "
                "convert it with sb3_safe.wrappers.SafetyGymnasiumAdapter or shimmy first."
            )
        raise TypeError(f"{who} needs a gymnasium.Env, got {type(env).__module__}.{type(env).__name__}.{hint}")
    return env
