import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from toy_envs import LineEnv, read_csv_keys, right_of_three

from sb3_safe import SafetyMetricsCallback, evaluate_safe_policy
from sb3_safe.common.cost import CostSignalError
from sb3_safe.shields import FunctionShield
from sb3_safe.wrappers import CostWrapper, SafetyShield


@pytest.mark.parametrize(
    ("algo", "kwargs", "steps"),
    [
        (PPO, dict(n_steps=128, batch_size=64, n_epochs=1), 512),
        (SAC, dict(learning_starts=64, batch_size=32, policy_kwargs=dict(net_arch=[16])), 400),
    ],
)
def test_callback_logs_safety_keys(tmp_path, algo, kwargs, steps):
    env = make_vec_env("SafePendulum-v0", n_envs=2, seed=0)
    model = algo("MlpPolicy", env, seed=0, **kwargs)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    callback = SafetyMetricsCallback()
    model.learn(steps, callback=callback, log_interval=1)
    keys = read_csv_keys(tmp_path)
    for key in ("rollout/ep_cost_mean", "safety/violations_total", "safety/cost_rate"):
        assert key in keys
    stats = callback.stats
    assert stats.total_steps == model.num_timesteps
    assert stats.violations_total == pytest.approx(stats.total_cost)  # pendulum: cost 1 per violating step
    assert len(stats.episode_costs) == steps // 200


def test_callback_goes_on_counting_when_training_goes_on():
    # Cost 1 at every step, 20-step episodes; learn(30) twice cuts the second episode in two.
    env = make_vec_env(lambda: CostWrapper(LineEnv(length=20), lambda obs, a, next_obs, info: 1.0), n_envs=1)
    model = PPO("MlpPolicy", env, n_steps=10, batch_size=10, n_epochs=1, seed=0)
    callback = SafetyMetricsCallback()
    model.learn(30, callback=callback)
    model.learn(30, callback=callback, reset_num_timesteps=False)
    assert callback.stats.total_steps == 60 == model.num_timesteps
    assert list(callback.stats.episode_costs) == [20.0, 20.0, 20.0]  # the episode spanning the calls is whole
    model.learn(30, callback=callback)  # a new run: fresh statistics
    assert callback.stats.total_steps == 30 and list(callback.stats.episode_costs) == [20.0]


def test_callback_counts_known_costs_and_shield_interventions(tmp_path):
    # Always moving right on the line: x = 1..20, cost on x > 3, the shield blocks x > 5.
    def block_beyond_five(obs, action):
        return np.zeros(1, np.float32) if obs[0] >= 5 else None

    env = make_vec_env(
        lambda: SafetyShield(CostWrapper(LineEnv(length=20), right_of_three), FunctionShield(block_beyond_five)), n_envs=1
    )

    class AlwaysRight(PPO):
        def predict(self, *args, **kwargs):
            return np.ones((1, 1), np.float32), None

    def always_right(action: np.ndarray) -> np.ndarray:
        return np.ones_like(action)

    # The agent's actions are replaced by +1 before the shield sees them, so its decisions are known.
    pushed_right = make_vec_env(
        lambda: gym.wrappers.TransformAction(
            SafetyShield(CostWrapper(LineEnv(length=20), right_of_three), FunctionShield(block_beyond_five)),
            always_right,
            None,
        ),
        n_envs=1,
    )
    model = PPO("MlpPolicy", pushed_right, n_steps=40, batch_size=40, n_epochs=1, seed=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    callback = SafetyMetricsCallback()
    model.learn(40, callback=callback)
    assert callback.stats.total_steps == 40
    assert "safety/shield_interventions" in read_csv_keys(tmp_path)
    # x = 1, 2, 3, 4, 5, then the shield blocks the 15 proposals from x = 5 in each of the two episodes.
    assert callback.stats.shield_interventions == 30 and callback.stats.shielded_steps == 40
    assert list(callback.stats.episode_costs) == [17.0, 17.0]
    returns, lengths, costs, violations = evaluate_safe_policy(AlwaysRight("MlpPolicy", env), env, 2, return_episode_rewards=True)
    # Proposed +1 each step; the shield stops the walk at x = 5: x = 1, 2, 3, 4, 5, 5, ..., 5.
    assert lengths == [20, 20]
    assert returns == [1 + 2 + 3 + 4 + 5 * 16] * 2
    assert costs == [17.0, 17.0] and violations == [17, 17]


def test_evaluate_safe_policy_statistics_and_vec_envs():
    class Constant:
        def __init__(self, action):
            self.action = action

        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.tile(self.action, (len(obs), 1)), None

    env = CostWrapper(LineEnv(length=6), right_of_three)
    mean_return, std_return, mean_cost, std_cost = evaluate_safe_policy(Constant(np.ones(1, np.float32)), env, 3)
    assert (mean_return, std_return, mean_cost, std_cost) == (21.0, 0.0, 3.0, 0.0)
    vec_env = make_vec_env(lambda: CostWrapper(LineEnv(length=6), right_of_three), n_envs=2)
    returns, lengths, costs, violations = evaluate_safe_policy(
        Constant(-np.ones(1, np.float32)), vec_env, 5, return_episode_rewards=True
    )
    assert len(returns) == 5 and returns[0] == -21.0 and costs == [0.0] * 5 and lengths == [6] * 5


def test_evaluate_and_callback_need_a_cost_signal():
    model = PPO("MlpPolicy", gym.make("Pendulum-v1"), n_steps=64, batch_size=64)
    with pytest.raises(CostSignalError, match="Pendulum-v1.*missing"):
        evaluate_safe_policy(model, gym.make("Pendulum-v1"), 1)
    with pytest.raises(CostSignalError, match="Pendulum-v1.*missing"):
        model.learn(64, callback=SafetyMetricsCallback())
    with pytest.raises(TypeError, match="gymnasium.Env"):
        evaluate_safe_policy(model, object(), 1)
