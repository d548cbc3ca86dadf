"""Tests of SMBPO (sb3_safe.smbpo): penalty formulas, buffers, rollouts, learning, save/load, zoo."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
import yaml
from stable_baselines3.common.logger import KVWriter, Logger
from toy_envs import assert_same_weights

import sb3_safe  # noqa: F401 - registers the safe envs
from sb3_safe import evaluate_safe_policy
from sb3_safe.common import dynamics as dynamics_module
from sb3_safe.common.cost import CostSignalError
from sb3_safe.common.float_modes import denormals_flushed, flushes_denormals
from sb3_safe.smbpo import SMBPO, SMBPOReplayBuffer, deterministic_penalty, stochastic_penalty

TINY: dict[str, Any] = {
    "learning_starts": 100,
    "model_initial_gradient_steps": 50,
    "model_gradient_steps": 20,
    "model_train_freq": 50,
    "rollout_batch_size": 5,
    "rollout_horizon": 3,
    "batch_size": 32,
    "model_batch_size": 32,
    "gradient_steps": 2,
    "policy_kwargs": {"net_arch": [32, 32]},
    "model_hidden_size": 32,
    "ensemble_size": 3,
    "model_trunk_layers": 2,
    "buffer_size": 2000,
    "model_buffer_size": 2000,
    "seed": 0,
}


class ViolationOnlyEnv(gym.Env):
    """A point in the plane moved by the action; unsafe (and terminal) when |y| > 1.

    It reports ``info["cost"]`` and ``info["violation"]`` but has no ``is_unsafe`` method.
    """

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.state = np.zeros(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.state = np.zeros(2)
        return self.state.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.state = self.state + 0.4 * np.clip(action, -1.0, 1.0)
        violation = bool(abs(self.state[1]) > 1.0)
        info = {"cost": float(violation), "violation": violation}
        return self.state.astype(np.float32), float(self.state[0]), violation, False, info


class GoalEnv(ViolationOnlyEnv):
    """ViolationOnlyEnv whose episode also ends, without a violation, when x > 1 (a goal)."""

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated or bool(self.state[0] > 1.0), truncated, info


class CaptureWriter(KVWriter):
    """Keeps every key the logger dumps."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        self.keys.update(key_values)


def capture_logger(model: SMBPO) -> CaptureWriter:
    writer = CaptureWriter()
    model.set_logger(Logger(folder=None, output_formats=[writer]))
    return writer


# ----------------------------------------------------------------------------- penalty C


def test_deterministic_penalty_hand_computed() -> None:
    # (r_max - r_min) / gamma^H - r_max = 2 / 0.25 - 1
    assert deterministic_penalty(-1.0, 1.0, 0.5, 2) == pytest.approx(7.0)
    # gamma^H = 0.99^10 = 0.9043821; (1 - 0) / 0.9043821 - 1 = 0.1057272
    assert deterministic_penalty(0.0, 1.0, 0.99, 10) == pytest.approx(0.1057272, abs=1e-6)
    assert deterministic_penalty(3.0, 3.0, 0.9, 5) == 0.0  # a negative bound is clipped at 0


def test_deterministic_penalty_makes_early_failure_worse_than_any_safe_path() -> None:
    r_min, r_max, gamma, horizon = -2.0, 3.0, 0.9, 4
    c = deterministic_penalty(r_min, r_max, gamma, horizon) + 1e-6
    unsafe_at_h = r_max * (1 - gamma**horizon) / (1 - gamma) - c * gamma**horizon / (1 - gamma)
    always_safe = r_min / (1 - gamma)
    assert unsafe_at_h < always_safe


def test_stochastic_penalty_hand_computed() -> None:
    # g = 0.5: alpha1 = (1 (1 - 0.25) - 0.9 * 0) / (0.25 - 0.1) = 5; alpha2 = (2 - 0.5 - 0.5) / 0.4 = 2.5
    assert stochastic_penalty(0.0, 1.0, 0.5, 1, p=0.1, q=0.5) == pytest.approx(5.0)
    # g = 0.81, qg = 0.648: alpha1 = (2 * 0.352 + 0.8) / 0.448 = 3.357142857;
    # alpha2 = (2 * 0.39 + 0.8) / 0.61 = 2.590163934
    assert stochastic_penalty(-1.0, 2.0, 0.9, 2, p=0.2, q=0.8) == pytest.approx(1.504 / 0.448)
    # g = 0.5, qg = 0.25: alpha1 = (0.75 - 0.9 * 0.9) / 0.15 = -0.4; alpha2 = (1.0 - 0.81) / 0.4 = 0.475 wins
    assert stochastic_penalty(0.9, 1.0, 0.5, 1, p=0.1, q=0.5) == pytest.approx(0.475)
    # q = 1: alpha1 = alpha2 = (0.1 - 0.95) / 0.85 = -1, clipped at 0
    assert stochastic_penalty(1.0, 1.0, 0.9, 1, p=0.05, q=1.0) == 0.0


