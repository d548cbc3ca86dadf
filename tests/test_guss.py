"""GuSS and the shooting planners (sb3_safe.guss): archive, elite rules, toy experiment, SB3 agents."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback, StopTrainingOnMaxEpisodes
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv
from toy_envs import assert_same_weights

import sb3_safe  # noqa: F401 - registers the envs
from sb3_safe.common.metrics import TrainingLog, mean_p_unsafe
from sb3_safe.guss import CEM, RCEM, RS, SRS, GuSS
from sb3_safe.guss.planners import CEMPlanner, GridArchive, GuSSPlanner, RandomShootingPlanner, rcem_elites
from sb3_safe.guss.policies import NumpyDynamics
from sb3_safe.guss.rollout import (
    BatchedMLPPolicies,
    RolloutEvaluator,
    acrobot_tip_descriptor,
    lexicographic_order,
    pendulum_angle_descriptor,
)


# ----------------------------------------------------------------------------- a tiny navigation task

GOAL = np.array([2.0, 0.0], dtype=np.float32)
HAZARD_CENTRE, HAZARD_RADIUS, STEP = np.array([1.0, 0.0]), 0.3, 0.1


def in_hazard(obs: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(obs, dtype=np.float64)[..., :2] - HAZARD_CENTRE, axis=-1) < HAZARD_RADIUS


class ExactPointModel:
    """The true dynamics of :class:`PointNavEnv` (move by 0.1 * action, reward -distance to goal)."""

    def step(self, observations: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
        next_obs = observations + STEP * np.clip(actions, -1.0, 1.0)
        return next_obs, -np.linalg.norm(next_obs - GOAL, axis=-1), None


class PointNavEnv(gym.Env):
    """Go from (0, 0) to (2, 0); a disc of radius 0.3 around (1, 0) sits on the straight line."""

    def __init__(self, discrete: bool = False, length: int = 30) -> None:
        self.observation_space = spaces.Box(-3.0, 3.0, (2,), np.float32)
        self.action_space = spaces.Discrete(4) if discrete else spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.length = length
        self.pos = np.zeros(2, dtype=np.float32)
        self.t = 0

    def is_unsafe(self, obs: np.ndarray) -> np.ndarray:
        return in_hazard(obs)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.pos, self.t = np.zeros(2, dtype=np.float32), 0
        return self.pos.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if isinstance(self.action_space, spaces.Discrete):
            action = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]][int(action)], dtype=np.float32)
        self.pos = np.clip(self.pos + STEP * np.clip(action, -1, 1), -3, 3).astype(np.float32)
        self.t += 1
        violation = bool(in_hazard(self.pos))
        reward = -float(np.linalg.norm(self.pos - GOAL))
        return self.pos.copy(), reward, False, self.t >= self.length, {"cost": float(violation), "violation": violation}


def final_position(observations: np.ndarray) -> np.ndarray:
    return observations[:, -1, :2]


def drive(planner: Any, steps: int = 40) -> tuple[np.ndarray, int]:
    """Run a planner with the exact model from the start; return the final position and violations."""
    pos, violations = np.zeros(2, dtype=np.float32), 0
    for _ in range(steps):
        pos = (pos + STEP * np.clip(planner.plan(pos), -1.0, 1.0)).astype(np.float32)
        violations += int(in_hazard(pos))
    return pos, violations


BOX = spaces.Box(-1.0, 1.0, (2,), np.float32)
OBS = spaces.Box(-3.0, 3.0, (2,), np.float32)


def make_guss_planner(seed: int) -> GuSSPlanner:
    evaluator = RolloutEvaluator(ExactPointModel(), horizon=10, cost_fn=in_hazard)
    policies = BatchedMLPPolicies(OBS, BOX, [5])
    return GuSSPlanner(evaluator, BOX, policies, final_position, [-3, -3], [3, 3], grid_size=50, seed=seed)


# ----------------------------------------------------------------------------- archive and elite rules


def test_archive_keeps_lower_cost_then_higher_return() -> None:
    archive = GridArchive([4, 4], [0.0, 0.0], [1.0, 1.0], n_params=1)
    cell = np.array([[0.1, 0.1]])
    archive.add(np.array([[1.0]]), cell, returns=np.array([10.0]), costs=np.array([2.0]))
    # Lower cost wins even with a worse return.
    archive.add(np.array([[2.0]]), cell, returns=np.array([-5.0]), costs=np.array([0.0]))
    assert len(archive) == 1 and archive.params[0, 0] == 2.0
    # Higher cost loses even with a better return.
    archive.add(np.array([[3.0]]), cell, returns=np.array([100.0]), costs=np.array([1.0]))
    assert archive.params[0, 0] == 2.0
    # Same cost: the higher return wins; a full tie keeps the incumbent.
    archive.add(np.array([[4.0]]), cell, returns=np.array([-1.0]), costs=np.array([0.0]))
    assert archive.params[0, 0] == 4.0
    archive.add(np.array([[5.0]]), cell, returns=np.array([-1.0]), costs=np.array([0.0]))
    assert archive.params[0, 0] == 4.0
    # Candidates of one batch compete too, and other cells are filled independently.
    archive.add(
        np.array([[6.0], [7.0], [8.0]]),
        np.array([[0.9, 0.9], [0.9, 0.95], [0.1, 0.9]]),
        returns=np.array([1.0, 2.0, 0.0]),
        costs=np.array([0.0, 0.0, 3.0]),
    )
    assert len(archive) == 3
    assert sorted(archive.params[:, 0].tolist()) == [4.0, 7.0, 8.0]
    assert archive.params[archive.best(), 0] == 7.0  # zero cost and the best return


def test_archive_cells_follow_the_grid() -> None:
    archive = GridArchive([50, 50], [-np.pi, -np.pi], [np.pi, np.pi], n_params=1)
    cells = archive.cell_index(np.array([[-np.pi, -np.pi], [np.pi, np.pi], [0.0, 0.0], [-10.0, 10.0]]))
    assert cells.tolist() == [0, 50 * 50 - 1, 25 * 50 + 25, 49]
    with pytest.raises(ValueError, match="one entry per descriptor dimension"):
        GridArchive([50], [0.0, 0.0], [1.0, 1.0], n_params=1)


def test_parent_selection_draws_only_zero_cost_elites_and_tops_up_with_random() -> None:
    archive = GridArchive([10], [0.0], [1.0], n_params=1)
    costs = np.array([0.0, 1.0, 0.0, 2.0, 0.0, 5.0])
    archive.add(np.arange(6, dtype=np.float32)[:, None], np.linspace(0.05, 0.95, 6)[:, None], np.zeros(6), costs)
    generator = np.random.default_rng(0)
    picks, fill = archive.select_parents(200, generator)
    assert fill.sum() == 200 - 3  # 3 zero-cost elites: each used once, the rest random
    assert set(archive.costs[picks[~fill]].tolist()) == {0.0}
    assert sorted(archive.params[picks[~fill], 0].tolist()) == [0.0, 2.0, 4.0]
    picks, fill = archive.select_parents(2, generator)
    assert not fill.any() and (archive.costs[picks] == 0).all()
    # Over many draws every zero-cost elite is chosen, never an unsafe one.
    drawn = {int(archive.params[archive.select_parents(2, generator)[0], 0][i]) for _ in range(50) for i in range(2)}
    assert drawn == {0, 2, 4}


def test_guss_offspring_are_random_when_no_elite_is_safe() -> None:
    planner = make_guss_planner(seed=0)
    unsafe_elites = np.full((3, planner.policies.n_params), 7.0, np.float32)
    planner.archive.add(unsafe_elites, np.zeros((3, 2)), np.zeros(3), np.ones(3))
    children = planner._offspring(5)
    assert np.abs(children - 7.0).min() > 0.5  # fresh N(0, 1) policies, not mutants of the unsafe elites
    planner.archive.clear()
    safe_elite = np.full((1, planner.policies.n_params), 7.0, np.float32)
    planner.archive.add(safe_elite, np.zeros((1, 2)), np.zeros(1), np.zeros(1))
    children = planner._offspring(1)
    assert np.abs(children - 7.0).max() < 0.5  # a mutant (sigma 0.05) of the single safe elite


def test_guss_warm_start_carries_the_best_elites_into_the_next_step_until_reset() -> None:
    evaluator = RolloutEvaluator(ExactPointModel(), horizon=10, cost_fn=in_hazard)
    policies = BatchedMLPPolicies(OBS, BOX, [5])
    planner = GuSSPlanner(
        evaluator, BOX, policies, final_position, [-3, -3], [3, 3], grid_size=50, n_warm_start=2, seed=0
    )
    first_generations: list[np.ndarray] = []
    evaluate = evaluator.evaluate_policies

    def recording_evaluate(observation: np.ndarray, batch: Any, params: np.ndarray) -> Any:
        if len(params) == planner.n_initial_policies:
            first_generations.append(params.copy())
        return evaluate(observation, batch, params)

    evaluator.evaluate_policies = recording_evaluate  # type: ignore[method-assign]
    planner.plan(np.zeros(2, np.float32))
    ranked = lexicographic_order(planner.archive.costs, planner.archive.returns)
    best_two = planner.archive.params[ranked[:2]].copy()
    planner.plan(np.array([0.1, 0.0], np.float32))
    assert len(first_generations) == 2
    np.testing.assert_array_equal(first_generations[1][:2], best_two)  # same count: 2 elites + 23 random
    assert not np.isin(first_generations[1][2:], best_two).all(axis=1).any()
    carried = planner.carried_over.copy()
    assert len(carried) == 2
    planner.reset()
    planner.plan(np.zeros(2, np.float32))
    assert not np.isin(first_generations[2], carried).all(axis=1).any()
    with pytest.raises(ValueError, match="n_warm_start"):
        GuSSPlanner(evaluator, BOX, policies, final_position, [-3, -3], [3, 3], n_warm_start=26)


def test_rcem_elite_rule() -> None:
    costs = np.array([3.0, 0.0, 1.0, 0.0, 2.0, 1.0])
    returns = np.array([9.0, 1.0, 5.0, 2.0, 8.0, 4.0])
    # Only 2 safe: both (best return first), then the lowest-cost unsafe ones, ties by return.
    assert rcem_elites(costs, returns, 4).tolist() == [3, 1, 2, 5]
    # Enough safe: the best-return safe ones only.
    costs_safe = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    assert rcem_elites(costs_safe, returns, 3).tolist() == [0, 4, 3]
    assert lexicographic_order(np.zeros(3), np.array([1.0, 3.0, 2.0])).tolist() == [1, 2, 0]


def test_policy_parameter_counts_match_the_paper() -> None:
    pendulum = BatchedMLPPolicies(spaces.Box(-8, 8, (3,)), spaces.Box(-2, 2, (1,)), [5])
    acrobot = BatchedMLPPolicies(spaces.Box(-30, 30, (6,)), spaces.Discrete(3), [5, 5])
    assert pendulum.n_params == 26 and acrobot.n_params == 83
    params = np.random.default_rng(0).normal(size=(4, 26)).astype(np.float32)
    actions = pendulum.act(params, np.zeros((4, 3), np.float32))
    assert actions.shape == (4, 1) and (np.abs(actions) <= 2).all()
    discrete = acrobot.act(np.zeros((2, 83), np.float32), np.zeros((2, 6), np.float32))
    assert discrete.shape == (2,) and discrete.dtype.kind == "i"


def test_policy_inputs_are_scaled_by_the_bounds_or_raw() -> None:
    obs_space = spaces.Box(np.array([-1.0, -8.0]), np.array([1.0, 8.0]), dtype=np.float32)
    scaled = BatchedMLPPolicies(obs_space, spaces.Box(-2, 2, (1,)), [3])
    raw = BatchedMLPPolicies(obs_space, spaces.Box(-2, 2, (1,)), [3], normalize_inputs=False)
    assert scaled.obs_scale.tolist() == [1.0, 0.125] and raw.obs_scale.tolist() == [1.0, 1.0]
    params = np.random.default_rng(1).normal(size=(1, scaled.n_params)).astype(np.float32)
    observation = np.array([[0.5, 4.0]], np.float32)
    # A raw observation acts like a pre-scaled one given to the scaled policy.
    np.testing.assert_allclose(raw.act(params, observation / [1.0, 8.0]), scaled.act(params, observation))
    assert not np.allclose(raw.act(params, observation), scaled.act(params, observation))


def test_descriptors() -> None:
    theta = np.array([0.3, -2.0])
    pendulum_obs = np.zeros((2, 11, 3), np.float32)
    pendulum_obs[:, :, 0], pendulum_obs[:, :, 1] = np.cos(theta)[:, None], np.sin(theta)[:, None]
    np.testing.assert_allclose(pendulum_angle_descriptor(pendulum_obs), np.stack([theta, theta], 1), atol=1e-6)
    hanging = np.zeros((1, 11, 6), np.float32)
    hanging[..., 0] = hanging[..., 2] = 1.0  # theta1 = theta2 = 0: the tip hangs at (0, -2)
    np.testing.assert_allclose(acrobot_tip_descriptor(hanging), [[0.0, -2.0, 0.0, -2.0]], atol=1e-6)


# ----------------------------------------------------------------------------- the toy experiment


def test_guss_with_true_dynamics_reaches_the_goal_around_the_hazard_where_rs_and_cem_cross_it() -> None:
    evaluator = RolloutEvaluator(ExactPointModel(), horizon=10, cost_fn=in_hazard)
    for seed in (0, 1):
        position, violations = drive(make_guss_planner(seed))
        assert violations == 0
        assert np.linalg.norm(position - GOAL) < 0.2, position
    for planner in (RandomShootingPlanner(evaluator, BOX, 100, safe=False, seed=0), CEMPlanner(evaluator, BOX, seed=0)):
        position, violations = drive(planner)
        assert violations > 0, type(planner).__name__
        assert np.linalg.norm(position - GOAL) < 0.3


@pytest.mark.parametrize("seed", range(3))
def test_discrete_planners_advance_into_the_cost_only_when_they_ignore_it(seed: int) -> None:
    # Action 0 advances o by 1 and the reward is o, so advancing pays; from o = 1 any advance is unsafe (o > 1.5).
    evaluator = RolloutEvaluator(
        type("M", (), {"step": lambda self, o, a: (o + (a[:, None] == 0), o[:, 0] + (a == 0), None)})(),
        horizon=4,
        cost_fn=lambda o: o[:, 0] > 1.5,
    )
    space = spaces.Discrete(3)
    start = np.ones(1, np.float32)
    for planner, safe in (
        (RandomShootingPlanner(evaluator, space, 20, safe=False, seed=seed), False),
        (CEMPlanner(evaluator, space, 10, 3, 2, robust=False, seed=seed), False),
        (RandomShootingPlanner(evaluator, space, 20, safe=True, seed=seed), True),
        (CEMPlanner(evaluator, space, 10, 3, 2, robust=True, seed=seed), True),
    ):
        action = planner.plan(start)
        assert action.shape == () and (int(action) != 0) == safe


def test_cem_warm_start_shifts_the_gaussian_and_restarts_categoricals_from_uniform() -> None:
    continuous = CEMPlanner(RolloutEvaluator(ExactPointModel(), 10, cost_fn=in_hazard), BOX, 20, 10, 5, seed=0)
    continuous.plan(np.zeros(2, np.float32))
    assert continuous.mean[:-1, 0].mean() > 0.3  # the elites head for the goal at +x: kept, shifted
    np.testing.assert_array_equal(continuous.mean[-1], 0.0)  # the new last step starts afresh
    np.testing.assert_allclose(continuous.std, 0.5)  # the spread is reset: (high - low) / 4

    evaluator = RolloutEvaluator(
        type("M", (), {"step": lambda self, o, a: (o + (a[:, None] == 0), -np.abs(o[:, 0] - 4), None)})(),
        horizon=4,
        cost_fn=lambda o: np.zeros(len(o)),
    )
    discrete = CEMPlanner(evaluator, spaces.Discrete(3), 10, 3, 5, seed=0)
    assert int(discrete.plan(np.zeros(1, np.float32))) == 0  # action 0 moves towards the reward
    np.testing.assert_allclose(discrete.mean, 1.0 / 3.0)  # every torque can be sampled again


# ----------------------------------------------------------------------------- SB3 agents


class CountingCallback(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.steps = 0
        self.started = False

    def _on_training_start(self) -> None:
        self.started = True

    def _on_step(self) -> bool:
        self.steps += 1
        return True


TINY_GUSS = dict(
    horizon=4, model_epochs=3, n_policies=10, n_initial_policies=5, n_policies_per_generation=5, grid_size=10,
    policy_kwargs=dict(net_arch=[16, 16], n_components=2),
)


def test_callback_stop_at_an_episode_end_still_logs_and_refits_and_keeps_the_data_contiguous() -> None:
    env = PointNavEnv(length=20)
    model = RS("MlpPolicy", env, seed=0, horizon=3, n_sequences=8, model_epochs=2, policy_kwargs=dict(net_arch=[8]))
    model.learn(1_000, callback=StopTrainingOnMaxEpisodes(max_episodes=1))
    assert model.num_timesteps == 20 and len(model.training_log) == 1 and model.policy.dynamics.is_fitted
    assert model._episode is None  # nothing of the logged episode is carried into the next call

    model.learn(20, reset_num_timesteps=False)
    assert [record["length"] for record in model.training_log] == [20.0, 20.0]
    data = model._dataset.arrays()
    within_episodes = np.arange(39) != 19  # row 19 ends the first episode, row 20 starts from a reset
    np.testing.assert_array_equal(data["observations"][1:][within_episodes], data["next_observations"][:-1][within_episodes])
    np.testing.assert_array_equal(data["observations"][20], np.zeros(2, dtype=np.float32))


def test_with_a_learned_model_both_planners_beat_the_random_episode_and_only_cem_enters_the_hazard() -> None:
    # The tiny navigation task with its model learned from the episodes (100 epochs per refit): the planned
    # episodes get closer to the goal than the random first one (-36 to -42), and GuSS's keep out of the
    # hazard on the straight line, where CEM's enter it (seeds 0-2: CEM 18 cost steps, GuSS none).
    small = dict(
        horizon=4, model_epochs=100, early_stopping_patience=None, policy_kwargs=dict(net_arch=[32, 32], n_components=2)
    )
    guss_settings = dict(n_policies=10, n_initial_policies=5, n_policies_per_generation=5, grid_size=10,
                         descriptor=final_position, descriptor_bounds=([-3, -3], [3, 3]))
    planned_costs = {"cem": 0.0, "guss": 0.0}
    for seed in range(3):
        for name, model in (("cem", CEM("MlpPolicy", PointNavEnv(length=20), seed=seed, **small)),
                            ("guss", GuSS("MlpPolicy", PointNavEnv(length=20), seed=seed, **small, **guss_settings))):
            model.learn(80)
            random_episode, *planned = model.training_log
            assert random_episode["planned"] == 0.0 and len(planned) == 3
            assert all(record["return"] > random_episode["return"] + 5.0 for record in planned)
            planned_costs[name] += sum(record["cost"] for record in planned)
    assert planned_costs["guss"] == 0.0 < planned_costs["cem"]


def test_guss_agent_learns_logs_saves_and_loads(tmp_path: Path) -> None:
    env = PointNavEnv(length=20)
    model = GuSS("MlpPolicy", env, seed=0, descriptor=final_position, descriptor_bounds=([-3, -3], [3, 3]), **TINY_GUSS)
    model.set_logger(configure(str(tmp_path / "log"), ["csv"]))
    callback = CountingCallback()
    model.learn(50, callback=callback)
    assert callback.started and callback.steps == 50
    assert [record["planned"] for record in model.training_log] == [0.0, 1.0]  # the first episode is random
    assert model.policy.dynamics.is_fitted and model._dataset.size == 50
    log = TrainingLog.from_records(model.training_log)
    unsafe_shares = [100 * record["violations"] / record["length"] for record in model.training_log]
    assert mean_p_unsafe(log) == pytest.approx(np.mean(unsafe_shares))
    header = (tmp_path / "log" / "progress.csv").read_text().splitlines()[0]
    for key in ("rollout/ep_p_unsafe", "safety/violations_total", "train/model_nll", "planner/steps_per_s"):
        assert key in header

    path = tmp_path / "guss_agent"
    model.save(path)
    loaded = GuSS.load(path, env=PointNavEnv(length=20), descriptor=final_position)
    assert_same_weights(model.policy, loaded.policy)
    assert loaded.training_log == model.training_log and loaded.n_policies == 10
    obs = np.array([[0.5, 0.1]], dtype=np.float32)
    model.policy.planner.seed(3)
    loaded.policy.planner.seed(3)
    np.testing.assert_array_equal(model.predict(obs)[0], loaded.predict(obs)[0])
    assert model.predict(obs)[0].shape == (1, 2)


def test_agent_planning_with_the_exact_model_walks_around_the_hazard_until_set_env() -> None:
    env = PointNavEnv(length=40)
    model = GuSS("MlpPolicy", env, seed=0, descriptor=final_position, descriptor_bounds=([-3, -3], [3, 3]),
                 **{**TINY_GUSS, "horizon": 10, "n_policies": 100, "n_initial_policies": 25, "grid_size": 50})
    model.plan_with(ExactPointModel())  # no learning: the untrained MDN would not get there
    obs, _ = env.reset()
    violations = 0
    for _ in range(40):
        obs, _, _, _, info = env.step(model.predict(obs)[0])
        violations += int(info["violation"])
    assert violations == 0 and np.linalg.norm(obs - GOAL) < 0.2, obs
    model.set_env(PointNavEnv(length=40))
    assert isinstance(model.policy.planner.evaluator.model, NumpyDynamics)


def test_an_episode_split_across_learn_calls_is_logged_whole_and_planning_goes_on(tmp_path: Path) -> None:
    model = GuSS("MlpPolicy", PointNavEnv(length=20), seed=0, descriptor=final_position,
                 descriptor_bounds=([-3, -3], [3, 3]), **TINY_GUSS)
    model.learn(30)  # one random episode, then 10 steps of a planned one
    model.learn(20, reset_num_timesteps=False)  # its last 10 steps, then 10 of the next
    assert [record["length"] for record in model.training_log] == [20.0, 20.0]
    assert model.safety_stats.total_steps == 50 == model.num_timesteps
    # A new run (SB3's default reset_num_timesteps=True) restarts the episode count but plans at once:
    # the model is already fitted.
    model.learn(20)
    assert [record["planned"] for record in model.training_log] == [0.0, 1.0, 1.0]
    model.save(tmp_path / "guss")
    loaded = GuSS.load(tmp_path / "guss", env=PointNavEnv(length=20), descriptor=final_position)
    loaded.learn(20, reset_num_timesteps=False)
    assert loaded.safety_stats.total_steps == 40  # the statistics of the saved run go on


@pytest.mark.parametrize("algo_class", [RS, SRS, CEM, RCEM])
def test_baseline_agents_learn_predict_save_and_load_on_a_discrete_env(algo_class: type, tmp_path: Path) -> None:
    extra = dict(n_sequences=8) if algo_class in (RS, SRS) else dict(n_sequences=8, n_elites=3, n_iterations=2)
    model = algo_class(
        "MlpPolicy", PointNavEnv(discrete=True, length=15), seed=0, horizon=3, model_epochs=2,
        policy_kwargs=dict(net_arch=[8]), **extra,
    )
    model.learn(20)
    action, _ = model.predict(np.zeros(2, np.float32))
    assert action.shape == () and 0 <= int(action) < 4
    assert len(model.training_log) == 1 and model.policy.dynamics.is_fitted

    model.save(tmp_path / "agent")
    loaded = algo_class.load(tmp_path / "agent", env=PointNavEnv(discrete=True, length=15))
    assert type(loaded) is algo_class and loaded.training_log == model.training_log
    assert_same_weights(model.policy, loaded.policy)
    obs = np.array([0.5, 0.1], np.float32)
    plans = []
    for agent in (model, loaded):
        agent.policy.planner.reset()  # the original's warm start from its last plan is not part of the save
        agent.policy.planner.seed(3)
        plans.append([int(agent.predict(obs)[0]) for _ in range(5)])
    assert plans[0] == plans[1]


def test_guss_on_safe_acrobot_plans_discrete_actions_with_its_descriptor(tmp_path: Path) -> None:
    model = GuSS(
        "MlpPolicy", "SafeAcrobot-v0", seed=0, normalize_policy_inputs=False, **TINY_GUSS
    )
    assert model.policy.planner.policies.n_params == 83  # the paper's 2 x 5 policy, chosen for the env
    model.learn(205)
    assert model.training_log[0]["length"] == 200 and model.num_timesteps == 205
    action, _ = model.predict(model.env.reset())
    assert action.shape == (1,) and 0 <= int(action[0]) < 3
    assert (model.policy.planner.policies.obs_scale == 1.0).all()
    model.save(tmp_path / "acrobot")
    loaded = GuSS.load(tmp_path / "acrobot")
    assert not loaded.normalize_policy_inputs and (loaded.policy.planner.policies.obs_scale == 1.0).all()


class CostOnlyNavEnv(PointNavEnv):
    """PointNavEnv with its costs in ``info["cost"]`` only: no ``is_unsafe`` predicate to plan with."""

    is_unsafe = None


def test_learned_cost_head_needs_no_predicate_and_load_without_env_rebuilds_the_predicate(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is_unsafe"):
        GuSS("MlpPolicy", CostOnlyNavEnv(length=20), descriptor=final_position, descriptor_bounds=([-3, -3], [3, 3]),
             **TINY_GUSS)
    model = GuSS("MlpPolicy", CostOnlyNavEnv(length=20), seed=0, cost_source="learned", cost_tolerance=0.1,
                 descriptor=final_position, descriptor_bounds=([-3, -3], [3, 3]), **TINY_GUSS)
    assert model.policy.dynamics.predict_cost and model.policy.planner.evaluator.cost_fn is None
    model.learn(40)
    assert [record["planned"] for record in model.training_log] == [0.0, 1.0]
    assert model.policy.planner.evaluator.cost_fn is None  # the learned head's costs, not a predicate

    env_model = GuSS("MlpPolicy", "SafePendulum-v0", seed=0, **TINY_GUSS)
    env_model.save(tmp_path / "pendulum")
    loaded = GuSS.load(tmp_path / "pendulum")  # no env, as the zoo's enjoy does
    assert loaded.env is None and loaded.policy.planner.evaluator.cost_fn is not None
    unsafe_obs = np.array([[np.cos(np.deg2rad(25)), np.sin(np.deg2rad(25)), 0.0]], np.float32)
    assert bool(loaded.policy.planner.evaluator.cost_fn(unsafe_obs)[0])


def test_bad_configurations_give_clear_errors() -> None:
    two_envs = DummyVecEnv([lambda: PointNavEnv(), lambda: PointNavEnv()])
    with pytest.raises(ValueError, match="n_envs=1"):
        RS("MlpPolicy", two_envs)
    with pytest.raises(ValueError, match="no default behaviour descriptor"):
        GuSS("MlpPolicy", PointNavEnv())
    with pytest.raises(ValueError, match="descriptor_bounds"):
        GuSS("MlpPolicy", PointNavEnv(), descriptor=final_position)
    with pytest.raises(ValueError, match="is_unsafe"):
        RS("MlpPolicy", gym.make("Pendulum-v1"))
    with pytest.raises(ValueError, match="cost_source"):
        RS("MlpPolicy", PointNavEnv(), cost_source="magic")
    with pytest.raises(ValueError, match="n_elites"):
        CEM("MlpPolicy", PointNavEnv(), n_sequences=4, n_elites=8)


@pytest.mark.skipif(
    "guss" not in __import__("sb3_safe.zoo", fromlist=["ZOO_ALGOS"]).ZOO_ALGOS, reason="no zoo plug-in"
)
def test_zoo_trains_and_enjoys_guss(tmp_path: Path) -> None:
    params = ["model_epochs:2", "horizon:3", "n_policies:10", "n_initial_policies:5", "grid_size:5"]
    common = ["--algo", "guss", "--env", "SafePendulum-v0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )

    train = run(["rl_zoo3.train", *common, "-n", "210", "--seed", "0", "--eval-freq", "-1", "-params", *params])
    assert train.returncode == 0, train.stderr[-3000:]
    assert (tmp_path / "logs" / "guss" / "SafePendulum-v0_1" / "SafePendulum-v0.zip").is_file()
    enjoy = run(["rl_zoo3.enjoy", *common, "-f", "logs", "-n", "5", "--no-render"])
    assert enjoy.returncode == 0, enjoy.stderr[-3000:]
