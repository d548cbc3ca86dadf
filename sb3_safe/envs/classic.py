"""The GuSS classic-control safe envs (SPEC.md section 1.2): Safe Pendulum and Safe Acrobot.

Both keep Gymnasium's dynamics unchanged and add the cost protocol of SPEC.md section 0:
``info["cost"]`` is 1.0 on a step that ends in the unsafe region, else 0.0, and
``info["violation"]`` says the same as a bool. Episodes never terminate on a violation
(cost accumulates); the 200-step limit comes from the registration in
:mod:`sb3_safe.envs`. Each env exposes its safety predicate as the pure, batched
function ``is_unsafe(obs)`` that model-based planners evaluate on predicted
observations; the real ``step`` calls the very same function on the observation it
returns, so the two can never disagree.

The simulator state lives in the standard ``self.state`` attribute of the Gymnasium
base env, so ``copy.deepcopy(env)`` or copying ``env.unwrapped.state`` saves and
restores it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.envs.classic_control.acrobot import AcrobotEnv
from gymnasium.envs.classic_control.pendulum import PendulumEnv


def observation_batch(obs: Any, obs_dim: int, owner: str) -> np.ndarray:
    """Convert observations for a batched safety predicate, checking their shape.

    :param obs: one observation of shape ``(obs_dim,)`` or a batch ``(..., obs_dim)``
        (NumPy array, list or CPU tensor)
    :param obs_dim: the env's observation size
    :param owner: name used in error messages, e.g. ``"SafePendulumEnv.is_unsafe"``
    :return: a float64 array of shape ``(..., obs_dim)``
    :raises TypeError: if ``obs`` is not numeric
    :raises ValueError: if its last dimension is not ``obs_dim``
    """
    try:
        batch = np.asarray(obs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{owner}: observations must be a numeric array, got {type(obs).__name__}") from exc
    if batch.ndim == 0 or batch.shape[-1] != obs_dim:
        raise ValueError(
            f"{owner}: expected observations of shape ({obs_dim},) or (..., {obs_dim}), got shape {batch.shape}"
        )
    return batch


class SafePendulumEnv(PendulumEnv):
    """Safe Pendulum of GuSS (Paolo et al., *Guided Safe Shooting: model based reinforcement
    learning with safety constraints*, 2022, appendix 1.1).

    Gymnasium's ``Pendulum-v1`` with its dynamics, action space ``Box(-2, 2, (1,))``,
    observation ``(cos θ, sin θ, θ̇)`` and reward ``-(θ² + 0.1 θ̇² + 0.001 a²)`` unchanged.
    A step costs 1 (``info["violation"] = True``) when the pole angle after the step,
    normalised to [-π, π), lies in the closed interval [20°, 30°] (θ = 0 is upright).
    Episodes never terminate on a violation. A non-finite observation counts as unsafe,
    so a diverging model prediction is never taken for a safe state.

    The real step evaluates the predicate on its own float32 observation (through
    ``atan2(sin θ, cos θ)``) rather than on the float64 state angle, so that the step
    and :meth:`is_unsafe` agree exactly; the two angles differ by about 1e-7 rad, which
    only matters for states within that distance of 20° or 30°.

    :param render_mode: Gymnasium render mode (``"human"``, ``"rgb_array"`` or None)
    :param g: gravitational acceleration, as in ``Pendulum-v1``
    """

    UNSAFE_ANGLE_RANGE_DEG: tuple[float, float] = (20.0, 30.0)

    def __init__(self, render_mode: str | None = None, g: float = 10.0) -> None:
        super().__init__(render_mode=render_mode, g=g)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Pendulum-v1's step plus ``info["cost"]`` and ``info["violation"]``; never terminates.

        :param action: torque, shape (1,)
        :return: (observation, reward, terminated=False, truncated, info)
        """
        obs, reward, _terminated, truncated, info = super().step(action)
        violation = bool(self.is_unsafe(obs))
        info["cost"] = float(violation)
        info["violation"] = violation
        return obs, float(reward), False, truncated, info

    @classmethod
    def angle_is_unsafe(cls, theta: Any) -> np.ndarray:
        """The predicate on raw angles (radians, any real value; θ = 0 is upright).

        :param theta: angle or array of angles
        :return: bool array of the same shape, True where the angle normalised to
            [-π, π) lies in [20°, 30°] or is not finite
        """
        angle = np.asarray(theta, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            in_range = cls._in_unsafe_band(np.mod(angle + np.pi, 2.0 * np.pi) - np.pi)
        return ~np.isfinite(angle) | in_range

    @classmethod
    def _in_unsafe_band(cls, wrapped: np.ndarray) -> np.ndarray:
        """Whether angles already in [-π, π] lie in the unsafe band (False for NaN)."""
        low, high = np.deg2rad(cls.UNSAFE_ANGLE_RANGE_DEG)
        return (wrapped >= low) & (wrapped <= high)

    def is_unsafe(self, obs: Any) -> np.ndarray:
        """Safety predicate on observations ``(cos θ, sin θ, θ̇)``, batched over leading dims.

        :param obs: shape (3,) or (..., 3)
        :return: bool array of shape ``obs.shape[:-1]`` (a 0-d array for one observation)
        """
        batch = observation_batch(obs, 3, f"{type(self).__name__}.is_unsafe")
        # arctan2 is already in [-π, π]: no wrapping (as angle_is_unsafe needs), which matters
        # because planners call this for every candidate batch.
        theta = np.arctan2(batch[..., 1], batch[..., 0])
        return self._in_unsafe_band(theta) | ~np.isfinite(batch).all(axis=-1)


class SafeAcrobotEnv(AcrobotEnv):
    """Safe Acrobot of GuSS (Paolo et al., *Guided Safe Shooting: model based reinforcement
    learning with safety constraints*, 2022, appendix 1.2).

    Gymnasium's ``Acrobot-v1`` physics, its 3 discrete torques (-1, 0, +1) and its 6-d
    observation ``(cos θ1, sin θ1, cos θ2, sin θ2, θ̇1, θ̇2)``. The reward is the height
    of the tip above its hanging position, ``2 - (cos θ1 + cos(θ1 + θ2))``, in [0, 4]
    (computed from the float64 state). A step costs 1 (``info["violation"] = True``)
    when that height exceeds 3, so the constraint works against the reward: the best
    safe policy hovers just below height 3. Acrobot-v1's own goal termination (which is
    exactly the region height > 3) is disabled: episodes never terminate. A non-finite
    observation counts as unsafe.

    :param render_mode: Gymnasium render mode (``"human"``, ``"rgb_array"`` or None)
    """

    UNSAFE_HEIGHT: float = 3.0

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode)

    def step(self, a: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Acrobot-v1's physics step with the tip-height reward and the cost; never terminates.

        :param a: torque index in {0, 1, 2}
        :return: (observation, reward, terminated=False, truncated, info)
        """
        obs, _reward, _goal_reached, truncated, info = super().step(a)
        theta1, theta2 = float(self.state[0]), float(self.state[1])
        reward = 2.0 - (np.cos(theta1) + np.cos(theta1 + theta2))
        violation = bool(self.is_unsafe(obs))
        info["cost"] = float(violation)
        info["violation"] = violation
        info["tip_height"] = reward
        return obs, float(reward), False, truncated, info

    @staticmethod
    def tip_height(obs: Any) -> np.ndarray:
        """Height of the tip above the hanging position, from observations (batched).

        :param obs: shape (6,) or (..., 6)
        :return: float array of shape ``obs.shape[:-1]``, in [0, 4] for valid observations
        """
        batch = observation_batch(obs, 6, "SafeAcrobotEnv.tip_height")
        cos1, sin1, cos2, sin2 = (batch[..., i] for i in range(4))
        cos12 = cos1 * cos2 - sin1 * sin2  # cos(θ1 + θ2) without recovering the angles
        return 2.0 - (cos1 + cos12)

    def is_unsafe(self, obs: Any) -> np.ndarray:
        """Safety predicate on observations: tip height > 3 or non-finite values (batched).

        :param obs: shape (6,) or (..., 6)
        :return: bool array of shape ``obs.shape[:-1]`` (a 0-d array for one observation)
        """
        batch = observation_batch(obs, 6, f"{type(self).__name__}.is_unsafe")
        with np.errstate(invalid="ignore"):
            too_high = self.tip_height(batch) > self.UNSAFE_HEIGHT
        return too_high | ~np.isfinite(batch).all(axis=-1)
