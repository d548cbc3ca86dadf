"""CPO: the constrained sub-problem's cases, learning under a budget, save/load, errors, spaces, logger keys."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from toy_envs import (
    COST_LIMIT,
    LineEnv,
    ThreeChoiceEnv,
    assert_same_weights,
    make_env,
    mean_episode_return,
    read_csv_keys,
)

from sb3_safe.common.cost import CostSignalError
from sb3_safe.cpo import CPO, CPOCase, solve_cpo_subproblem

DELTA = 0.01


def small_cpo(env: Any, **kwargs: Any) -> CPO:
    settings: dict[str, Any] = dict(
        n_steps=128, batch_size=64, n_critic_updates=5, target_kl=0.05, cost_limit=COST_LIMIT, seed=0, device="cpu"
    )
    settings.update(kwargs)
    return CPO("MlpPolicy", env, **settings)


def solve_with_identity_fisher(g: list[float], b: list[float], c: float):
    # With H = I the conjugate-gradient solutions are v = g and w = b, and KL ~ |x|^2 / 2.
    g_t, b_t = th.tensor(g, dtype=th.float64), th.tensor(b, dtype=th.float64)
    return solve_cpo_subproblem(g_t, b_t, g_t, b_t, c, DELTA)


def test_feasible_trust_region_gives_the_trpo_step() -> None:
    step = solve_with_identity_fisher([1.0, 0.0], [0.0, 1.0], c=-10.0)
    assert step.case == CPOCase.TRUST_REGION_FEASIBLE
    np.testing.assert_allclose(step.direction.numpy(), [math.sqrt(2 * DELTA), 0.0], atol=1e-6)


def test_infeasible_gives_pure_cost_descent() -> None:
    step = solve_with_identity_fisher([1.0, 0.0], [0.0, 2.0], c=10.0)
    assert step.case == CPOCase.INFEASIBLE
    # -sqrt(2 delta / s) w with s = b.w = 4
    np.testing.assert_allclose(step.direction.numpy(), [0.0, -math.sqrt(2 * DELTA / 4.0) * 2.0], atol=1e-6)


@pytest.mark.parametrize(
    ("c", "case"),
    [(-0.1, CPOCase.BOUNDARY_FEASIBLE), (0.0, CPOCase.BOUNDARY_INFEASIBLE), (0.1, CPOCase.BOUNDARY_INFEASIBLE)],
)
def test_boundary_case_lands_on_both_constraints(c: float, case: CPOCase) -> None:
    # max x1 s.t. c + x1 + x2 <= 0 and |x|^2 <= 2 delta: the optimum is where the line meets the circle.
    step = solve_with_identity_fisher([1.0, 0.0], [1.0, 1.0], c=c)
    assert step.case == case
    root = math.sqrt(4 * DELTA - c**2)
    np.testing.assert_allclose(step.direction.numpy(), [(-c + root) / 2, (-c - root) / 2], atol=1e-5)
    assert c + float(step.direction.sum()) == pytest.approx(0.0, abs=1e-5)
    assert float(step.direction.dot(step.direction)) == pytest.approx(2 * DELTA, rel=1e-4)


def test_on_the_boundary_a_cost_gradient_pointing_away_leaves_the_trpo_step() -> None:
    # c = 0 and b.g < 0: the TRPO step lowers the cost, so the constraint does not bind.
    step = solve_with_identity_fisher([1.0, 0.0], [-1.0, 1.0], c=0.0)
    np.testing.assert_allclose(step.direction.numpy(), [math.sqrt(2 * DELTA), 0.0], atol=1e-6)


def test_an_inexact_conjugate_gradient_solve_cannot_give_an_unbounded_step() -> None:
    # v and w far from H^-1 g and H^-1 b: from g.v, g.w, b.w, A = q - r^2 / s < 0 and the dual's lambda
    # collapses to 0 (a step of KL ~ 1e16); the H-inner products of (v, w) keep the step in the trust region.
    fisher = th.tensor([[1.0, 0.0], [0.0, 100.0]], dtype=th.float64)
    g, b = th.tensor([1.0, 1.0], dtype=th.float64), th.tensor([1.0, 1.01], dtype=th.float64)
    v, w = th.tensor([0.1, 0.0], dtype=th.float64), th.tensor([1.0, -0.3], dtype=th.float64)
    step = solve_cpo_subproblem(g, b, v, w, -0.01, DELTA, hessian_vector_product=lambda x: fisher @ x)
    assert step.case == CPOCase.BOUNDARY_FEASIBLE
    assert float(step.direction @ fisher @ step.direction) / 2 == pytest.approx(DELTA, rel=1e-3)


def test_cost_surrogate_is_in_episode_cost_units_so_the_constraint_boundary_binds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # c = J_c - d is a change of the episode cost; b must be too (times the 10-step episode length), or the
    # boundary only cuts the trust region when |c| is a few hundredths and CPO flips between plain TRPO
    # steps and pure cost descent.
    import sb3_safe.cpo.cpo as cpo_module

    seen: list[tuple[th.Tensor, CPOCase]] = []

    def recording_solver(*args: Any) -> Any:
        step = solve_cpo_subproblem(*args)
        seen.append((args[1].clone(), step.case))
        return step

    monkeypatch.setattr(cpo_module, "solve_cpo_subproblem", recording_solver)
    runs = {}
    for rescale in (True, False):
        seen.clear()
        model = small_cpo(make_env(), rescale_cost_surrogate=rescale)
        model.learn(2560)
        runs[rescale] = list(seen)
    assert model.ep_length_estimate == 10.0
    th.testing.assert_close(runs[True][0][0], 10.0 * runs[False][0][0])  # the first rollouts are identical
    boundary = (CPOCase.BOUNDARY_FEASIBLE, CPOCase.BOUNDARY_INFEASIBLE)
    boundary_steps = {rescale: sum(case in boundary for _, case in run) for rescale, run in runs.items()}
    assert len(runs[True]) == 10
    assert boundary_steps[True] >= 6  # 8 of 10 with seed 0
    assert boundary_steps[False] <= 3  # 1 of 10 with seed 0


def test_zero_cost_gradient_gives_the_trpo_step() -> None:
    step = solve_with_identity_fisher([0.0, 2.0], [0.0, 0.0], c=-1.0)
    assert step.case == CPOCase.NO_COST_GRADIENT
    np.testing.assert_allclose(step.direction.numpy(), [0.0, math.sqrt(2 * DELTA)], atol=1e-6)


def test_learns_to_respect_the_budget_and_improves_return() -> None:
    model = small_cpo(make_env(), stats_window_size=40)
    model.learn(5120)
    # CPO steers the expected cost onto the boundary, so the 40-episode mean scatters around d = 2
    # (1.7 to 2.6 over seeds 0-3); the unconstrained optimum costs 10 and a uniform policy 3.3.
    assert model.safety_stats.ep_cost_mean <= COST_LIMIT + 0.75
    assert mean_episode_return(model) > 6.3


def test_cost_gradient_does_not_depend_on_the_reward_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    # b is compared with c = J_c - d (cost units): scaling the rewards by 100 must leave b and the
    # sub-problem's case as they are. The first rollouts are identical (same seed, same initial policy
    # and cost critic), so b must be equal.
    import sb3_safe.cpo.cpo as cpo_module

    seen: list[tuple[th.Tensor, float]] = []

    def recording_solver(g: th.Tensor, b: th.Tensor, v: th.Tensor, w: th.Tensor, c: float, *args: Any) -> Any:
        seen.append((b.clone(), c))
        return solve_cpo_subproblem(g, b, v, w, c, *args)

    monkeypatch.setattr(cpo_module, "solve_cpo_subproblem", recording_solver)
    cost_gradients = []
    for scale in (1.0, 100.0):
        env = make_vec_env(
            lambda scale=scale: gym.wrappers.TransformReward(ThreeChoiceEnv(), lambda r: scale * r), n_envs=2, seed=0
        )
        seen.clear()
        small_cpo(env).learn(128)
        (b, c), = seen
        cost_gradients.append(b)
    assert c > -COST_LIMIT  # an episode had ended: the constraint was part of the step
    assert th.allclose(cost_gradients[0], cost_gradients[1], rtol=1e-4, atol=1e-7)
    assert cost_gradients[0].abs().max() > 0


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = small_cpo(make_env())
    model.learn(512)
    observations = np.linspace(0.0, 1.0, 11, dtype=np.float32).reshape(-1, 1)
    actions, _ = model.predict(observations, deterministic=True)
    model.save(tmp_path / "cpo")
    loaded = CPO.load(tmp_path / "cpo", env=make_env(), device="cpu")
    assert (loaded.cost_limit, loaded.target_kl, loaded.line_search_max_iter) == (COST_LIMIT, 0.05, 15)
    assert_same_weights(model.policy, loaded.policy)
    np.testing.assert_array_equal(loaded.predict(observations, deterministic=True)[0], actions)
    loaded.learn(256, reset_num_timesteps=False)


def test_bad_inputs_give_clear_errors() -> None:
    with pytest.raises(ValueError, match="cost_limit"):
        small_cpo(make_env(), cost_limit=-1.0)
    with pytest.raises(ValueError, match="target_kl"):
        small_cpo(make_env(), target_kl=0.0)
    model = small_cpo(make_vec_env(lambda: LineEnv(discrete=True), n_envs=1))
    with pytest.raises(CostSignalError, match="LineEnv.*info\\['cost'\\] is missing"):
        model.learn(128)


def test_box_actions_take_constrained_steps() -> None:
    model = small_cpo(make_env(continuous=True))
    before = [param.detach().clone() for param in model._actor_parameters()]
    model.learn(256)
    assert model.logger.name_to_value["train/is_line_search_success"] == 1.0
    assert any(not th.equal(old, new) for old, new in zip(before, model._actor_parameters(), strict=True))


def test_logger_keys(tmp_path: Path) -> None:
    model = small_cpo(make_env())
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(384)
    expected = {
        "train/cpo_case",
        "train/cost_value_loss",
        "train/ep_cost_estimate",
        "train/cost_objective",
        "rollout/ep_cost_mean",
        "safety/violations_total",
    }
    assert expected <= read_csv_keys(tmp_path)
