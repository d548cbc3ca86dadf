"""PPOLag: learning under a cost budget, the cost buffer, save/load, errors, spaces and logger keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.policies import ActorCriticPolicy
from toy_envs import (
    COST_LIMIT,
    LineEnv,
    ThreeChoiceEnv,
    assert_same_weights,
    make_env,
    mean_episode_return,
    read_csv_keys,
)

from sb3_safe.common.buffers import CostDictRolloutBuffer, CostRolloutBuffer
from sb3_safe.common.cost import CostSignalError
from sb3_safe.common.on_policy_lagrangian import lagrangian_clipped_loss
from sb3_safe.ppo_lag import PPOLag

def small_ppo_lag(env: Any, **kwargs: Any) -> PPOLag:
    settings: dict[str, Any] = dict(
        n_steps=128, batch_size=64, n_epochs=4, learning_rate=3e-3, cost_limit=COST_LIMIT, seed=0, device="cpu"
    )
    settings.update(kwargs)
    return PPOLag("MlpPolicy", env, **settings)


def test_learns_to_respect_the_budget_and_improves_return() -> None:
    model = small_ppo_lag(make_env(), stats_window_size=40, lagrangian_kwargs=dict(lr=0.1))
    model.learn(512)
    # The near-uniform initial policy costs about 3.3 > 2 per episode, so lambda must have risen.
    assert model.safety_stats.ep_cost_mean > COST_LIMIT
    assert model.lagrange_value > 0.1
    model.learn(4096, reset_num_timesteps=False)
    assert model.safety_stats.ep_cost_mean <= COST_LIMIT + 0.5
    assert mean_episode_return(model) > 6.3


class LambdaAfterEachRollout(BaseCallback):
    """Records lambda at each rollout start, i.e. after the previous rollout's update."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[float] = []

    def _on_rollout_start(self) -> None:
        self.values.append(self.model.lagrange_value)

    def _on_step(self) -> bool:
        return True


def test_multiplier_moves_only_after_rollouts_in_which_an_episode_ended() -> None:
    # 200-step episodes and 128-step rollouts: episodes end in rollouts 2, 4 and 5 (at steps 200,
    # 400 and 600), not in rollouts 1, 3 and 6. Rollout 3's J_c estimate is the stale mean of the
    # episode that ended in rollout 2; updating from it again would wind lambda up from old evidence.
    env = make_vec_env(lambda: ThreeChoiceEnv(horizon=200), n_envs=1, seed=0)
    model = small_ppo_lag(env, learning_rate=0.0, lagrangian_kwargs=dict(lr=0.1))
    recorder = LambdaAfterEachRollout()
    model.learn(6 * 128, callback=recorder)
    after_rollout = recorder.values[1:] + [model.lagrange_value]
    moved = [after > before for before, after in zip(recorder.values, after_rollout)]
    assert moved == [False, True, False, True, True, False]
    assert model.ep_cost_estimate is not None and model.ep_cost_estimate > COST_LIMIT


def test_cost_gae_matches_reward_gae_and_dict_buffer() -> None:
    obs_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)
    reference = RolloutBuffer(6, obs_space, action_space, gamma=0.9, gae_lambda=0.8, n_envs=2)
    buffer = CostRolloutBuffer(6, obs_space, action_space, gamma=0.9, gae_lambda=0.8, n_envs=2)
    rng = np.random.default_rng(0)
    for step in range(6):
        signal = rng.random(2).astype(np.float32)
        values = th.as_tensor(rng.random((2, 1)), dtype=th.float32)
        starts = np.array([step == 3, step == 0], dtype=np.float32)
        args = (np.zeros((2, 2)), np.zeros(2), signal, starts, values, th.zeros(2))
        reference.add(*args)
        buffer.add(*args, cost=signal, cost_value=values)
    last, dones = th.tensor([0.3, 0.7]), np.array([False, True])
    reference.compute_returns_and_advantage(last, dones)
    buffer.compute_cost_returns_and_advantage(last, dones)
    np.testing.assert_allclose(buffer.cost_advantages, reference.advantages, rtol=1e-6)
    np.testing.assert_allclose(buffer.cost_returns, reference.returns, rtol=1e-6)
    samples = next(buffer.get(4))
    assert samples.cost_returns.shape == (4,) and samples.old_cost_values.shape == (4,)

    dict_buffer = CostDictRolloutBuffer(
        2, gym.spaces.Dict({"x": obs_space}), action_space, n_envs=1, gamma=0.9, cost_gamma=0.5, cost_gae_lambda=1.0
    )
    assert (dict_buffer.cost_gamma, dict_buffer.cost_gae_lambda) == (0.5, 1.0)


