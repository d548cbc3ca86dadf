"""Exact batched copies of the classic envs' physics, as one-step models for planners.

A shooting planner (:mod:`sb3_safe.guss`) normally plans in a learned model. Planning with the
true dynamics instead shows what the planner's search and the safety constraint allow by
themselves, apart from what model learning costs: the GuSS paper's toy experiment does this, and
:meth:`sb3_safe.guss.ShootingAlgorithm.plan_with` accepts these models.

Both follow :class:`~sb3_safe.guss.rollout.DynamicsModel`: ``step(observations, actions)`` on a
batch returns next observations (float32, as the env's), rewards and ``None`` for costs (the
planner takes costs from the env's safety predicate). They are written out here because the
Gymnasium envs step one state at a time (``Pendulum-v1`` and ``Acrobot-v1`` keep a single
``state``) and a planner rolls out 5-100 candidates at once; the formulas are those of Gymnasium
1.x's ``PendulumEnv.step`` and ``AcrobotEnv.step`` / ``_dsdt`` / ``rk4`` (the "book" dynamics,
no torque noise), and ``tests/test_exact_models.py`` checks them against the envs.
"""

from __future__ import annotations

import numpy as np
from gymnasium.envs.classic_control.acrobot import AcrobotEnv

from sb3_safe.envs.classic import SafeAcrobotEnv, observation_batch


