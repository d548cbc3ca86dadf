"""The Lagrangian benchmark gives each parent the zoo entry of its Lagrangian twin minus the constraint."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from benchmark_modules import load_benchmark
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import sb3_safe  # noqa: F401 - registers the safe envs
from sb3_safe.envs.classic import SafePendulumEnv

bench = load_benchmark("lagrangian")


def settings(algo: str, env_id: str = "SafePendulum-v0") -> dict:
    return bench.read_zoo_settings(bench.zoo_manager(algo, env_id, 0, 0, None), algo)


def test_ppo_gets_ppo_lags_entry_without_the_constraint() -> None:
    constrained, parent = settings("ppo_lag"), settings("ppo")
    added = {"cost_limit", "cost_gamma", "lagrangian_update", "lagrangian_kwargs"}
    assert added <= constrained.keys()
    assert not added & parent.keys()
    assert {key: value for key, value in constrained.items() if key not in added} == parent


def test_sac_loses_the_cost_critic_layout_too() -> None:
    constrained, parent = settings("sac_lag"), settings("sac")
    assert constrained["policy_kwargs"] == {"cost_value_head": "shared"}
    assert "policy_kwargs" not in parent and "cost_limit" not in parent
    assert parent["learning_rate"] == constrained["learning_rate"]


def test_params_override_both_members_and_the_parent_drops_the_lagrangian_ones() -> None:
    args = bench.parse_args(["--envs", "SafePendulum-v0", "--params", "cost_gae_lambda=0.99", "n_steps=512"])
    assert args.overrides == {"cost_gae_lambda": 0.99, "n_steps": 512}
    resolved = bench.resolve_settings(args)["SafePendulum-v0"]
    assert resolved["ppo_lag"]["hyperparams"]["cost_gae_lambda"] == 0.99
    assert "cost_gae_lambda" not in resolved["ppo"]["hyperparams"]
    assert resolved["ppo"]["hyperparams"]["n_steps"] == resolved["ppo_lag"]["hyperparams"]["n_steps"] == 512
    with pytest.raises(SystemExit):
        bench.parse_args(["--params", "cost_gae_lambda"])


def test_cost_value_head_is_dropped_from_policy_kwargs_only() -> None:
    kept = bench.without_cost_value_head({"gamma": 0.9, "policy_kwargs": {"net_arch": [8], "cost_value_head": "shared"}})
    assert kept == {"gamma": 0.9, "policy_kwargs": {"net_arch": [8]}}
    with pytest.raises(ValueError, match="as a YAML mapping"):
        bench.without_cost_value_head({"policy_kwargs": "dict(cost_value_head='shared')"})


def test_stochastic_evaluation_resamples_gsde_noise_and_repeats() -> None:
    # The SafePendulum-v0 entry uses gSDE: a stochastic evaluation must resample its noise matrix, so
    # it differs from the deterministic one, and the seeded sampling makes it repeatable.
    model, manager, _ = bench.build_model(bench.RunSpec("SafePendulum-v0", "ppo_lag", 0, 1, 2, None))
    # one whole rollout: the entry's lin_1e-3 schedule (rl_zoo3's, progress_remaining x 1e-3) turns
    # negative when a rollout runs past total_timesteps
    model.learn(model.n_steps * model.n_envs)
    noise_calls = []
    reset_noise = model.policy.reset_noise
    model.policy.reset_noise = lambda n_envs=1: noise_calls.append(n_envs) or reset_noise(n_envs)
    stochastic = bench.evaluate(model, manager, 0, 2, deterministic=False)
    assert len(noise_calls) == 400 // model.sde_sample_freq
    assert bench.evaluate(model, manager, 0, 2, deterministic=False) == stochastic
    noise_calls.clear()
    assert bench.evaluate(model, manager, 0, 2, deterministic=True) != stochastic
    assert noise_calls == []


def test_unsafe_starts_are_read_from_raw_observations() -> None:
    # Two-step episodes, observations normalised by a VecNormalize: the recorder must judge each
    # episode's first state on the raw observation. The base env's angle is the independent truth.
    venv = DummyVecEnv([lambda: gym.make("SafePendulum-v0", max_episode_steps=2)])
    venv.seed(0)
    recorder = bench.UnsafeStartRecorder(VecNormalize(venv, norm_reward=False))
    base = venv.envs[0].unwrapped
    recorder.reset()
    truth = [bool(SafePendulumEnv.angle_is_unsafe(base.state[0]))]
    for _ in range(2 * 300):
        _, _, dones, _ = recorder.step(np.zeros((1, 1), dtype=np.float32))
        if dones[0]:
            truth.append(bool(SafePendulumEnv.angle_is_unsafe(base.state[0])))
    assert recorder.unsafe_starts == truth
    assert 0 < sum(truth) < 30  # a uniform start angle lands in the 10-degree band about 1 time in 36


def test_cost_from_unsafe_starts_is_part_of_the_mean_cost() -> None:
    model, manager, _ = bench.build_model(bench.RunSpec("SafePendulum-v0", "ppo", 0, 1, 2, None))
    model.learn(1)
    evaluation = bench.evaluate(model, manager, 3, 40, deterministic=True)
    assert 0 < evaluation.unsafe_starts < 40
    assert 0.0 < evaluation.cost_from_unsafe_starts <= evaluation.mean_cost


class CostEveryStep(gym.Wrapper):
    """Cost 1 at every step, so that a Lagrange multiplier with any budget below the episode length rises."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "cost": 1.0}


def test_trace_records_lambda_and_the_vec_normalize_reward_scale() -> None:
    # lambda prices cost in the rewards the algorithm learns from: behind VecNormalize those are the
    # env's rewards divided by the recorded scale, so the trace must hold the scale VecNormalize used.
    from stable_baselines3 import PPO
    from toy_envs import LineEnv

    from sb3_safe.ppo_lag import PPOLag

    env = VecNormalize(DummyVecEnv([lambda: CostEveryStep(LineEnv())]), norm_obs=False, gamma=0.9)
    model = PPOLag("MlpPolicy", env, n_steps=40, batch_size=40, n_epochs=1, gamma=0.9, cost_limit=1.0, seed=0)
    trace = bench.SafetyTraceCallback(record_every=40)
    model.learn(80, callback=trace)
    # recorded at the last step of each rollout: before its update, then after the first one
    assert len(trace.lambdas) == len(trace.reward_scales) == 2
    assert trace.lambdas[0] == pytest.approx(0.001) and trace.lambdas[1] > trace.lambdas[0]
    assert env.normalize_reward(np.array([2.0]))[0] == pytest.approx(2.0 / trace.reward_scales[-1], rel=1e-5)
    # the reward is the position, up to +-20 within an episode: discounted returns spread well above 1
    assert trace.reward_scales[-1] > 1.0

    unnormalised = bench.SafetyTraceCallback(record_every=40)
    PPO("MlpPolicy", DummyVecEnv([lambda: CostEveryStep(LineEnv())]), n_steps=40, batch_size=40, n_epochs=1).learn(
        40, callback=unnormalised
    )
    assert unnormalised.reward_scales == [None] and unnormalised.lambdas == [None]