def test_stochastic_penalty_reduces_to_the_deterministic_bound() -> None:
    # q = 1 (failure certain) and p -> 0: alpha1 = alpha2 = (r_max (1 - g) - r_min) / g.
    stochastic = stochastic_penalty(-1.0, 2.0, 0.95, 5, p=1e-12, q=1.0)
    assert stochastic == pytest.approx(deterministic_penalty(-1.0, 2.0, 0.95, 5), rel=1e-9)


def test_penalty_bad_inputs() -> None:
    with pytest.raises(ValueError, match="must exceed p"):
        stochastic_penalty(0.0, 1.0, 0.99, 10, p=0.5, q=0.5)
    with pytest.raises(ValueError, match="r_min"):
        deterministic_penalty(2.0, 1.0, 0.99, 10)
    with pytest.raises(ValueError, match="gamma"):
        deterministic_penalty(0.0, 1.0, 1.0, 10)
    with pytest.raises(ValueError, match="horizon"):
        deterministic_penalty(0.0, 1.0, 0.9, 0)
    with pytest.raises(ValueError, match="finite"):
        deterministic_penalty(-math.inf, 1.0, 0.9, 1)


# ----------------------------------------------------------------------------- buffers


def filled_buffer(real_ratio: float, n_real: int = 50, n_model: int = 40) -> SMBPOReplayBuffer:
    obs_space = gym.spaces.Box(-10, 10, (2,), np.float32)
    act_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    buffer = SMBPOReplayBuffer(100, obs_space, act_space, device="cpu", model_buffer_size=100, real_ratio=real_ratio)
    info = [{"cost": 0.0, "violation": False}]
    for _ in range(n_real):
        buffer.add(np.ones((1, 2)), np.ones((1, 2)), np.zeros((1, 1)), np.array([0.5]), np.array([False]), info)
    buffer.model_buffer.extend(
        -th.ones(n_model, 2), th.zeros(n_model, 1), -th.ones(n_model, 2), th.full((n_model,), 0.25),
        th.arange(n_model) % 4 == 0,
    )
    return buffer


def test_mixed_batch_has_the_configured_real_fraction() -> None:
    buffer = filled_buffer(real_ratio=0.25)
    buffer.unsafe_reward = -100.0
    batch = buffer.sample(200)
    from_real = batch.observations[:, 0] > 0
    assert int(from_real.sum()) == 50
    assert bool(from_real[:50].all())
    # Real rows keep their reward; model rows are unpenalised unless flagged unsafe.
    assert th.all(batch.rewards[:50] == 0.5)
    model_rewards = batch.rewards[50:, 0]
    assert set(model_rewards.tolist()) <= {0.25, -100.0}
    assert th.all(batch.dones[50:, 0][model_rewards == -100.0] == 1.0)
    assert th.all(batch.dones[50:, 0][model_rewards == 0.25] == 0.0)


def test_batch_is_all_real_while_the_model_buffer_is_empty() -> None:
    buffer = filled_buffer(real_ratio=0.1, n_model=0)
    batch = buffer.sample(64)
    assert bool((batch.observations[:, 0] > 0).all())


def test_real_violations_are_read_from_infos_and_penalised() -> None:
    buffer = filled_buffer(real_ratio=1.0, n_real=0, n_model=0)
    buffer.unsafe_reward = -7.0
    buffer.add(np.ones((1, 2)), np.ones((1, 2)), np.zeros((1, 1)), np.array([1.0]), np.array([True]),
               [{"cost": 1.0, "violation": True}])
    batch = buffer.sample(8)
    assert th.all(batch.rewards == -7.0) and th.all(batch.dones == 1.0)
    with pytest.raises(CostSignalError, match=r"info\['cost'\] is missing"):
        buffer.add(np.ones((1, 2)), np.ones((1, 2)), np.zeros((1, 1)), np.array([1.0]), np.array([False]), [{}])


def test_model_buffer_wraps_around() -> None:
    buffer = filled_buffer(real_ratio=0.1, n_model=0)
    model_buffer = buffer.model_buffer
    model_buffer.extend(th.zeros(70, 2), th.zeros(70, 1), th.zeros(70, 2), th.zeros(70), th.zeros(70, dtype=th.bool))
    model_buffer.extend(th.ones(50, 2), th.zeros(50, 1), th.ones(50, 2), th.ones(50), th.ones(50, dtype=th.bool))
    assert model_buffer.size() == 100 and model_buffer.pos == 20
    assert int(model_buffer.violations.sum()) == 50