class PendulumExactModel:
    """``Pendulum-v1``'s step (and so ``SafePendulum-v0``'s) on a batch of observations.

    The env is GuSS's Safe Pendulum (Paolo et al., *Guided Safe Shooting: model based
    reinforcement learning with safety constraints*, 2022, appendix 1.1); the paper's toy
    experiment plans with the true dynamics, as this model lets any planner do here.

    :param g: gravitational acceleration, as the env's ``g`` (10 for ``SafePendulum-v0``)
    """

    def __init__(self, g: float = 10.0) -> None:
        self.g = float(g)

    def step(self, observations: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
        """One step of every row.

        :param observations: ``(cos θ, sin θ, θ̇)`` rows, shape (n, 3)
        :param actions: torques, shape (n, 1) or (n,); clipped to [-2, 2] (max_torque) as the env does
        :return: next observations (n, 3), rewards (n,), None
        """
        obs = observation_batch(observations, 3, type(self).__name__).astype(np.float64)
        theta, theta_dot = np.arctan2(obs[:, 1], obs[:, 0]), obs[:, 2]
        torque = np.clip(np.asarray(actions, dtype=np.float64).reshape(len(obs)), -2.0, 2.0)
        # arctan2 is already in [-π, π], so Pendulum-v1's angle_normalize is the identity here.
        rewards = -(theta**2 + 0.1 * theta_dot**2 + 0.001 * torque**2)
        length, mass, dt = 1.0, 1.0, 0.05  # Pendulum-v1's (set in its __init__, so not readable here)
        new_theta_dot = theta_dot + (3 * self.g / (2 * length) * np.sin(theta) + 3.0 / (mass * length**2) * torque) * dt
        new_theta_dot = np.clip(new_theta_dot, -8.0, 8.0)  # Pendulum-v1's max_speed
        new_theta = theta + new_theta_dot * dt
        next_obs = np.stack([np.cos(new_theta), np.sin(new_theta), new_theta_dot], axis=1).astype(np.float32)
        return next_obs, rewards.astype(np.float32), None


class AcrobotExactModel:
    """``Acrobot-v1``'s physics on a batch, with ``SafeAcrobot-v0``'s tip-height reward.

    The env is GuSS's Safe Acrobot (Paolo et al., 2022, appendix 1.2). One fourth-order
    Runge-Kutta step of 0.2 s, angles wrapped to [-π, π], velocities clipped to Acrobot-v1's
    bounds; the reward is the height of the tip above the hanging position,
    ``2 - (cos θ1 + cos(θ1 + θ2))``, of the next state.
    """

    def step(self, observations: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
        """One step of every row.

        :param observations: ``(cos θ1, sin θ1, cos θ2, sin θ2, θ̇1, θ̇2)`` rows, shape (n, 6)
        :param actions: torque indices in {0, 1, 2} (torques -1, 0, +1), shape (n,) or (n, 1)
        :return: next observations (n, 6), rewards (n,), None
        """
        obs = observation_batch(observations, 6, type(self).__name__).astype(np.float64)
        state = np.stack(
            [np.arctan2(obs[:, 1], obs[:, 0]), np.arctan2(obs[:, 3], obs[:, 2]), obs[:, 4], obs[:, 5]], axis=1
        )
        indices = np.asarray(actions).reshape(len(obs)).astype(np.int64)
        if np.any((indices < 0) | (indices > 2)):
            raise ValueError(f"{type(self).__name__}: actions must be torque indices in {{0, 1, 2}}, got {indices}")
        torque = np.asarray(AcrobotEnv.AVAIL_TORQUE, dtype=np.float64)[indices]
        new_state = self._runge_kutta_step(state, torque, AcrobotEnv.dt)
        new_state[:, :2] = _wrap_angle(new_state[:, :2])
        new_state[:, 2] = np.clip(new_state[:, 2], -AcrobotEnv.MAX_VEL_1, AcrobotEnv.MAX_VEL_1)
        new_state[:, 3] = np.clip(new_state[:, 3], -AcrobotEnv.MAX_VEL_2, AcrobotEnv.MAX_VEL_2)
        theta1, theta2 = new_state[:, 0], new_state[:, 1]
        next_obs = np.stack(
            [np.cos(theta1), np.sin(theta1), np.cos(theta2), np.sin(theta2), new_state[:, 2], new_state[:, 3]], axis=1
        )
        rewards = SafeAcrobotEnv.tip_height(next_obs)  # from the float64 state, as the env's step
        return next_obs.astype(np.float32), rewards.astype(np.float32), None

    @classmethod
    def _runge_kutta_step(cls, state: np.ndarray, torque: np.ndarray, dt: float) -> np.ndarray:
        k1 = cls._derivatives(state, torque)
        k2 = cls._derivatives(state + dt / 2 * k1, torque)
        k3 = cls._derivatives(state + dt / 2 * k2, torque)
        k4 = cls._derivatives(state + dt * k3, torque)
        return state + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)

    @staticmethod
    def _derivatives(state: np.ndarray, torque: np.ndarray) -> np.ndarray:
        """Acrobot-v1's ``_dsdt`` ("book" dynamics) for a batch of states (θ1, θ2, θ̇1, θ̇2)."""
        m1, m2 = AcrobotEnv.LINK_MASS_1, AcrobotEnv.LINK_MASS_2
        l1, lc1, lc2 = AcrobotEnv.LINK_LENGTH_1, AcrobotEnv.LINK_COM_POS_1, AcrobotEnv.LINK_COM_POS_2
        inertia, g = AcrobotEnv.LINK_MOI, 9.8
        theta1, theta2, dtheta1, dtheta2 = state.T
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * np.cos(theta2)) + 2 * inertia
        d2 = m2 * (lc2**2 + l1 * lc2 * np.cos(theta2)) + inertia
        phi2 = m2 * lc2 * g * np.cos(theta1 + theta2 - np.pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * dtheta2**2 * np.sin(theta2)
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * np.sin(theta2)
            + (m1 * lc1 + m2 * l1) * g * np.cos(theta1 - np.pi / 2)
            + phi2
        )
        ddtheta2 = (torque + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1**2 * np.sin(theta2) - phi2) / (
            m2 * lc2**2 + inertia - d2**2 / d1
        )
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return np.stack([dtheta1, dtheta2, ddtheta1, ddtheta2], axis=1)


def _wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Acrobot-v1's ``wrap(x, -π, π)``: whole turns taken off while above π or added while below -π."""
    turn = 2 * np.pi
    angle = angle - turn * np.ceil(np.maximum(angle - np.pi, 0.0) / turn)
    return angle + turn * np.ceil(np.maximum(-np.pi - angle, 0.0) / turn)


EXACT_MODELS = {"SafePendulum-v0": PendulumExactModel, "SafeAcrobot-v0": AcrobotExactModel}
"""The env ids with an exact model, and its class."""
