"""Tests of the safe environments (SPEC.md sections 1.1 and 1.2)."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.envs.classic_control.acrobot import AcrobotEnv
from gymnasium.envs.classic_control.pendulum import PendulumEnv
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv

import sb3_safe  # noqa: F401 - registers the env ids
from sb3_safe.common.cost import read_cost, read_violation
from sb3_safe.envs.classic import SafeAcrobotEnv, SafePendulumEnv
from sb3_safe.envs.mujoco_suite import SafeAntEnv, SafeHalfCheetahEnv, SafeHopperEnv, SafeHumanoidEnv

MUJOCO_CLASSES = [SafeHopperEnv, SafeHalfCheetahEnv, SafeAntEnv, SafeHumanoidEnv]
ALL_CLASSES = [*MUJOCO_CLASSES, SafePendulumEnv, SafeAcrobotEnv]
OBS_DIMS = {
    SafeHopperEnv: 11,
    SafeHalfCheetahEnv: 17,
    SafeAntEnv: 27,
    SafeHumanoidEnv: 45,
    SafePendulumEnv: 3,
    SafeAcrobotEnv: 6,
}


def flipped_cheetah_obs() -> np.ndarray:
    """Upside down (rooty = π) with the torso low enough that the head is on the floor."""
    obs = np.zeros(17)
    obs[0], obs[1] = -0.6, np.pi
    return obs


def standing_cheetah_obs() -> np.ndarray:
    """Upright and slightly lowered: both feet touch the floor, the head does not."""
    obs = np.zeros(17)
    obs[0] = -0.15
    return obs


def pendulum_obs(angle_deg: float, thetadot: float = 0.0) -> np.ndarray:
    theta = np.deg2rad(angle_deg)
    return np.array([np.cos(theta), np.sin(theta), thetadot])


def acrobot_obs(theta1: float, theta2: float) -> np.ndarray:
    return np.array([np.cos(theta1), np.sin(theta1), np.cos(theta2), np.sin(theta2), 0.0, 0.0])


def observation_pool(env: Any, n_steps: int = 30) -> np.ndarray:
    """Observations visited by random actions plus hand-made safe and unsafe ones."""
    observations = [env.reset(seed=0)[0]]
    for _ in range(n_steps):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        observations.append(obs)
        if terminated or truncated:
            observations.append(env.reset()[0])
    pool = np.asarray(observations, dtype=np.float64)
    perturbed = pool + np.random.default_rng(0).normal(scale=0.5, size=pool.shape)
    not_finite = np.full_like(pool[:1], np.nan)
    return np.concatenate([pool, perturbed, known_unsafe_obs(type(env))[None], not_finite])


def known_unsafe_obs(env_cls: type) -> np.ndarray:
    if env_cls is SafeHalfCheetahEnv:
        return flipped_cheetah_obs()
    if env_cls is SafePendulumEnv:
        return pendulum_obs(25.0)
    if env_cls is SafeAcrobotEnv:
        return acrobot_obs(np.pi, 0.0)
    return np.zeros(OBS_DIMS[env_cls])  # height 0: the Hopper, Ant and Humanoid have fallen


# --- spaces and registration -------------------------------------------------------------


@pytest.mark.parametrize("env_cls", ALL_CLASSES)
def test_observation_sizes(env_cls: type) -> None:
    env = env_cls()
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (OBS_DIMS[env_cls],)
    assert obs.shape == (OBS_DIMS[env_cls],)


@pytest.mark.parametrize(
    ("env_cls", "n_actions"), [(SafeHopperEnv, 3), (SafeHalfCheetahEnv, 6), (SafeAntEnv, 8), (SafeHumanoidEnv, 17)]
)
def test_mujoco_action_spaces_are_unit_boxes(env_cls: type, n_actions: int) -> None:
    space = env_cls().action_space
    assert isinstance(space, gym.spaces.Box)
    assert space.shape == (n_actions,)
    np.testing.assert_array_equal(space.low, -1.0)
    np.testing.assert_array_equal(space.high, 1.0)


def test_classic_action_spaces() -> None:
    pendulum_space = SafePendulumEnv().action_space
    assert isinstance(pendulum_space, gym.spaces.Box)
    np.testing.assert_array_equal(pendulum_space.low, [-2.0])
    np.testing.assert_array_equal(pendulum_space.high, [2.0])
    assert SafeAcrobotEnv().action_space == gym.spaces.Discrete(3)


@pytest.mark.parametrize(
    ("env_id", "env_cls", "length"),
    [("SafeHopper-v0", SafeHopperEnv, 1000), ("sb3_safe:SafePendulum-v0", SafePendulumEnv, 200)],
)
def test_gym_make(env_id: str, env_cls: type, length: int) -> None:
    env = gym.make(env_id)
    assert isinstance(env.unwrapped, env_cls)
    assert env.spec is not None and env.spec.max_episode_steps == length
    env.reset(seed=0)
    is_unsafe = env.get_wrapper_attr("is_unsafe")
    assert is_unsafe(np.zeros(env.observation_space.shape)).shape == ()


def test_pendulum_truncates_at_200_steps_without_terminating() -> None:
    env = gym.make("SafePendulum-v0")
    env.reset(seed=0)
    for step in range(1, 201):
        _, _, terminated, truncated, _ = env.step(np.array([2.0], dtype=np.float32))
        assert not terminated
        assert truncated == (step == 200)


# --- predicates on constructed states ----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "unsafe"),
    [
        ({}, False),
        ({0: 0.71}, False),
        ({0: 0.7}, True),
        ({0: 0.5}, True),
        ({1: 0.19}, False),
        ({1: -0.19}, False),
        ({1: 0.2}, True),
        ({1: -0.2}, True),
        ({7: 99.0}, False),
        ({7: 100.0}, True),
        ({2: -100.0}, True),
        ({4: np.nan}, True),
        ({9: np.inf}, True),
    ],
)
def test_hopper_predicate(change: dict[int, float], unsafe: bool) -> None:
    obs = np.zeros(11)
    obs[0] = 1.25
    for index, value in change.items():
        obs[index] = value
    assert bool(SafeHopperEnv().is_unsafe(obs)) is unsafe


@pytest.mark.parametrize(
    ("env_cls", "dim", "height", "unsafe"),
    [
        (SafeAntEnv, 27, 0.55, False),
        (SafeAntEnv, 27, 0.2, False),
        (SafeAntEnv, 27, 0.19, True),
        (SafeAntEnv, 27, 1.0, False),
        (SafeAntEnv, 27, 1.01, True),
        (SafeHumanoidEnv, 45, 1.4, False),
        (SafeHumanoidEnv, 45, 1.0, False),
        (SafeHumanoidEnv, 45, 0.99, True),
        (SafeHumanoidEnv, 45, 2.0, False),
        (SafeHumanoidEnv, 45, 2.01, True),
    ],
)
def test_height_predicates(env_cls: type, dim: int, height: float, unsafe: bool) -> None:
    obs = np.zeros(dim)
    obs[0] = height
    assert bool(env_cls().is_unsafe(obs)) is unsafe


@pytest.mark.parametrize("env_cls", ALL_CLASSES)
def test_non_finite_observations_are_unsafe(env_cls: type) -> None:
    env = env_cls()
    safe_obs = env.reset(seed=0)[0].astype(np.float64)
    assert not env.is_unsafe(safe_obs)
    for bad in (np.nan, np.inf, -np.inf):
        obs = safe_obs.copy()
        obs[-1] = bad
        assert env.is_unsafe(obs)


def test_cheetah_predicate_uses_head_floor_contacts_only() -> None:
    env = SafeHalfCheetahEnv()
    assert env.is_unsafe(flipped_cheetah_obs())
    assert not env.is_unsafe(np.zeros(17))
    assert not env.is_unsafe(standing_cheetah_obs())
    # The standing state does have contacts (the feet), so the geom filter is what keeps it safe.
    scratch = env._scratch_data
    assert scratch is not None and scratch.ncon > 0
    head = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_GEOM, "head")
    assert head not in scratch.contact.geom


def test_cheetah_kinematics_collision_agrees_with_fwd_position() -> None:
    env = SafeHalfCheetahEnv()
    rng = np.random.default_rng(1)
    observations = rng.normal(scale=0.3, size=(200, 17))
    observations[:, 0] = rng.uniform(-0.7, 0.1, size=200)
    observations[:, 1] = rng.uniform(-np.pi, np.pi, size=200)
    predicted = env.is_unsafe(observations)
    assert 10 < predicted.sum() < 190
    data = mujoco.MjData(env.model)
    head = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_GEOM, "head")
    floor = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    for obs, unsafe in zip(observations, predicted):
        data.qpos[:] = np.concatenate([[0.0], obs[:8]])
        data.qvel[:] = obs[8:]
        mujoco.mj_fwdPosition(env.model, data)
        pairs = {tuple(sorted(pair)) for pair in data.contact.geom.tolist()}
        assert (tuple(sorted((head, floor))) in pairs) == unsafe


@pytest.mark.parametrize(
    ("angle_deg", "unsafe"),
    [
        (0.0, False),
        (19.99, False),
        (20.01, True),
        (25.0, True),
        (29.99, True),
        (30.01, False),
        (-25.0, False),
        (25.0 + 360.0, True),
        (25.0 - 720.0, True),
        (180.0, False),
    ],
)
def test_pendulum_predicate(angle_deg: float, unsafe: bool) -> None:
    env = SafePendulumEnv()
    assert bool(env.is_unsafe(pendulum_obs(angle_deg, thetadot=3.0))) is unsafe
    assert bool(env.angle_is_unsafe(np.deg2rad(angle_deg))) is unsafe


def test_pendulum_interval_is_closed() -> None:
    assert SafePendulumEnv.angle_is_unsafe(np.deg2rad(20.0))
    assert SafePendulumEnv.angle_is_unsafe(np.deg2rad(30.0))
    assert not SafePendulumEnv.angle_is_unsafe(np.deg2rad(20.0) - 1e-9)
    assert not SafePendulumEnv.angle_is_unsafe(np.deg2rad(30.0) + 1e-9)


@pytest.mark.parametrize(
    ("theta1_deg", "theta2_deg", "unsafe"),
    [
        (0.0, 0.0, False),
        (119.0, 0.0, False),
        (121.0, 0.0, True),
        (180.0, 0.0, True),
        (-121.0, 0.0, True),
        (180.0, 120.0, False),
        (180.0, 70.0, True),
        (90.0, 90.0, False),
    ],
)
def test_acrobot_predicate(theta1_deg: float, theta2_deg: float, unsafe: bool) -> None:
    theta1, theta2 = np.deg2rad(theta1_deg), np.deg2rad(theta2_deg)
    obs = acrobot_obs(theta1, theta2)
    expected_height = 2.0 - (np.cos(theta1) + np.cos(theta1 + theta2))
    assert SafeAcrobotEnv.tip_height(obs) == pytest.approx(expected_height)
    assert bool(SafeAcrobotEnv().is_unsafe(obs)) is unsafe


@pytest.mark.parametrize("env_cls", ALL_CLASSES)
def test_batched_predicate_equals_per_row(env_cls: type) -> None:
    env = env_cls()
    pool = observation_pool(env)
    batched = env.is_unsafe(pool)
    assert batched.shape == (len(pool),) and batched.dtype == np.bool_
    assert batched.tolist() == [bool(env.is_unsafe(row)) for row in pool]
    assert 0 < batched.sum() < len(pool), "the pool should mix safe and unsafe observations"
    n = (len(pool) // 2) * 2
    np.testing.assert_array_equal(env.is_unsafe(pool[:n].reshape(2, n // 2, -1)), batched[:n].reshape(2, n // 2))
    assert env.is_unsafe(pool[0]).shape == ()
    assert env.is_unsafe(pool[:5].astype(np.float32)).tolist() == batched[:5].tolist()


@pytest.mark.parametrize("env_cls", ALL_CLASSES)
def test_predicate_rejects_wrong_shapes(env_cls: type) -> None:
    env = env_cls()
    dim = OBS_DIMS[env_cls]
    with pytest.raises(ValueError, match="shape"):
        env.is_unsafe(np.zeros(dim + 1))
    with pytest.raises(ValueError, match="shape"):
        env.is_unsafe(np.float64(1.0))
    with pytest.raises(TypeError, match="numeric"):
        env.is_unsafe(["a"] * dim)


# --- the real step -----------------------------------------------------------------------


def assert_step_consistent(env: Any, step_result: tuple, terminates_on_violation: bool) -> bool:
    obs, _, terminated, _, info = step_result
    violation = bool(env.is_unsafe(obs))
    assert info["violation"] is violation
    assert info["cost"] == (1.0 if violation else 0.0)
    assert read_cost(info, "test", 0) == info["cost"]
    assert read_violation(info, info["cost"]) is violation
    assert terminated is (violation and terminates_on_violation)
    return violation


@pytest.mark.parametrize("env_cls", ALL_CLASSES)
def test_random_steps_report_cost_consistent_with_predicate(env_cls: type) -> None:
    env = env_cls()
    env.reset(seed=3)
    env.action_space.seed(3)
    for _ in range(40):
        result = env.step(env.action_space.sample())
        assert_step_consistent(env, result, terminates_on_violation=env_cls in MUJOCO_CLASSES)
        if result[2]:
            env.reset()


def set_unsafe_mujoco_state(env: Any) -> None:
    qpos, qvel = env.init_qpos.copy(), np.zeros(env.model.nv)
    if isinstance(env, SafeHopperEnv):
        qpos[2] = 0.5  # torso pitched beyond the 0.2 rad limit
    elif isinstance(env, SafeHalfCheetahEnv):
        # Upside down, head just above the floor (it lands on it), far along x: the floor is
        # an infinite plane, so is_unsafe's qpos[0] = 0 must not change the answer.
        qpos[0], qpos[1], qpos[2] = 50.0, -0.45, np.pi
    else:
        qpos[2] = 2.5  # torso lifted above the Ant's 1.0 and the Humanoid's 2.0
    env.set_state(qpos, qvel)


@pytest.mark.parametrize("env_cls", MUJOCO_CLASSES)
def test_mujoco_unsafe_state_ends_episode(env_cls: type) -> None:
    env = env_cls()
    env.reset(seed=0)
    result = env.step(np.zeros(env.action_space.shape))
    assert not assert_step_consistent(env, result, terminates_on_violation=True)
    set_unsafe_mujoco_state(env)
    result = env.step(np.zeros(env.action_space.shape))
    assert assert_step_consistent(env, result, terminates_on_violation=True)
    assert result[2] is True and result[4]["cost"] == 1.0


def test_cheetah_step_uses_live_contacts() -> None:
    env = SafeHalfCheetahEnv()
    env.reset(seed=0)
    set_unsafe_mujoco_state(env)
    _, _, terminated, _, info = env.step(np.zeros(6))
    pairs = {tuple(sorted(pair)) for pair in env.data.contact.geom.tolist()}
    assert terminated and info["violation"]
    head = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_GEOM, "head")
    floor = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    assert tuple(sorted((head, floor))) in pairs


@pytest.mark.parametrize(
    ("state", "unsafe"),
    [(np.array([np.deg2rad(25.0), 0.0]), True), (np.array([np.deg2rad(-25.0), 0.0]), False)],
)
def test_pendulum_violation_does_not_terminate(state: np.ndarray, unsafe: bool) -> None:
    env = SafePendulumEnv()
    env.reset(seed=0)
    env.state = state
    result = env.step(np.array([0.0], dtype=np.float32))
    assert assert_step_consistent(env, result, terminates_on_violation=False) is unsafe


def test_acrobot_upright_is_unsafe_and_does_not_terminate() -> None:
    env = SafeAcrobotEnv()
    env.reset(seed=0)
    env.state = np.array([np.pi, 0.0, 0.0, 0.0])
    assert AcrobotEnv._terminal(env), "Acrobot-v1 itself would end the episode here"
    obs, reward, terminated, _, info = env.step(1)
    assert info["violation"] and info["cost"] == 1.0 and not terminated
    assert reward == pytest.approx(2.0 - (np.cos(env.state[0]) + np.cos(env.state[0] + env.state[1])))
    assert 3.0 < reward <= 4.0
    assert bool(env.is_unsafe(obs))


# --- rewards -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_cls", "base_cls", "alive_bonus", "action_scale"),
    [
        (SafeHopperEnv, HopperEnv, 1.0, 1.0),
        (SafeAntEnv, lambda: AntEnv(include_cfrc_ext_in_observation=False), 1.0, 1.0),
        (SafeHumanoidEnv, lambda: HumanoidEnv(include_cinert_in_observation=False), 5.0, 0.4),
        (SafeHalfCheetahEnv, HalfCheetahEnv, 0.0, 1.0),
    ],
)
def test_mujoco_reward_is_base_reward_without_alive_bonus(
    env_cls: type, base_cls: Any, alive_bonus: float, action_scale: float
) -> None:
    env, base = env_cls(), base_cls()
    env.reset(seed=5)
    base.reset(seed=5)
    rng = np.random.default_rng(5)
    for _ in range(5):
        action = rng.uniform(-1.0, 1.0, size=env.action_space.shape)
        obs, reward, terminated, _, _ = env.step(action)
        base_obs, base_reward, _, _, _ = base.step(action_scale * action)
        np.testing.assert_allclose(obs, base_obs[: obs.shape[0]], rtol=0, atol=1e-12)
        assert reward == pytest.approx(base_reward - alive_bonus, abs=1e-9)
        assert not terminated


def test_humanoid_actions_are_scaled_to_native_range() -> None:
    env = SafeHumanoidEnv()
    env.reset(seed=0)
    np.testing.assert_allclose(env.native_action(np.ones(17)), 0.4)
    np.testing.assert_allclose(env.native_action(-np.ones(17)), -0.4)
    action = np.linspace(-1.0, 1.0, 17)
    env.step(action)
    np.testing.assert_allclose(env.data.ctrl, 0.4 * action)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.ones(16))


def test_cheetah_trajectory_matches_base_env() -> None:
    """The live contact query after each step must not change the dynamics."""
    env, base = SafeHalfCheetahEnv(), HalfCheetahEnv()
    env.reset(seed=2)
    base.reset(seed=2)
    rng = np.random.default_rng(2)
    for _ in range(30):
        action = rng.uniform(-1.0, 1.0, size=6)
        obs, reward, _, _, _ = env.step(action)
        base_obs, base_reward, _, _, _ = base.step(action)
        np.testing.assert_array_equal(obs, base_obs)
        assert reward == base_reward


def test_pendulum_reward_is_unchanged() -> None:
    env, base = SafePendulumEnv(), PendulumEnv()
    env.reset(seed=0)
    base.reset(seed=0)
    for torque in (-2.0, 0.5, 1.7):
        obs, reward, _, _, _ = env.step(np.array([torque], dtype=np.float32))
        base_obs, base_reward, _, _, _ = base.step(np.array([torque], dtype=np.float32))
        np.testing.assert_array_equal(obs, base_obs)
        assert reward == pytest.approx(base_reward)


def test_acrobot_reward_is_tip_height_with_unchanged_physics() -> None:
    env, base = SafeAcrobotEnv(), AcrobotEnv()
    env.reset(seed=0)
    base.reset(seed=0)
    for action in (2, 2, 0, 1, 2):
        obs, reward, terminated, _, info = env.step(action)
        base_obs, *_ = base.step(action)
        np.testing.assert_array_equal(obs, base_obs)
        assert 0.0 <= reward <= 4.0 and not terminated
        assert reward == pytest.approx(float(SafeAcrobotEnv.tip_height(obs)), abs=1e-6)
        assert info["tip_height"] == reward


# --- construction, copying ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_cls", "kwargs", "message"),
    [
        (SafeHopperEnv, {"healthy_reward": 1.0}, "healthy_reward"),
        (SafeHopperEnv, {"terminate_when_unhealthy": True}, "terminate_when_unhealthy"),
        (SafeHopperEnv, {"healthy_z_range": (0.5, 2.0)}, "healthy_z_range"),
        (SafeAntEnv, {"include_cfrc_ext_in_observation": True}, "include_cfrc_ext_in_observation"),
        (SafeHumanoidEnv, {"include_cvel_in_observation": True}, "include_cvel_in_observation"),
        (SafeHalfCheetahEnv, {"exclude_current_positions_from_observation": False}, "exclude_current_positions"),
    ],
)
def test_fixed_kwargs_are_rejected(env_cls: type, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        env_cls(**kwargs)


def test_base_kwargs_pass_through() -> None:
    env = SafeHopperEnv(render_mode="rgb_array", ctrl_cost_weight=0.5, healthy_reward=0.0)
    assert env.render_mode == "rgb_array"
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.ones(3))
    assert info["reward_ctrl"] == pytest.approx(-1.5)
    made = gym.make("SafeAnt-v0", frame_skip=2)
    assert made.unwrapped.frame_skip == 2
    assert SafePendulumEnv(g=9.81).g == 9.81
    assert SafeAcrobotEnv(render_mode="rgb_array").render_mode == "rgb_array"


@pytest.mark.parametrize("env_cls", ALL_CLASSES)
def test_deepcopy_keeps_simulator_state(env_cls: type) -> None:
    env = env_cls()
    env.reset(seed=4)
    env.action_space.seed(4)
    for _ in range(3):
        env.step(env.action_space.sample())
    clone = copy.deepcopy(env)
    assert clone is not env
    action = env.action_space.sample()
    obs, reward, *_ = env.step(action)
    clone_obs, clone_reward, *_ = clone.step(action)
    np.testing.assert_array_equal(obs, clone_obs)
    assert reward == clone_reward
    np.testing.assert_array_equal(env.reset()[0], clone.reset()[0])


@pytest.mark.parametrize("env_cls", MUJOCO_CLASSES)
def test_mujoco_state_restorable_through_model_and_data(env_cls: type) -> None:
    env = env_cls()
    env.reset(seed=6)
    saved = mujoco.MjData(env.model)
    mujoco.mj_copyData(saved, env.model, env.data)
    action = np.full(env.action_space.shape, 0.3)
    first = env.step(action)
    env.step(-action)
    mujoco.mj_copyData(env.data, env.model, saved)
    again = env.step(action)
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == again[1] and first[4]["cost"] == again[4]["cost"]


@pytest.mark.parametrize("env_cls", MUJOCO_CLASSES)
def test_mujoco_envs_pickle_as_their_own_class(env_cls: type) -> None:
    env = env_cls(reset_noise_scale=0.0)
    restored = pickle.loads(pickle.dumps(env))
    assert type(restored) is env_cls
    assert restored.action_space == env.action_space