def test_timeout_bootstraps_the_cost_with_the_cost_value() -> None:
    # learning_rate=0 keeps the networks fixed, so V_c at the terminal observation can be recomputed.
    env = make_vec_env(lambda: ThreeChoiceEnv(horizon=4), n_envs=1, seed=0)
    model = small_ppo_lag(env, n_steps=8, batch_size=8, learning_rate=0.0, cost_gamma=0.5)
    model.learn(8)
    buffer = model.rollout_buffer
    raw_cost = (buffer.actions.reshape(-1) == 2).astype(np.float32)
    with th.no_grad():
        terminal_cost_value = float(model.policy.predict_cost_values(th.ones(1, 1))[0, 0])
    truncated_steps = [3, 7]
    expected = raw_cost.copy()
    expected[truncated_steps] += 0.5 * terminal_cost_value
    np.testing.assert_allclose(buffer.costs.reshape(-1), expected, rtol=1e-5, atol=1e-6)


def test_save_load_restores_lambda_and_actions(tmp_path: Path) -> None:
    model = small_ppo_lag(make_env(), lagrangian_kwargs=dict(lr=0.1))
    model.learn(512)
    lam = model.lagrange_value
    assert lam > 0.001
    observations = np.linspace(0.0, 1.0, 11, dtype=np.float32).reshape(-1, 1)
    actions, _ = model.predict(observations, deterministic=True)
    model.save(tmp_path / "ppo_lag")

    loaded = PPOLag.load(tmp_path / "ppo_lag", env=make_env(), device="cpu")
    assert loaded.lagrange_value == pytest.approx(lam)
    assert loaded.cost_limit == COST_LIMIT
    assert_same_weights(model.policy, loaded.policy)
    np.testing.assert_array_equal(loaded.predict(observations, deterministic=True)[0], actions)
    # The multiplier's optimiser state travels too: the next update is the same.
    assert loaded.lagrange_multiplier.update(5.0) == pytest.approx(model.lagrange_multiplier.update(5.0))
    loaded.learn(256, reset_num_timesteps=False)

    # A budget given to load (SB3 sets the attribute) is the one the multiplier applies.
    tighter = PPOLag.load(tmp_path / "ppo_lag", env=make_env(), device="cpu", cost_limit=0.0)
    tighter.learn(256, reset_num_timesteps=False)
    assert tighter.lagrange_multiplier.cost_limit == 0.0 and tighter.lagrange_value > lam


def test_episodes_cut_by_a_reload_do_not_add_their_costs_to_the_next_ones(tmp_path: Path) -> None:
    # ThreeChoiceEnv episodes last 10 steps; learn(16) stops 6 steps into one. After load(env=...),
    # SB3 resets the env, so that episode never ends and its cost must not be carried over.
    def always_costly() -> gym.Env:
        return gym.wrappers.TransformAction(ThreeChoiceEnv(), lambda action: 2, ThreeChoiceEnv().action_space)

    model = small_ppo_lag(make_vec_env(always_costly, n_envs=1), n_steps=16, batch_size=16)
    model.learn(16)
    model.save(tmp_path / "ppo_lag")
    loaded = PPOLag.load(tmp_path / "ppo_lag", env=make_vec_env(always_costly, n_envs=1), device="cpu")
    loaded.learn(32, reset_num_timesteps=False)
    assert loaded.safety_stats is not None
    assert list(loaded.safety_stats.episode_costs) == [10.0] * 4  # one before the save, three after


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="cost_limit"):
        small_ppo_lag(make_env(), cost_limit=-1.0)
    with pytest.raises(ValueError, match="cost_gamma"):
        small_ppo_lag(make_env(), cost_gamma=1.5)
    with pytest.raises(TypeError, match="cost value function"):
        PPOLag(ActorCriticPolicy, make_env(), n_steps=64, batch_size=64, device="cpu")
    with pytest.raises(TypeError, match="rollout buffer that stores costs"):
        small_ppo_lag(make_env(), rollout_buffer_class=RolloutBuffer)


def test_env_without_cost_names_the_env() -> None:
    env = make_vec_env(lambda: LineEnv(discrete=True), n_envs=1)
    model = small_ppo_lag(env)
    with pytest.raises(CostSignalError, match="LineEnv.*info\\['cost'\\] is missing"):
        model.learn(128)


@pytest.mark.parametrize("cost_value_head", ["separate", "shared"])
def test_box_actions_and_both_cost_heads_run(cost_value_head: str) -> None:
    model = small_ppo_lag(make_env(continuous=True), policy_kwargs=dict(cost_value_head=cost_value_head))
    model.learn(256)
    cost_names = [name for name, _ in model.policy.named_parameters() if name.startswith("cost_value_net")]
    assert len(cost_names) == (2 if cost_value_head == "shared" else 0)
    # TRPO's rule: every critic parameter (reward and cost) has "value" in its name.
    critic_names = {name for name, _ in model.policy.named_parameters() if "value" in name}
    assert len(critic_names) == (4 + 2 + 2 if cost_value_head == "shared" else 6)
    assert np.isfinite(model.logger.name_to_value["train/cost_value_loss"])