def test_model_buffer_unpickles_on_the_cpu_whatever_device_saved_it() -> None:
    # A buffer saved on a GPU machine must load on a CPU-only one; SMBPO.load_replay_buffer then moves it.
    model_buffer = filled_buffer(real_ratio=0.1).model_buffer
    state = model_buffer.__getstate__()
    state["device"] = th.device("cuda:0")
    restored = object.__new__(type(model_buffer))
    restored.__setstate__(state)
    assert restored.device == th.device("cpu") and restored.observations.device == th.device("cpu")
    assert restored.size() == model_buffer.size() == 40
    assert th.equal(restored.rewards[:40], model_buffer.rewards[:40])


def test_terminal_model_rows_end_the_episode_with_their_own_reward() -> None:
    buffer = filled_buffer(real_ratio=0.0, n_model=0)
    buffer.unsafe_reward = -100.0
    buffer.model_buffer.extend(
        th.zeros(3, 2), th.zeros(3, 1), th.zeros(3, 2), th.tensor([1.0, 2.0, 3.0]),
        th.tensor([True, False, False]), th.tensor([False, True, False]),
    )
    batch = buffer.sample(300)
    by_reward = {reward: float(batch.dones[batch.rewards[:, 0] == reward].mean()) for reward in (-100.0, 2.0, 3.0)}
    assert by_reward == {-100.0: 1.0, 2.0: 1.0, 3.0: 0.0}


def test_a_model_buffer_pickled_without_terminal_flags_loads_with_none_set() -> None:
    model_buffer = filled_buffer(real_ratio=0.1).model_buffer
    state = model_buffer.__getstate__()
    del state["terminals"]
    restored = object.__new__(type(model_buffer))
    restored.__setstate__(state)
    assert restored.size() == 40 and not bool(restored.terminals.any())
    assert th.equal(restored.violations[:40], model_buffer.violations[:40])


# ----------------------------------------------------------------------------- rollouts


def test_rollouts_stop_at_predicted_unsafe_states() -> None:
    calls: list[int] = []

    def unsafe_when_velocity_positive(obs: np.ndarray) -> np.ndarray:
        calls.append(len(obs))
        return obs[:, 2] > 0.0

    model = SMBPO("MlpPolicy", "SafePendulum-v0", unsafe_predicate=unsafe_when_velocity_positive, **TINY)
    model.learn(120)  # warm-up, initial fit and a few updates
    model_buffer = model.replay_buffer.model_buffer
    model_buffer.pos, model_buffer.full = 0, False
    stored, n_unsafe = model.model_rollouts(200)
    assert model_buffer.size() == stored and 0 < n_unsafe < stored
    # One batched predicate call per rollout step, never one per row.
    assert len(calls[-3:]) == 3 and calls[-3] == 200
    flags = model_buffer.violations[:stored]
    next_velocity = model_buffer.next_observations[:stored, 2]
    assert th.equal(flags, next_velocity > 0)
    # Later steps start from earlier next states; none of them may start from an unsafe state.
    assert bool((model_buffer.observations[200:stored, 2] <= 0).all())
    assert stored == 200 + calls[-2] + calls[-1]

    model.replay_buffer.real_ratio = 0.0
    batch = model.replay_buffer.sample(256)
    expected = -model.penalty_c / (1 - model.gamma)
    unsafe_rows = batch.next_observations[:, 2] > 0
    assert th.allclose(batch.rewards[unsafe_rows], th.tensor(expected))
    assert th.all(batch.dones[unsafe_rows] == 1.0) and th.all(batch.dones[~unsafe_rows] == 0.0)


def test_rollouts_stop_at_termination_fn_states_stored_as_terminal_without_penalty() -> None:
    model = SMBPO(
        "MlpPolicy",
        "SafePendulum-v0",
        unsafe_predicate=lambda obs: obs[:, 2] > 0.0,
        termination_fn=lambda obs: obs[:, 0] < 0.0,  # below the horizontal
        **TINY,
    )
    model.learn(120)
    model_buffer = model.replay_buffer.model_buffer
    model_buffer.pos, model_buffer.full = 0, False
    stored, _ = model.model_rollouts(200)
    next_obs = model_buffer.next_observations[:stored]
    unsafe, terminal = next_obs[:, 2] > 0, (next_obs[:, 0] < 0) & ~(next_obs[:, 2] > 0)
    assert 0 < int(terminal[:200].sum()) < 200
    assert th.equal(model_buffer.violations[:stored], unsafe) and th.equal(model_buffer.terminals[:stored], terminal)
    # No later step starts from a state that ended its rollout.
    later_starts = model_buffer.observations[200:stored]
    assert bool(((later_starts[:, 2] <= 0) & (later_starts[:, 0] >= 0)).all())

    model.replay_buffer.real_ratio = 0.0
    batch = model.replay_buffer.sample(512)
    rows_unsafe = batch.next_observations[:, 2] > 0
    rows_terminal = (batch.next_observations[:, 0] < 0) & ~rows_unsafe
    assert bool(rows_terminal.any())
    assert th.all(batch.dones[rows_terminal] == 1.0) and th.all(batch.dones[~(rows_terminal | rows_unsafe)] == 0.0)
    assert bool((batch.rewards[rows_terminal] > -model.penalty_c / (1 - model.gamma)).all())  # model rewards


