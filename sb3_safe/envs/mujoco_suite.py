"""The SMBPO MuJoCo suite (SPEC.md section 1.1): Hopper, HalfCheetah, Ant and Humanoid with a
hard safety predicate.

Reference: Thomas, Luo, Ma, *Safe Reinforcement Learning by Imagining the Near Future*,
NeurIPS 2021. The authors used gym 0.17 "v2" envs; these classes subclass Gymnasium's
v5 envs with keyword arguments that reproduce the same observations and predicates.

Common behaviour (SPEC.md sections 0 and 1.1):

- An unsafe state ends the episode: ``terminated=True``, ``info["violation"]=True``,
  ``info["cost"]=1.0``; every other step has cost 0.0 and violation False. The base
  env's own health termination is switched off (``terminate_when_unhealthy=False``)
  so that only the safety predicate decides.
- Actions are in ``Box(-1, 1)`` and are mapped linearly onto the actuators' control
  range (the identity except for the Humanoid, whose native range is [-0.4, 0.4]).
- ``is_unsafe(obs)`` is the predicate as a pure function of observations, batched over
  leading dimensions, for model-predicted states; the real ``step`` uses the same
  predicate (for the cheetah, the same MuJoCo contact query on the live ``MjData``).
  Non-finite observations always count as unsafe.
- The simulator state is the standard ``self.model`` / ``self.data`` of Gymnasium's
  ``MujocoEnv``, so a shield can save and restore it (``mujoco.mj_copyData`` or
  ``set_state(qpos, qvel)``), and ``copy.deepcopy(env)`` returns an env in the same
  simulator state (Gymnasium's own MuJoCo envs deep-copy into a fresh, unreset env).
- Other keyword arguments of the base env (``render_mode``, ``frame_skip``,
  ``forward_reward_weight``, ``ctrl_cost_weight``, ``reset_noise_scale``, ...) are
  passed through unchanged.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import mujoco
import numpy as np
from gymnasium import spaces, utils
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv

from sb3_safe.envs.classic import observation_batch


class SafeLocomotionMixin:
    """Safety layer shared by the SMBPO MuJoCo envs; put it before a Gymnasium v5 MuJoCo env
    in the bases (``class SafeX(SafeLocomotionMixin, XEnv)``).

    It fixes the base-env keyword arguments that the predicate depends on, rescales the
    action space to [-1, 1], replaces the base termination with the safety predicate,
    adds ``info["cost"]`` / ``info["violation"]`` and deep-copies with the simulator
    state. Subclasses set :attr:`FIXED_KWARGS`, :attr:`PREDICATE_KWARGS` and implement
    :meth:`_unsafe_observations`.

    :param kwargs: keyword arguments of the base env, passed through except the fixed
        ones (which may only be given with their fixed value) and the base env's health
        ranges (rejected: the safety predicate replaces them)
    """

    #: base-env kwargs forced to these values (SPEC.md 1.1 table)
    FIXED_KWARGS: ClassVar[dict[str, Any]] = {}
    #: base-env kwargs that only tune the base health check, which the predicate replaces
    PREDICATE_KWARGS: ClassVar[tuple[str, ...]] = ()

    # Attributes provided by gymnasium's MujocoEnv, declared for type checkers.
    model: mujoco.MjModel
    data: mujoco.MjData
    action_space: spaces.Box
    observation_space: spaces.Box

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**self._base_kwargs(kwargs))  # type: ignore[call-arg]
        # The base __init__ recorded its positional arguments for pickling; record the
        # user's kwargs instead so that pickling rebuilds this class, not the base one.
        utils.EzPickle.__init__(self, **kwargs)
        self._setup_unit_action_space()

    @classmethod
    def _base_kwargs(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        for name in cls.PREDICATE_KWARGS:
            if name in kwargs:
                raise ValueError(
                    f"{cls.__name__}: '{name}' is not accepted: the safety predicate of SPEC.md 1.1 "
                    f"replaces the base env's health check (see {cls.__name__}.is_unsafe)"
                )
        for name, value in cls.FIXED_KWARGS.items():
            if name in kwargs and kwargs[name] != value:
                raise ValueError(
                    f"{cls.__name__}: '{name}' is fixed to {value!r} by SPEC.md 1.1, got {kwargs[name]!r}"
                )
        return {**kwargs, **cls.FIXED_KWARGS}

    def _setup_unit_action_space(self) -> None:
        if not np.all(self.model.actuator_ctrllimited):
            raise ValueError(
                f"{type(self).__name__}: every actuator needs a control range to map actions from [-1, 1]"
            )
        low, high = self.model.actuator_ctrlrange.T.astype(np.float64)
        self._action_center = (high + low) / 2.0
        self._action_half_range = (high - low) / 2.0
        self.action_space = spaces.Box(low=-1.0, high=1.0, shape=low.shape, dtype=np.float32)

    def native_action(self, action: Any) -> np.ndarray:
        """Map an action from [-1, 1] onto the actuators' control range.

        :param action: action of shape ``action_space.shape``
        :return: the control sent to MuJoCo (float64); values outside [-1, 1] are mapped
            linearly and then clamped by MuJoCo, as in the base env
        :raises ValueError: if the action has the wrong shape
        """
        array = np.asarray(action, dtype=np.float64)
        if array.shape != self.action_space.shape:
            raise ValueError(
                f"{type(self).__name__}: action must have shape {self.action_space.shape}, got {array.shape}"
            )
        return self._action_center + self._action_half_range * array

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """The base env's step with the safety predicate as termination and the cost in ``info``.

        :param action: action in [-1, 1], shape ``action_space.shape``
        :return: (observation, reward, terminated, truncated, info); ``terminated`` is the
            violation flag
        """
        # The base termination is always False here (terminate_when_unhealthy=False).
        obs, reward, _base_terminated, truncated, info = super().step(self.native_action(action))  # type: ignore[misc]
        violation = self._step_violation(obs)
        info["cost"] = float(violation)
        info["violation"] = violation
        return obs, float(reward), violation, truncated, info

    def _step_violation(self, obs: np.ndarray) -> bool:
        return bool(self.is_unsafe(obs))

    def is_unsafe(self, obs: Any) -> np.ndarray:
        """The safety predicate as a pure function of observations, batched over leading dims.

        :param obs: shape ``(obs_dim,)`` or ``(..., obs_dim)``
        :return: bool array of shape ``obs.shape[:-1]`` (a 0-d array for one observation)
        :raises ValueError: if the last dimension is not the observation size
        """
        batch = observation_batch(obs, self.observation_space.shape[0], f"{type(self).__name__}.is_unsafe")
        with np.errstate(invalid="ignore"):
            return self._unsafe_observations(batch)

    def _unsafe_observations(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement _unsafe_observations")

    def __deepcopy__(self, memo: dict[int, Any]) -> SafeLocomotionMixin:
        # A fresh env from the same kwargs (new renderer, no open window), then the whole
        # simulator state and the RNG. Model parameters edited in place after construction
        # are not carried over: the copy reloads the model file.
        clone = type(self)(**self._ezpickle_kwargs)  # type: ignore[attr-defined]
        memo[id(self)] = clone
        mujoco.mj_copyData(clone.data, clone.model, self.data)
        clone._np_random = copy.deepcopy(self._np_random, memo)  # type: ignore[attr-defined]
        clone._np_random_seed = self._np_random_seed  # type: ignore[attr-defined]
        return clone


def _finite_rows(batch: np.ndarray) -> np.ndarray:
    return np.isfinite(batch).all(axis=-1)


class SafeHopperEnv(SafeLocomotionMixin, HopperEnv):
    """SMBPO's safe Hopper (Thomas et al., *Safe Reinforcement Learning by Imagining the Near
    Future*, NeurIPS 2021): Gymnasium ``Hopper-v5`` without the alive bonus.

    Observation: the standard 11-d (qpos[1:], qvel clipped to ±10 as in the base env).
    Reward: forward velocity minus control cost (``healthy_reward=0``). Unsafe (episode
    ends, cost 1) unless all of: every value finite, ``|obs[1:]| < 100``, height
    ``obs[0] > 0.7``, ``|angle obs[1]| < 0.2``.

    :param kwargs: keyword arguments of ``HopperEnv`` (``render_mode``, ``frame_skip``,
        ``forward_reward_weight``, ``ctrl_cost_weight``, ``reset_noise_scale``, ...).
        ``healthy_reward`` (0), ``terminate_when_unhealthy`` (False) and
        ``exclude_current_positions_from_observation`` (True) are fixed; the health
        ranges are rejected.
    """

    FIXED_KWARGS: ClassVar[dict[str, Any]] = {
        "healthy_reward": 0.0,
        "terminate_when_unhealthy": False,
        "exclude_current_positions_from_observation": True,
    }
    PREDICATE_KWARGS: ClassVar[tuple[str, ...]] = ("healthy_state_range", "healthy_z_range", "healthy_angle_range")
    MIN_HEIGHT: ClassVar[float] = 0.7
    MAX_ABS_ANGLE: ClassVar[float] = 0.2
    MAX_ABS_STATE: ClassVar[float] = 100.0

    def _unsafe_observations(self, batch: np.ndarray) -> np.ndarray:
        safe = (
            _finite_rows(batch)
            & (np.abs(batch[..., 1:]) < self.MAX_ABS_STATE).all(axis=-1)
            & (batch[..., 0] > self.MIN_HEIGHT)
            & (np.abs(batch[..., 1]) < self.MAX_ABS_ANGLE)
        )
        return ~safe


class SafeHalfCheetahEnv(SafeLocomotionMixin, HalfCheetahEnv):
    """SMBPO's "cheetah-no-flip" (Thomas et al., *Safe Reinforcement Learning by Imagining the
    Near Future*, NeurIPS 2021): Gymnasium ``HalfCheetah-v5`` where the head must not
    touch the floor.

    Observation: the standard 17-d (qpos[1:9], qvel). Reward: the standard one. Unsafe
    (episode ends, cost 1) when MuJoCo reports any contact between the geoms ``head``
    and ``floor``. Contacts are computed by ``mj_kinematics`` + ``mj_collision`` (they
    agree with ``mj_fwdPosition`` and are cheaper): after each real step on the live
    ``MjData`` (this only refreshes positions and contacts for the current state, which
    the next ``mj_step`` recomputes anyway, so the dynamics are unchanged), and in
    :meth:`is_unsafe` on one scratch ``MjData`` rebuilt from each observation with
    qpos[0] = 0 (the x position does not matter against the infinite floor plane),
    qpos[1:] = obs[:8], qvel = obs[8:], the authors' method as SPEC.md 1.1 describes it. A thread pool over
    several ``MjData`` was measured slower than this loop (the per-state work is
    dominated by Python, which holds the GIL), so one scratch ``MjData`` is used.
    Non-finite observations count as unsafe without a MuJoCo query.

    :param kwargs: keyword arguments of ``HalfCheetahEnv`` (``render_mode``,
        ``frame_skip``, ``forward_reward_weight``, ``ctrl_cost_weight``,
        ``reset_noise_scale``, ``xml_file`` with geoms named ``head`` and ``floor``, ...).
        ``exclude_current_positions_from_observation`` is fixed to True.
    """

    FIXED_KWARGS: ClassVar[dict[str, Any]] = {"exclude_current_positions_from_observation": True}
    HEAD_GEOM: ClassVar[str] = "head"
    FLOOR_GEOM: ClassVar[str] = "floor"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        head_id, floor_id = self._geom_id(self.HEAD_GEOM), self._geom_id(self.FLOOR_GEOM)
        self._contact_pairs = ([head_id, floor_id], [floor_id, head_id])
        self._scratch_data: mujoco.MjData | None = None

    def _geom_id(self, name: str) -> int:
        geom_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, name)
        if geom_id < 0:
            raise ValueError(f"{type(self).__name__}: the MuJoCo model has no geom named '{name}'")
        return geom_id

    def head_touches_floor(self, data: mujoco.MjData) -> bool:
        """Recompute positions and contacts of ``data`` and report a head-floor contact.

        :param data: an ``MjData`` of this env's model (the live one or a scratch one);
            its positions and contact list are overwritten for its current ``qpos``
        :return: True when MuJoCo lists a contact between geoms ``head`` and ``floor``
        """
        mujoco.mj_kinematics(self.model, data)
        mujoco.mj_collision(self.model, data)
        if data.ncon == 0:
            return False
        # A Python list search beats NumPy here: there are only a handful of contacts.
        pairs = data.contact.geom.tolist()
        return any(pair in pairs for pair in self._contact_pairs)

    def _step_violation(self, obs: np.ndarray) -> bool:
        return not np.isfinite(obs).all() or self.head_touches_floor(self.data)

    def _unsafe_observations(self, batch: np.ndarray) -> np.ndarray:
        flat = batch.reshape(-1, batch.shape[-1])
        unsafe = ~_finite_rows(flat)
        if self._scratch_data is None:
            self._scratch_data = mujoco.MjData(self.model)
        data = self._scratch_data
        qpos, qvel = data.qpos, data.qvel
        n_obs_qpos = self.model.nq - 1
        for row in np.flatnonzero(~unsafe):
            qpos[0] = 0.0
            qpos[1:] = flat[row, :n_obs_qpos]
            qvel[:] = flat[row, n_obs_qpos:]
            unsafe[row] = self.head_touches_floor(data)
        return unsafe.reshape(batch.shape[:-1])


class SafeAntEnv(SafeLocomotionMixin, AntEnv):
    """SMBPO's safe Ant (Thomas et al., *Safe Reinforcement Learning by Imagining the Near
    Future*, NeurIPS 2021): Gymnasium ``Ant-v5`` without the alive bonus.

    Observation: 27-d (qpos[2:], qvel; ``include_cfrc_ext_in_observation=False``).
    Reward: forward velocity minus control and contact costs (``healthy_reward=0``; the
    contact cost is kept). Unsafe (episode ends, cost 1) when any value is non-finite or
    the torso height ``obs[0]`` is < 0.2 or > 1.0.

    :param kwargs: keyword arguments of ``AntEnv`` (``render_mode``, ``frame_skip``,
        ``ctrl_cost_weight``, ``contact_cost_weight``, ``contact_force_range``,
        ``reset_noise_scale``, ...). ``healthy_reward`` (0), ``terminate_when_unhealthy``
        (False), ``exclude_current_positions_from_observation`` (True) and
        ``include_cfrc_ext_in_observation`` (False) are fixed; ``healthy_z_range`` is
        rejected.
    """

    FIXED_KWARGS: ClassVar[dict[str, Any]] = {
        "healthy_reward": 0.0,
        "terminate_when_unhealthy": False,
        "exclude_current_positions_from_observation": True,
        "include_cfrc_ext_in_observation": False,
    }
    PREDICATE_KWARGS: ClassVar[tuple[str, ...]] = ("healthy_z_range",)
    HEIGHT_RANGE: ClassVar[tuple[float, float]] = (0.2, 1.0)

    def _unsafe_observations(self, batch: np.ndarray) -> np.ndarray:
        low, high = self.HEIGHT_RANGE
        height = batch[..., 0]
        return ~_finite_rows(batch) | (height < low) | (height > high)


class SafeHumanoidEnv(SafeLocomotionMixin, HumanoidEnv):
    """SMBPO's safe Humanoid (Thomas et al., *Safe Reinforcement Learning by Imagining the Near
    Future*, NeurIPS 2021): Gymnasium ``Humanoid-v5`` without the alive bonus.

    Observation: 45-d (qpos[2:], qvel; cinert, cvel, qfrc_actuator and cfrc_ext
    excluded). Actions are in [-1, 1] and scaled to the native [-0.4, 0.4]; the control
    cost is computed by the base env on the native controls, so rewards equal
    ``Humanoid-v5``'s for the scaled action minus its alive bonus. Unsafe (episode ends,
    cost 1) when the torso height ``obs[0]`` is < 1.0 or > 2.0, or (an addition to
    SPEC.md, which cannot be in the safe range) when any value is non-finite.

    :param kwargs: keyword arguments of ``HumanoidEnv`` (``render_mode``, ``frame_skip``,
        ``forward_reward_weight``, ``ctrl_cost_weight``, ``contact_cost_weight``,
        ``reset_noise_scale``, ...). ``healthy_reward`` (0), ``terminate_when_unhealthy``
        (False), ``exclude_current_positions_from_observation`` (True) and the four
        ``include_*_in_observation`` flags (False) are fixed; ``healthy_z_range`` is
        rejected.
    """

    FIXED_KWARGS: ClassVar[dict[str, Any]] = {
        "healthy_reward": 0.0,
        "terminate_when_unhealthy": False,
        "exclude_current_positions_from_observation": True,
        "include_cinert_in_observation": False,
        "include_cvel_in_observation": False,
        "include_qfrc_actuator_in_observation": False,
        "include_cfrc_ext_in_observation": False,
    }
    PREDICATE_KWARGS: ClassVar[tuple[str, ...]] = ("healthy_z_range",)
    HEIGHT_RANGE: ClassVar[tuple[float, float]] = (1.0, 2.0)

    def _unsafe_observations(self, batch: np.ndarray) -> np.ndarray:
        low, high = self.HEIGHT_RANGE
        height = batch[..., 0]
        return ~_finite_rows(batch) | (height < low) | (height > high)
