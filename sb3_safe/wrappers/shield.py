"""The SafetyShield wrapper: any agent behind it acts through a shield."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from sb3_safe.common.cost import check_gym_env, env_name
from sb3_safe.shields.base import Shield


class ShieldError(RuntimeError):
    """Raised when a shield returns an action the env cannot execute."""


class SafetyShield(gym.Wrapper):
    """Wrap any Gymnasium env so that every action passes through a :class:`~sb3_safe.shields.Shield`.

    Before each step the shield sees the current observation and the proposed action; when it
    intervenes, its safe action is executed instead. Every step's info carries
    ``info["shield"] = {"intervened": bool, "proposed_action": ..., "risk": float}`` and the
    executed transition is passed to ``shield.observe`` so that learned shields can train
    online. This is the shielding scheme of Alshiekh et al. (AAAI 2018) in the
    probabilistic, model-based form of AMBS (Goodall and Belardinelli, ECAI 2023).

    The agent behind the wrapper learns from the transitions that were executed; SB3's buffers
    store the agent's own (proposed) action, as in AMBS.

    :param env: the env to protect
    :param shield: the shield that vets actions
    """

    def __init__(self, env: gym.Env, shield: Shield) -> None:
        check_gym_env(env, "SafetyShield")
        if not isinstance(shield, Shield):
            raise TypeError(
                f"SafetyShield needs an sb3_safe.shields.Shield, got {type(shield).__name__}; "
                "wrap a plain rule with sb3_safe.shields.FunctionShield(rule)"
            )
        super().__init__(env)
        shield.bind(env)
        self.shield = shield
        self.interventions = 0
        self.steps = 0
        self._last_obs: Any = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._last_obs = obs
        self.shield.reset(obs, info)
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._last_obs is None:
            raise RuntimeError("SafetyShield.step() was called before reset()")
        decision = self.shield.decide(self._last_obs, action)
        executed = self._checked_action(decision.action) if decision.intervene else action
        obs, reward, terminated, truncated, info = self.env.step(executed)
        self.steps += 1
        self.interventions += int(decision.intervene)
        info["shield"] = {"intervened": decision.intervene, "proposed_action": action, "risk": float(decision.risk)}
        self.shield.observe(self._last_obs, executed, float(reward), obs, terminated, truncated, info)
        self._last_obs = obs
        return obs, reward, terminated, truncated, info

    @property
    def intervention_rate(self) -> float:
        """Fraction of steps on which the shield replaced the agent's action."""
        return self.interventions / max(self.steps, 1)

    def _checked_action(self, action: Any) -> Any:
        space = self.action_space
        if isinstance(space, gym.spaces.Box) and action is not None:
            action = np.asarray(action, dtype=space.dtype)
        if action is None or not space.contains(action):
            raise ShieldError(
                f"{type(self.shield).__name__} returned {action!r}, which is not in the action space {space} "
                f"of env '{env_name(self.env)}'"
            )
        return action
