"""benchmarks/penalty_reference.py trains the parent behind the penalty and evaluates it without it."""

from __future__ import annotations

import sys

import pytest
from benchmark_modules import BENCHMARKS, load_benchmark

import sb3_safe  # noqa: F401 - registers the safe envs
from sb3_safe.wrappers import EarlyTerminationPenalty

sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling `lagrangian`
reference = load_benchmark("penalty_reference")


def test_training_sees_the_penalty_and_evaluation_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}
    evaluate = reference.evaluate

    def recording_evaluate(model, manager, seed, n_episodes, deterministic):  # type: ignore[no-untyped-def]
        env = model.get_env()
        while hasattr(env, "venv"):
            env = env.venv
        seen["training_env"] = env.envs[0]
        seen["evaluation_wrapper"] = manager.env_wrapper
        return evaluate(model, manager, seed, n_episodes, deterministic)

    monkeypatch.setattr(reference, "evaluate", recording_evaluate)
    record = reference.run_one("SafePendulum-v0", "ppo", 7.0, 0, 64, 1)

    assert isinstance(seen["training_env"], EarlyTerminationPenalty)
    assert seen["training_env"].penalty == 7.0
    assert seen["evaluation_wrapper"] is None
    assert record["eval_return_deterministic"] <= 0.0 and record["eval_cost_sampled"] >= 0.0
    assert record["penalty"] == 7.0 and record["timesteps"] >= 64


def test_a_normalised_entry_records_the_divisor_that_shrinks_the_penalty() -> None:
    # SafeHopper-v0's entry normalises rewards, so -C is divided and clipped: the record must keep what
    # tells the effective C from the nominal one (and SafePendulum-v0's, without VecNormalize, must not).
    hopper = reference.run_one("SafeHopper-v0", "ppo", 200.0, 0, 1024, 1)
    assert hopper["clip_reward"] == 10.0
    assert hopper["trace_steps"] == [1000] and hopper["reward_scales"][0] > 0.0
    pendulum = reference.run_one("SafePendulum-v0", "ppo", 7.0, 0, 1000, 1)
    assert pendulum["clip_reward"] is None and pendulum["reward_scales"] == [None]
