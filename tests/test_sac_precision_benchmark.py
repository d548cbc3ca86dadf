"""benchmarks/sac_precision.py: each run trains with the precision it names; a seed's two runs share their warm-up."""

from __future__ import annotations

from typing import Any

import pytest
from benchmark_modules import load_benchmark

bench = load_benchmark("sac_precision")


def _spec(precision: str) -> Any:
    return bench.RunSpec(
        env_id="SafePendulum-v0", seed=3, precision=precision, total_steps=120, learning_starts=100,
        gradient_steps=2, target_entropy=-1.0, eval_episodes=1,
    )


@pytest.mark.parametrize("precision", bench.PRECISIONS)
def test_a_run_updates_with_its_precision_and_reports_its_trace(monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    calls: list[tuple[int, str]] = []
    step = bench.mlp_fused_sac_train

    def recording_step(model, gradient_steps, batch_size, hidden_precision="float32"):  # type: ignore[no-untyped-def]
        calls.append((gradient_steps, hidden_precision))
        step(model, gradient_steps, batch_size, hidden_precision)

    monkeypatch.setattr(bench, "mlp_fused_sac_train", recording_step)
    run = bench.run_one(_spec(precision))

    # SB3 trains after every env step from learning_starts on: 20 calls of 2 updates.
    assert calls == [(2, precision)] * 20
    assert run["precision"] == precision and run["seed"] == 3
    assert run["steps"][-1] == 100 and run["warmup_done"]
    assert run["steps_after_warmup"] == 20
    assert run["violations_after_warmup"] == run["violations"] - run["violations_at_warmup_end"]
    assert run["wall_s"] > 0.0


def _run(seed: int, precision: str, falls: int, eval_return: float) -> dict[str, Any]:
    return {"seed": seed, "precision": precision, "violations_after_warmup": falls, "eval_return": eval_return,
            "eval_violations": 0.0, "episode_returns": [1.0, 3.0], "wall_s": 10.0}


def test_the_summary_pairs_only_seeds_run_in_both_precisions() -> None:
    runs = [
        _run(0, "float32", 10, 100.0), _run(0, "bfloat16", 14, 90.0),
        _run(1, "float32", 20, 300.0), _run(1, "bfloat16", 18, 330.0),
        _run(2, "float32", 50, 0.0),
    ]

    summary = bench.summarise(runs)

    assert summary["paired_seeds"] == [0, 1]
    falls = summary["violations_after_warmup"]
    assert falls["float32"]["mean"] == pytest.approx(80 / 3) and falls["float32"]["n"] == 3
    assert falls["bfloat16"]["mean"] == pytest.approx(16.0)
    # differences +4 and -2: mean 1, sample sd sqrt(18), se 3
    assert falls["bfloat16_minus_float32"]["mean"] == pytest.approx(1.0)
    assert falls["bfloat16_minus_float32"]["se"] == pytest.approx(3.0)
    assert summary["eval_return"]["bfloat16_minus_float32"]["mean"] == pytest.approx(10.0)
    assert summary["last_10_train_returns"]["float32"]["mean"] == pytest.approx(2.0)


def test_a_seeds_two_precisions_share_the_warm_up() -> None:
    float32, bfloat16 = (bench.run_one(_spec(precision)) for precision in bench.PRECISIONS)

    # The warm-up's random actions come from the seed alone; only the updates after it differ.
    assert float32["violations_at_warmup_end"] == bfloat16["violations_at_warmup_end"]
    warmup_episodes = [step for step in float32["episode_end_steps"] if step <= 100]
    assert warmup_episodes == [step for step in bfloat16["episode_end_steps"] if step <= 100]


@pytest.mark.parametrize(
    "argv", [["--seeds", "0", "0"], ["--steps", "100", "--learning-starts", "100"], ["--jobs", "0"]]
)
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
