import math
import threading

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv
from toy_envs import LineEnv

from sb3_safe import SafetyMetricsCallback
from sb3_safe.common.cost import CostSignalError, check_gym_env, env_name, read_cost, read_vec_costs, validate_cost
from sb3_safe.common.safety_stats import SafetyStats
from sb3_safe.wrappers import CostWrapper


def test_read_cost_accepts_numbers_and_bools():
    assert read_cost({"cost": 0.5}) == 0.5
    assert read_cost({"cost": np.float32(2.0)}) == 2.0
    assert read_cost({"cost": True}) == 1.0
    assert read_cost({"cost": np.array([3.0])}) == 3.0


@pytest.mark.parametrize(
    ("info", "fragment"),
    [
        ({}, "missing"),
        ({"cost": math.nan}, "NaN"),
        ({"cost": math.inf}, "infinite"),
        ({"cost": -0.1}, "negative"),
        ({"cost": "high"}, "real number"),
        ({"cost": [1.0, 2.0]}, "real number"),
    ],
)
def test_bad_costs_name_env_and_step(info, fragment):
    with pytest.raises(CostSignalError, match=fragment) as err:
        read_cost(info, "MyEnv-v3", step=17)
    assert "MyEnv-v3" in str(err.value) and "step 17" in str(err.value)


def test_vec_costs_and_violations():
    costs, violations = read_vec_costs([{"cost": 0.0}, {"cost": 2.0}, {"cost": 0.5, "violation": False}])
    np.testing.assert_array_equal(costs, [0.0, 2.0, 0.5])
    np.testing.assert_array_equal(violations, [False, True, False])


def test_validate_cost_rejects_nan_from_user_code():
    with pytest.raises(CostSignalError, match="NaN"):
        validate_cost(float("nan"), "X-v0")


def test_check_gym_env_names_the_problem():
    with pytest.raises(TypeError, match="needs a gymnasium.Env"):
        check_gym_env(object(), "CostWrapper")
    env = gym.make("CartPole-v1")
    assert check_gym_env(env, "x") is env


def test_safety_stats_sum_episode_costs_per_sub_env():
    stats = SafetyStats(n_envs=2)
    stats.update([{"cost": 1.0}, {"cost": 0.5}], np.array([False, False]))
    stats.update([{"cost": 2.0}, {"cost": 0.0}], np.array([False, True]))
    assert stats.finished_costs == [0.5]
    stats.update([{"cost": 0.0}, {"cost": 4.0, "violation": False}], np.array([True, False]))
    assert stats.finished_costs == [3.0]
    assert list(stats.episode_costs) == [0.5, 3.0] and list(stats.episode_violations) == [1, 2]
    assert stats.violations_total == 3 and stats.total_cost == pytest.approx(7.5)
    stats.update([{"cost": 0.0}, {"cost": 0.0}], np.array([False, False]))
    assert stats.finished_costs == [] and stats.current_costs.tolist() == [0.0, 4.0]
    assert list(stats.episode_lengths) == [2, 3] and stats.current_lengths.tolist() == [1, 2]


def test_safety_stats_saved_without_episode_lengths_go_on_counting_them() -> None:
    # A model saved before the lengths were kept (e.g. a benchmark checkpoint) must still resume.
    stats = SafetyStats(n_envs=2, stats_window_size=5)
    stats.update([{"cost": 1.0}, {"cost": 0.0}], np.array([True, False]))
    new_fields = ("current_lengths", "episode_lengths", "finished_lengths")
    old_state = {k: v for k, v in stats.__dict__.items() if k not in new_fields}
    restored = SafetyStats.__new__(SafetyStats)
    restored.__setstate__(old_state)
    restored.update([{"cost": 0.0}, {"cost": 2.0}], np.array([False, True]))
    assert restored.finished_costs == [2.0] and restored.finished_lengths == [1]
    assert list(restored.episode_costs) == [1.0, 2.0] and restored.episode_lengths.maxlen == 5


class LockedEnv(LineEnv):
    """An unregistered env that cannot be pickled (it holds a lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


def make_locked_env() -> gym.Env:
    return CostWrapper(LockedEnv(), lambda obs, action, next_obs, info: 0.0)


class DescribedEnv(LineEnv):
    """An unregistered env with its own ``__str__``, which breaks the format of Gymnasium's wrapper strings."""

    def __str__(self) -> str:
        return "a line (level 2)"


def test_env_name_of_a_subproc_vec_env_does_not_pickle_the_env():
    venv = SubprocVecEnv([make_locked_env], start_method="fork")
    try:
        assert env_name(venv) == "LockedEnv"
    finally:
        venv.close()
    assert env_name(DummyVecEnv([make_locked_env])) == "LockedEnv"
    # In-process sub-envs are named by their class, whatever their string.
    assert env_name(DummyVecEnv([lambda: CostWrapper(DescribedEnv(), lambda *args: 0.0)])) == "DescribedEnv"
    assert env_name(make_vec_env("CartPole-v1", n_envs=1)) == "CartPole-v1"


@pytest.mark.parametrize(
    ("algo", "kwargs"),
    [
        (SAC, dict(learning_starts=5, batch_size=5, policy_kwargs=dict(net_arch=[8]))),
        (PPO, dict(n_steps=5, batch_size=5, n_epochs=1, policy_kwargs=dict(net_arch=[8]))),
    ],
)
def test_callback_keeps_the_episode_that_spans_two_learn_calls(algo, kwargs):
    # Cost 1 per step, 10-step episodes: learn(15) stops in the middle of the second episode, and
    # learn(25, reset_num_timesteps=False) goes on with it, so every episode costs 10. (Off-policy
    # algorithms never update _last_episode_starts: it must not be read as an env reset.)
    env = make_vec_env(lambda: CostWrapper(LineEnv(length=10), lambda obs, action, next_obs, info: 1.0), n_envs=1)
    model = algo("MlpPolicy", env, seed=0, **kwargs)
    callback = SafetyMetricsCallback()
    model.learn(15, callback=callback)
    model.learn(25, callback=callback, reset_num_timesteps=False)
    assert model.num_timesteps == 40 == callback.stats.total_steps
    assert list(callback.stats.episode_costs) == [10.0] * 4