def test_an_env_ending_episodes_without_violations_warns_unless_termination_fn_is_given() -> None:
    settings = {**TINY, "learning_starts": 150, "unsafe_predicate": lambda obs: np.abs(obs[:, 1]) > 1.0}
    with pytest.warns(UserWarning, match="termination_fn"):
        SMBPO("MlpPolicy", GoalEnv(), **settings).learn(150)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        SMBPO("MlpPolicy", GoalEnv(), termination_fn=lambda obs: obs[:, 0] > 1.0, **settings).learn(150)
        SMBPO("MlpPolicy", ViolationOnlyEnv(), **settings).learn(150)
    with pytest.raises(ValueError, match="termination_fn"):
        SMBPO("MlpPolicy", "SafePendulum-v0", termination_fn="goal", **TINY)


def test_env_predicate_is_found_through_wrappers() -> None:
    model = SMBPO("MlpPolicy", "SafePendulum-v0", **TINY)
    predicate = model._resolve_unsafe_fn()
    obs = np.array([[np.cos(np.deg2rad(25)), np.sin(np.deg2rad(25)), 0.0], [1.0, 0.0, 0.0]])
    assert predicate(obs).tolist() == [True, False]


# ----------------------------------------------------------------------------- learning


@pytest.mark.parametrize("env_id", ["SafePendulum-v0", "SafeHopper-v0"])
def test_learn_runs_and_logs(env_id: str) -> None:
    model = SMBPO("MlpPolicy", env_id, **TINY)
    writer = capture_logger(model)
    model.learn(250, log_interval=1)
    assert model.num_timesteps == 250
    assert model.n_model_fits >= 3  # initial fit at step 101, then every 50 steps
    assert model.replay_buffer.model_buffer.size() > 0
    expected_c = deterministic_penalty(model.reward_min, model.reward_max, model.gamma, model.rollout_horizon)
    assert model.penalty_c == pytest.approx(expected_c)
    assert model.replay_buffer.unsafe_reward == pytest.approx(-expected_c / (1 - model.gamma))
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)
    for key in ("train/penalty_c", "train/model_loss", "train/model_holdout_mse", "safety/violations_total",
                "train/critic_loss"):
        assert key in writer.keys
    if env_id == "SafeHopper-v0":  # random hopper actions fall within a few dozen steps
        assert "rollout/ep_cost_mean" in writer.keys and model.safety_stats.violations_total > 0
        assert "rollout/model_violation_rate" in writer.keys


def test_rollouts_are_branched_every_rollout_freq_steps_at_the_same_rate_per_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = SMBPO("MlpPolicy", "SafePendulum-v0", **{**TINY, "rollout_freq": 4})
    requested: list[int] = []
    branch = model.model_rollouts
    monkeypatch.setattr(model, "model_rollouts", lambda n_starts: requested.append(n_starts) or branch(n_starts))
    model.learn(109)  # updates after steps 101-109
    per_step = TINY["rollout_batch_size"]
    assert requested == [per_step, 0, 0, 0, 4 * per_step, 0, 0, 0, 4 * per_step]
    assert model.model_rows_generated > 0


def test_a_new_learn_call_branches_the_rollouts_of_a_fresh_run_at_its_first_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # reset_num_timesteps=True replays the learning_starts warm-up; its steps must not all be branched at once.
    model = SMBPO("MlpPolicy", "SafePendulum-v0", **TINY)
    requested: list[int] = []
    branch = model.model_rollouts
    monkeypatch.setattr(model, "model_rollouts", lambda n_starts: requested.append(n_starts) or branch(n_starts))
    model.learn(103)
    first_learn = requested.copy()
    requested.clear()
    model.learn(103)
    assert requested == first_learn == [TINY["rollout_batch_size"]] * 3


def test_learning_starts_0_with_one_env_updates_from_the_second_step() -> None:
    # SB3 calls train() after the first step; the model needs two transitions to fit.
    model = SMBPO("MlpPolicy", "SafePendulum-v0", **{**TINY, "learning_starts": 0})
    model.learn(20)
    assert model.n_model_fits == 1
    assert model.last_model_fit is not None
    assert model.last_model_fit.n_train + model.last_model_fit.n_holdout == 2
    assert model._n_updates == 19 * TINY["gradient_steps"]
    assert model.replay_buffer.model_buffer.size() > 0