def test_twin_critic_members_are_independent_value_functions() -> None:
    policy = small_ppo_lag(make_env(continuous=True)).policy
    obs = th.rand(5, 1)
    values, cost_values = policy.predict_critics(obs)
    with th.no_grad():
        policy.value_net.head.weight[1].add_(1.0)  # member 1 is the cost critic
    new_values, new_cost_values = policy.predict_critics(obs)
    assert th.equal(values, new_values) and not th.allclose(cost_values, new_cost_values)
    # The same pass gives what SB3's layout gives: forward and evaluate_actions return the reward values.
    actions, forward_values, _ = policy(obs, deterministic=True)
    assert th.allclose(forward_values, new_values)
    eval_values, _, _ = policy.evaluate_actions(obs, actions)
    assert th.allclose(eval_values, new_values)


@pytest.mark.parametrize("lam", [0.0, 0.7, 25.0])
def test_stacked_lagrangian_loss_is_the_two_clipped_surrogates(lam: float) -> None:
    generator = th.Generator().manual_seed(0)
    ratio = th.exp(0.4 * th.randn(50, generator=generator))
    advantages, cost_advantages = th.randn(50, generator=generator), th.randn(50, generator=generator)
    clipped = th.clamp(ratio, 0.8, 1.2)
    reward_surrogate = th.min(advantages * ratio, advantages * clipped).mean()
    cost_surrogate = th.max(cost_advantages * ratio, cost_advantages * clipped).mean()
    expected = -(reward_surrogate - lam * cost_surrogate) / (1.0 + lam)
    loss = lagrangian_clipped_loss(ratio, advantages, cost_advantages, lam, clip_range=0.2)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("cost_value_head", ["separate", "shared"])
def test_rollout_critic_values_are_those_of_the_stored_observations(cost_value_head: str) -> None:
    # The rollout runs the actor step by step and both critics once at the end: check that every stored
    # (cost) value belongs to the observation of its (step, env) slot. learning_rate=0 keeps the critics fixed.
    env = make_vec_env("SafePendulum-v0", n_envs=2, seed=0)
    model = small_ppo_lag(env, learning_rate=0.0, policy_kwargs=dict(cost_value_head=cost_value_head))
    model.learn(128)
    buffer = model.rollout_buffer
    with th.no_grad():
        _, values, cost_values, _ = model.policy.forward_with_cost(th.as_tensor(buffer.observations))
    assert len(np.unique(buffer.observations[:, 0])) == 256  # every (step, env) slot holds its own state
    np.testing.assert_allclose(buffer.values.reshape(-1), values.numpy().reshape(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(buffer.cost_values.reshape(-1), cost_values.numpy().reshape(-1), rtol=1e-5, atol=1e-6)


def test_dict_observations_and_pid_multiplier_run() -> None:
    model = PPOLag(
        "MultiInputPolicy",
        make_env(dict_obs=True),
        n_steps=64,
        batch_size=64,
        n_epochs=1,
        cost_limit=0.5,
        lagrangian_update="pid",
        seed=0,
        device="cpu",
    )
    assert isinstance(model.rollout_buffer, CostDictRolloutBuffer)
    model.learn(256)
    # Every episode costs more than 0.5, so the PID update has pushed lambda up from its 0.001.
    assert model.lagrange_value > 0.01


def test_logger_keys(tmp_path: Path) -> None:
    model = small_ppo_lag(make_env())
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(384)
    keys = read_csv_keys(tmp_path)
    expected = {
        "train/lagrange_multiplier",
        "train/cost_value_loss",
        "train/ep_cost_estimate",
        "rollout/ep_cost_mean",
        "rollout/ep_rew_mean",
        "safety/violations_total",
        "safety/cost_rate",
    }
    assert expected <= keys


class StopAfterCostlySteps(BaseCallback):
    """Stops training once it has seen ``budget`` units of cost in the rollout loop's ``costs`` local."""

    def __init__(self, budget: float) -> None:
        super().__init__()
        self.budget = budget
        self.seen = 0.0

    def _on_step(self) -> bool:
        self.seen += float(np.sum(self.locals["costs"]))
        return self.seen < self.budget


def test_callbacks_see_the_costs_and_can_stop_training() -> None:
    model = small_ppo_lag(make_env())
    callback = StopAfterCostlySteps(budget=5.0)
    model.learn(2048, callback=callback)
    assert callback.seen >= 5.0
    assert model.num_timesteps < 128 * 2
