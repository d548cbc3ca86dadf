"""benchmarks/guss_true_model.py: planners with the exact model, summarised against CEM."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmark_modules import load_benchmark

true_model_benchmark = load_benchmark("guss_true_model")


def run(seed: int, step_reward: float, unsafe_steps: int) -> dict:
    length = true_model_benchmark.EPISODE_LENGTH
    return {"seed": seed, "episode_returns": [step_reward * length] * 2,
            "episode_unsafe_steps": [unsafe_steps] * 2, "steps_per_cpu_s": 100.0}


def test_summary_compares_with_cem_for_negative_rewards_too() -> None:
    runs = {
        "SafePendulum-v0": {
            "cem": [run(0, -1.0, 4), run(1, -1.0, 0)],
            "guss": [run(0, -1.1, 1), run(1, -1.1, 0)],
        },
        "SafeAcrobot-v0": {"cem": [run(0, 2.0, 20)], "rcem": [run(0, 1.6, 2)]},
    }
    summary = true_model_benchmark.summarise(runs)
    guss = summary["SafePendulum-v0"]["guss"]
    assert guss["mean_step_reward"] == pytest.approx(-1.1)
    assert guss["reward_over_cem"] == pytest.approx(0.9)  # 10 % less reward than CEM
    assert guss["p_unsafe"] == pytest.approx(0.25) and guss["p_unsafe_over_cem"] == pytest.approx(0.25)
    assert summary["SafeAcrobot-v0"]["rcem"]["reward_over_cem"] == pytest.approx(0.8)
    assert summary["SafeAcrobot-v0"]["rcem"]["p_unsafe_over_cem"] == pytest.approx(0.1)
    assert "reward_over_cem" not in summary["SafeAcrobot-v0"]["cem"]


def test_script_plays_real_episodes_and_merges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["guss_true_model.py", "--envs", "SafePendulum-v0", "--algos", "rs", "--seeds", "0", "--episodes", "1",
            "--params", "n_sequences=20", "--label", "rs_20", "--out", str(tmp_path / "a")]
    monkeypatch.setattr(sys, "argv", argv)
    true_model_benchmark.main()
    saved = json.loads((tmp_path / "a" / "guss_true_model.json").read_text())
    (record,) = saved["runs"]["SafePendulum-v0"]["rs_20"]
    assert len(record["episode_returns"]) == 1 and record["episode_returns"][0] < 0
    assert 0 <= record["episode_unsafe_steps"][0] <= true_model_benchmark.EPISODE_LENGTH
    assert (tmp_path / "a" / "guss_true_model.png").stat().st_size > 0
    monkeypatch.setattr(sys, "argv", [*argv[:6], "1", *argv[7:-1], str(tmp_path / "b")])  # seed 1 into b
    true_model_benchmark.main()
    monkeypatch.setattr(sys, "argv", ["guss_true_model.py", "--merge", str(tmp_path / "a"), str(tmp_path / "b"),
                                      "--out", str(tmp_path / "m")])
    true_model_benchmark.main()
    merged = json.loads((tmp_path / "m" / "guss_true_model.json").read_text())
    assert [run["seed"] for run in merged["runs"]["SafePendulum-v0"]["rs_20"]] == [0, 1]
    monkeypatch.setattr(sys, "argv", ["guss_true_model.py", "--merge", str(tmp_path / "a"), str(tmp_path / "a"),
                                      "--out", str(tmp_path / "twice")])
    with pytest.raises(ValueError, match="the same run twice"):
        true_model_benchmark.main()
    monkeypatch.setattr(sys, "argv", [*argv[:6], "2", *argv[7:10], "n_sequences=30", *argv[11:-1], str(tmp_path / "c")])
    true_model_benchmark.main()  # seed 2 of rs_20 with other --params
    monkeypatch.setattr(sys, "argv", ["guss_true_model.py", "--merge", str(tmp_path / "a"), str(tmp_path / "c"),
                                      "--out", str(tmp_path / "mixed")])
    with pytest.raises(ValueError, match="different --params for rs_20"):
        true_model_benchmark.main()


def test_a_label_needs_a_single_planner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["guss_true_model.py", "--algos", "rs", "cem", "--label", "x"])
    with pytest.raises(SystemExit):
        true_model_benchmark.main()