def test_fixed_and_stochastic_penalty_modes() -> None:
    fixed = SMBPO("MlpPolicy", "SafePendulum-v0", penalty=12.5, **TINY)
    fixed.learn(110)
    assert fixed.penalty_c == 12.5
    assert fixed.replay_buffer.unsafe_reward == pytest.approx(-12.5 / (1 - fixed.gamma))
    stochastic = SMBPO("MlpPolicy", "SafePendulum-v0", penalty="auto-stochastic", penalty_p=0.05, penalty_q=0.5,
                       **TINY)
    stochastic.learn(110)
    assert stochastic.penalty_c == pytest.approx(
        stochastic_penalty(stochastic.reward_min, stochastic.reward_max, 0.99, 3, p=0.05, q=0.5)
    )


class KnownPredicateEnv(gym.Wrapper):
    """ViolationOnlyEnv with its predicate: |y| > 1 is unsafe (and ends the episode); moving in +x pays."""

    def is_unsafe(self, obs: np.ndarray) -> np.ndarray:
        return np.abs(np.asarray(obs)[..., 1]) > 1.0


def test_a_short_learn_moves_right_without_violations() -> None:
    def make_env() -> gym.Env:
        return gym.wrappers.TimeLimit(KnownPredicateEnv(ViolationOnlyEnv()), 20)

    model = SMBPO("MlpPolicy", make_env(), **TINY)
    return_before, _, cost_before, _ = evaluate_safe_policy(model, make_env(), 5)
    model.learn(1000)
    return_after, _, cost_after, _ = evaluate_safe_policy(model, make_env(), 5)
    # Untrained (seed 0): return 5.2, and its deterministic episode crosses |y| = 1 (cost 1). Trained: 15.0.
    # Moving +0.4 per step for 20 steps would return 84.
    assert cost_before == 1.0 and cost_after == 0.0
    assert return_after > return_before + 5.0


def test_learned_predicate_on_an_env_with_only_violation_infos(monkeypatch: pytest.MonkeyPatch) -> None:
    # The classifier's learning itself is tested in test_dynamics.py (a threshold label); here: SMBPO fits it
    # on the real buffer's violation flags and plans with it.
    env = ViolationOnlyEnv()
    with pytest.raises(ValueError, match="is_unsafe"):
        SMBPO("MlpPolicy", env, **TINY).learn(110)
    import sb3_safe.smbpo.smbpo as smbpo_module

    labels_fitted: list[np.ndarray] = []
    fit = smbpo_module.fit_ensemble

    def recording_fit(*args: Any, violations: Any = None, **kwargs: Any) -> Any:
        labels_fitted.append(np.asarray(violations.cpu() if isinstance(violations, th.Tensor) else violations))
        return fit(*args, violations=violations, **kwargs)

    monkeypatch.setattr(smbpo_module, "fit_ensemble", recording_fit)
    model = SMBPO("MlpPolicy", env, unsafe_predicate="learned", violation_threshold=0.5, **TINY)
    rollout_flags: list[tuple[th.Tensor, th.Tensor]] = []
    predict_unsafe = model._predict_unsafe

    def recording_predict_unsafe(next_obs: th.Tensor, violation_prob: th.Tensor | None) -> th.Tensor:
        assert violation_prob is not None  # the rollouts take the classifier's probabilities
        flags = predict_unsafe(next_obs, violation_prob)
        rollout_flags.append((violation_prob.clone(), flags.clone()))
        return flags

    monkeypatch.setattr(model, "_predict_unsafe", recording_predict_unsafe)
    writer = capture_logger(model)
    model.learn(250, log_interval=1)
    assert rollout_flags and all(th.equal(flags, prob > 0.5) for prob, flags in rollout_flags)
    assert model.dynamics.has_violation_head
    assert model.safety_stats.violations_total > 0
    assert "rollout/model_violation_rate" in writer.keys
    # Each fit got the violation flag of every real transition stored by then (fits every 50 steps from 100).
    assert [len(labels) for labels in labels_fitted] == [101, 151, 201]
    np.testing.assert_array_equal(labels_fitted[-1].ravel(), model.replay_buffer.violations[:201].ravel())
    assert labels_fitted[-1].sum() > 0


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="penalty"):
        SMBPO("MlpPolicy", "SafePendulum-v0", penalty="huge")
    with pytest.raises(ValueError, match="penalty_p and penalty_q"):
        SMBPO("MlpPolicy", "SafePendulum-v0", penalty="auto-stochastic")
    with pytest.raises(ValueError, match="must exceed p"):
        SMBPO("MlpPolicy", "SafePendulum-v0", penalty="auto-stochastic", penalty_p=0.9, penalty_q=0.5)
    with pytest.raises(ValueError, match="finite number"):
        SMBPO("MlpPolicy", "SafePendulum-v0", penalty=-1.0)
    with pytest.raises(ValueError, match="unsafe_predicate"):
        SMBPO("MlpPolicy", "SafePendulum-v0", unsafe_predicate="oracle")
    with pytest.raises(ValueError, match="real_ratio"):
        SMBPO("MlpPolicy", "SafePendulum-v0", real_ratio=1.5)
    with pytest.raises(ValueError, match="rollout_horizon"):
        SMBPO("MlpPolicy", "SafePendulum-v0", rollout_horizon=0)
    with pytest.raises(ValueError, match="rollout_freq"):
        SMBPO("MlpPolicy", "SafePendulum-v0", rollout_freq=0)
    with pytest.raises(ValueError, match="precision"):
        SMBPO("MlpPolicy", "SafePendulum-v0", model_precision="half")


