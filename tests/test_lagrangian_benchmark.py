"""The Lagrangian benchmark gives each parent the zoo entry of its Lagrangian twin minus the constraint."""

from __future__ import annotations

import pytest
from benchmark_modules import load_benchmark

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


def test_cost_value_head_is_dropped_from_policy_kwargs_only() -> None:
    kept = bench.without_cost_value_head({"gamma": 0.9, "policy_kwargs": {"net_arch": [8], "cost_value_head": "shared"}})
    assert kept == {"gamma": 0.9, "policy_kwargs": {"net_arch": [8]}}
    with pytest.raises(ValueError, match="as a YAML mapping"):
        bench.without_cost_value_head({"policy_kwargs": "dict(cost_value_head='shared')"})


def test_stochastic_evaluation_resamples_gsde_noise_and_repeats() -> None:
    # The SafePendulum-v0 entry uses gSDE: a stochastic evaluation must resample its noise matrix, so
    # it differs from the deterministic one, and the seeded sampling makes it repeatable.
    model, manager, _ = bench.build_model(bench.RunSpec("SafePendulum-v0", "ppo_lag", 0, 1, 2, None))
    model.learn(1)
    noise_calls = []
    reset_noise = model.policy.reset_noise
    model.policy.reset_noise = lambda n_envs=1: noise_calls.append(n_envs) or reset_noise(n_envs)
    stochastic = bench.evaluate(model, manager, 0, 2, deterministic=False)
    assert len(noise_calls) == 400 // model.sde_sample_freq
    assert bench.evaluate(model, manager, 0, 2, deterministic=False) == stochastic
    noise_calls.clear()
    assert bench.evaluate(model, manager, 0, 2, deterministic=True) != stochastic
    assert noise_calls == []
