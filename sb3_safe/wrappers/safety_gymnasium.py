"""Adapter for Safety-Gymnasium's native 6-tuple ``step`` API."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym

from sb3_safe.common.cost import VIOLATION_KEY, check_gym_env, env_name, validate_cost


class SafetyGymnasiumAdapter(gym.Wrapper):
    """Turn a Safety-Gymnasium-style env into the cost protocol of SPEC.md section 0.

    Safety-Gymnasium's native envs return ``(obs, reward, cost, terminated, truncated, info)``
    from ``step``. This wrapper returns Gymnasium's 5-tuple and moves the cost into
    ``info["cost"]`` (validated) and ``info["violation"]`` (``cost > 0`` unless the env set it),
    so algorithms never special-case the 6-tuple. (Safety-Gymnasium pins gymnasium 0.28 and
    cannot be installed beside SB3 >= 2.4, see SPEC.md 1.3; the adapter is for users on such a
    stack, or for any env written against that API.)

    :param env: an env whose ``step`` returns a 6-tuple with the cost third
    """

    def __init__(self, env: gym.Env) -> None:
        check_gym_env(env, "SafetyGymnasiumAdapter")
        super().__init__(env)
        self._step_index = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._step_index = 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        result = self.env.step(action)
        if len(result) != 6:
            raise ValueError(
                f"SafetyGymnasiumAdapter expects env '{env_name(self.env)}' to return the 6-tuple "
                f"(obs, reward, cost, terminated, truncated, info) from step(), got {len(result)} values. "
                "A Gymnasium env with info['cost'] already follows the cost protocol and needs no adapter."
            )
        obs, reward, cost, terminated, truncated, info = result
        info = dict(info)
        info["cost"] = validate_cost(cost, env_name(self.env), self._step_index)
        info.setdefault(VIOLATION_KEY, info["cost"] > 0.0)
        self._step_index += 1
        return obs, reward, terminated, truncated, info