def test_a_discrete_action_space_is_rejected_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="continuous"):
        SMBPO("MlpPolicy", gym.make("SafeAcrobot-v0"))
    with pytest.raises(ValueError, match="continuous"):
        SMBPO("MlpPolicy", "SafeAcrobot-v0")
    # SB3's own check is a bare assert, which ``python -O`` removes.
    code = (
        "import pytest, sb3_safe\n"
        "from sb3_safe.smbpo import SMBPO\n"
        "with pytest.raises(ValueError, match='continuous'):\n"
        "    SMBPO('MlpPolicy', 'SafeAcrobot-v0')\n"
    )
    result = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]


# ----------------------------------------------------------------------------- save / load


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = SMBPO("MlpPolicy", "SafePendulum-v0", **TINY)
    model.learn(160)
    model.save(tmp_path / "smbpo")
    model.save_replay_buffer(tmp_path / "buffer")
    loaded = SMBPO.load(tmp_path / "smbpo", env=gym.make("SafePendulum-v0"))
    loaded.load_replay_buffer(tmp_path / "buffer")

    assert_same_weights(model.dynamics, loaded.dynamics)
    assert loaded.penalty_c == model.penalty_c and loaded.n_model_fits == model.n_model_fits
    assert loaded.replay_buffer.real_size() == model.replay_buffer.real_size() == 160
    assert loaded.replay_buffer.model_buffer.size() == model.replay_buffer.model_buffer.size() > 0
    assert loaded.replay_buffer.unsafe_reward == model.replay_buffer.unsafe_reward
    obs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -2.0]], dtype=np.float32)
    assert np.allclose(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    loaded.learn(60, reset_num_timesteps=False)  # training goes on from the restored state
    assert loaded.num_timesteps == 220 and loaded.n_model_fits > model.n_model_fits


def test_fused_sac_update_trains_and_survives_save_load(tmp_path: Path) -> None:
    model = SMBPO("MlpPolicy", "SafePendulum-v0", **TINY, fused_sac_update=True)
    writer = capture_logger(model)
    critic_before = [p.detach().clone() for p in model.critic.parameters()]
    model.learn(210, log_interval=1)  # one 200-step episode: one log dump
    assert model._n_updates == (210 - 100) * TINY["gradient_steps"]
    assert not any(th.equal(a, b) for a, b in zip(critic_before, model.critic.parameters()))
    assert {"train/critic_loss", "train/actor_loss", "train/ent_coef", "train/penalty_c"} <= writer.keys
    model.save(tmp_path / "smbpo")
    assert SMBPO.load(tmp_path / "smbpo").fused_sac_update


@pytest.mark.parametrize("sac_hidden_precision", ["float32", "bfloat16"])
def test_sac_hidden_precision_trains_and_survives_save_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sac_hidden_precision: str
) -> None:
    import sb3_safe.smbpo.smbpo as smbpo_module

    model = SMBPO("MlpPolicy", "SafePendulum-v0", **TINY, fused_sac_update=True, sac_hidden_precision=sac_hidden_precision)
    calls: list[str] = []
    train = smbpo_module.fused_sac_train

    def recording_train(model: SMBPO, gradient_steps: int, batch_size: int, hidden_precision: str) -> None:
        calls.append(hidden_precision)
        train(model, gradient_steps, batch_size, hidden_precision)

    monkeypatch.setattr(smbpo_module, "fused_sac_train", recording_train)
    model.learn(130)
    assert calls == [sac_hidden_precision] * 30 and model._n_updates == 30 * TINY["gradient_steps"]
    model.save(tmp_path / "smbpo")
    assert SMBPO.load(tmp_path / "smbpo").sac_hidden_precision == sac_hidden_precision


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sac_hidden_precision": "float16", "fused_sac_update": True}, "sac_hidden_precision must be one of"),
        ({"sac_hidden_precision": "bfloat16"}, "needs fused_sac_update=True"),
        (
            {
                "sac_hidden_precision": "bfloat16",
                "fused_sac_update": True,
                "policy_kwargs": {"net_arch": [32, 32], "activation_fn": th.nn.Tanh},
            },
            "needs the hand-written SAC step, but .*nn.ReLU",
        ),
    ],
)
def test_bad_sac_hidden_precision_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SMBPO("MlpPolicy", "SafePendulum-v0", **{**TINY, **settings})


@pytest.mark.parametrize("name", ["model_precision", "sac_hidden_precision"])
@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_warns_on_a_cpu_that_runs_its_matmuls_on_a_slow_path(
    name: str, native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dynamics_module, "cpu_runs_bfloat16_matmuls_natively", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SMBPO("MlpPolicy", "SafePendulum-v0", **TINY, fused_sac_update=True, **{name: "bfloat16"}, device="cpu")
        SMBPO("MlpPolicy", "SafePendulum-v0", **TINY, fused_sac_update=True, device="cpu")  # float32: never
    slow_path = [w for w in caught if "slow reference path" in str(w.message)]
    assert len(slow_path) == (0 if native else 1)
    if slow_path:
        assert f"SMBPO: {name}='bfloat16'" in str(slow_path[0].message)


def test_bfloat16_model_precision_trains_and_survives_save_load(tmp_path: Path) -> None:
    model = SMBPO("MlpPolicy", "SafePendulum-v0", **TINY, model_precision="bfloat16")
    model.learn(160)
    assert model.n_model_fits > 0 and model.replay_buffer.model_buffer.size() > 0
    model.save(tmp_path / "smbpo")
    loaded = SMBPO.load(tmp_path / "smbpo")
    assert loaded.model_precision == "bfloat16" and loaded.dynamics.precision == "bfloat16"
    obs = th.zeros(4, 3)
    actions = th.zeros(4, 1)
    expected = model.dynamics.sample_step(obs, actions, generator=th.Generator().manual_seed(0))[0]
    assert th.equal(loaded.dynamics.sample_step(obs, actions, generator=th.Generator().manual_seed(0))[0], expected)


def test_a_new_learn_call_keeps_the_model_fit_period() -> None:
    # SB3's default reset_num_timesteps=True restarts num_timesteps at 0; fits must still come every
    # model_train_freq steps instead of waiting for the old step count to come round again.
    model = SMBPO("MlpPolicy", "SafePendulum-v0", **{**TINY, "learning_starts": 10})
    model.learn(120)
    fits = model.n_model_fits
    model.learn(120)
    assert model.num_timesteps == 120
    assert model.n_model_fits >= fits + 2


def test_background_model_fit_runs_beside_training_and_applies_each_fit_one_period_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[str] = []
    fit = SMBPO._fit_dynamics

    def recording_fit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(SMBPO, "_fit_dynamics", recording_fit)
    model = SMBPO("MlpPolicy", "SafePendulum-v0", **TINY, background_model_fit=True)
    model.learn(250)
    # Initial fit at step 101, waited for; fits started at steps 151 and 201 in the background, the
    # first applied at step 201, the second finished when learn() returns and applied at the next period.
    assert len(threads) == 3 and all(name.startswith("smbpo-model-fit") for name in threads)
    assert model.n_model_fits == 2 and model.model_updates_done == 50 + 20 + 20
    assert model._unapplied_fit is not None and model._unapplied_fit.n_updates == 20
    assert model.rollout_dynamics is not model.dynamics
    differs = [not th.equal(value, model.rollout_dynamics.state_dict()[key])
               for key, value in model.dynamics.state_dict().items()]
    assert any(differs)  # the rollouts still use the model of the fit started at step 151


@pytest.mark.parametrize("background_model_fit", [False, True])
def test_model_fits_run_in_a_thread_thatflushes_denormals_and_leave_the_callers_setting(
    background_model_fit: bool,
) -> None:
    model = SMBPO("MlpPolicy", "SafePendulum-v0", **TINY, background_model_fit=background_model_fit)
    model.learn(160)

    assert model._fit_executor is not None
    assert model._fit_executor.submit(flushes_denormals).result()
    assert not flushes_denormals()


@pytest.mark.parametrize("fused_sac_update", [False, True])
@pytest.mark.parametrize("caller_flushes", [False, True])
def test_sac_updates_and_rollouts_run_with_denormals_flushed_and_the_callers_setting_comes_back(
    monkeypatch: pytest.MonkeyPatch, fused_sac_update: bool, caller_flushes: bool
) -> None:
    model = SMBPO("MlpPolicy", "SafePendulum-v0", **TINY, fused_sac_update=fused_sac_update)
    seen: dict[str, list[bool]] = {"rollouts": [], "sac": []}
    rollouts, sac_update = model.model_rollouts, model._sac_update

    def recording_rollouts(n_starts: int) -> tuple[int, int]:
        seen["rollouts"].append(flushes_denormals())
        return rollouts(n_starts)

    def recording_sac_update(gradient_steps: int, batch_size: int) -> None:
        seen["sac"].append(flushes_denormals())
        sac_update(gradient_steps, batch_size)

    monkeypatch.setattr(model, "model_rollouts", recording_rollouts)
    monkeypatch.setattr(model, "_sac_update", recording_sac_update)
    with denormals_flushed(caller_flushes):
        model.learn(110)
        assert flushes_denormals() == caller_flushes

    assert len(seen["sac"]) == len(seen["rollouts"]) == 10 and all(seen["sac"]) and all(seen["rollouts"])
    assert model._n_updates == 2 * 10


def test_the_callers_setting_comes_back_when_an_update_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    model = SMBPO("MlpPolicy", "SafePendulum-v0", **TINY)

    def failing_update(gradient_steps: int, batch_size: int) -> None:
        raise RuntimeError("update failed")

    monkeypatch.setattr(model, "_sac_update", failing_update)
    with pytest.raises(RuntimeError, match="update failed"):
        model.learn(110)
    assert not flushes_denormals()


def test_background_model_fit_is_reproducible_whatever_the_thread_timing() -> None:
    runs = [SMBPO("MlpPolicy", "SafePendulum-v0", **TINY, background_model_fit=True).learn(260) for _ in range(2)]
    for module in ("dynamics", "rollout_dynamics", "actor"):
        assert_same_weights(getattr(runs[0], module), getattr(runs[1], module))


def test_background_model_fit_survives_save_load(tmp_path: Path) -> None:
    model = SMBPO("MlpPolicy", "SafePendulum-v0", **TINY, background_model_fit=True)
    model.learn(250)
    model.save(tmp_path / "smbpo")
    model.save_replay_buffer(tmp_path / "buffer")
    loaded = SMBPO.load(tmp_path / "smbpo", env=gym.make("SafePendulum-v0"))
    loaded.load_replay_buffer(tmp_path / "buffer")
    assert loaded.background_model_fit and loaded.rollout_dynamics is not loaded.dynamics
    for module in ("dynamics", "rollout_dynamics"):
        assert_same_weights(getattr(model, module), getattr(loaded, module))
    assert loaded._unapplied_fit == model._unapplied_fit and loaded.n_model_fits == 2
    loaded.learn(60, reset_num_timesteps=False)
    assert loaded.n_model_fits == 4  # the saved fit applied at step 251, the one started there at step 301


# ----------------------------------------------------------------------------- RL Zoo


def test_zoo_train_command(tmp_path: Path) -> None:
    args = [
        sys.executable, "-m", "rl_zoo3.train", "--algo", "smbpo", "--env", "SafePendulum-v0", "-n", "160",
        "--eval-freq", "-1", "--seed", "0", "--num-threads", "1", "-params", "learning_starts:100",
        "model_initial_gradient_steps:20", "model_gradient_steps:10", "rollout_batch_size:5", "rollout_horizon:3",
        "gradient_steps:1", "model_hidden_size:32", "ensemble_size:2",
    ]
    result = subprocess.run(args, cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "smbpo.yml" in result.stdout
    assert (tmp_path / "logs" / "smbpo" / "SafePendulum-v0_1" / "SafePendulum-v0.zip").is_file()


def test_zoo_trains_smbpo_on_safe_hopper_with_the_papers_entry(tmp_path: Path) -> None:
    """The issue's command as a user types it, shortened to 300 steps (all inside the paper's 5000-step warm-up)."""
    args = [sys.executable, "-m", "rl_zoo3.train", "--algo", "smbpo", "--env", "SafeHopper-v0", "-n", "300",
            "--eval-freq", "-1", "--seed", "0", "--num-threads", "1"]
    result = subprocess.run(args, cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "logs" / "smbpo" / "SafeHopper-v0_1"
    assert (run_dir / "SafeHopper-v0.zip").is_file()
    config = dict(yaml.unsafe_load((run_dir / "SafeHopper-v0" / "config.yml").read_text()))
    assert config["model_initial_gradient_steps"] == 10_000 and config["rollout_batch_size"] == 100
    assert config["learning_starts"] == 5000 and config["actor_learning_rate"] == 1e-4


# ----------------------------------------------------------------------------- benchmark helpers


def test_benchmark_flop_counter_counts_layer_sizes() -> None:
    from benchmark_modules import load_benchmark

    from sb3_safe.common.dynamics import EnsembleLinear

    bench = load_benchmark("smbpo")
    net = th.nn.Sequential(th.nn.Linear(3, 4), th.nn.ReLU(), th.nn.Linear(4, 2), EnsembleLinear(5, 2, 6))
    assert bench.linear_macs(net) == 3 * 4 + 4 * 2 + 5 * 2 * 6
    model = SMBPO("MlpPolicy", "SafePendulum-v0", **TINY)
    actor, critics = bench.linear_macs(model.actor), bench.linear_macs(model.critic)
    assert actor == 3 * 32 + 32 * 32 + 2 * 32 * 1  # latent, then mean and log-std heads
    assert critics == 2 * (4 * 32 + 32 * 32 + 32 * 1)
    assert bench.sac_update_flops(model, 10, fused_update=False) == 10 * 2.0 * (4 * actor + 7 * critics)
    assert bench.sac_update_flops(model, 10, fused_update=True) == 10 * 2.0 * (4 * actor + 6 * critics)
