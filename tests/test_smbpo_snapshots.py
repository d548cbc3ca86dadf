"""benchmarks/smbpo_snapshots.py: a continued benchmark checkpoint, its training episodes and its snapshots' evaluations."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import pytest
from benchmark_modules import load_benchmark
from test_smbpo_benchmark import tiny_args

bench = load_benchmark("smbpo")
snapshots = load_benchmark("smbpo_snapshots")


@pytest.fixture(scope="module")
def sac_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("bench")
    args = argparse.Namespace(**{**vars(tiny_args(out_dir, resume=False)), "env": "SafeHopper-v0", "steps": 200})
    bench.train("sac", args)
    return out_dir / "sac_checkpoint" / "step_200"


def test_snapshots_are_taken_every_n_steps_and_each_is_evaluated_in_both_modes(sac_checkpoint: Path, tmp_path: Path) -> None:
    report = snapshots.main(["--algo", "sac", "--checkpoint", str(sac_checkpoint), "--steps", "60", "--every", "20",
                             "--episodes", "2", "--out", str(tmp_path)])

    assert report["start_step"] == 200
    assert list(report["snapshot_evals"]) == ["220", "240", "260"]
    for evaluation in report["snapshot_evals"].values():
        assert len(evaluation["det"]["returns"]) == len(evaluation["sampled"]["returns"]) == 2
    assert report["summary"]["det"]["snapshots"] == 3
    # SafeHopper-v0 ends an episode early only at a fall, so every recorded episode that ended early fell.
    starts = [200] + [e["end"] for e in report["episodes"][:-1]]
    for start, recorded in zip(starts, report["episodes"]):
        assert recorded["end"] - recorded["length"] == start
        assert recorded["fell"] == (recorded["length"] < 1000)
    assert report["episodes"], "an early SAC hopper falls within 60 steps"
    assert json.loads((tmp_path / "snapshots.json").read_text())["summary"] == report["summary"]
    assert (tmp_path / "snapshots.png").stat().st_size > 0


def test_an_episode_starts_from_its_reset_seed(sac_checkpoint: Path) -> None:
    model = bench.ALGORITHMS["sac"].load(sac_checkpoint / "model.zip", device="cpu")
    env = gym.make("SafeHopper-v0")

    first, again, other = (snapshots.episode(model, env, seed, True) for seed in (5, 5, 6))

    assert first == again
    assert first != other


def test_snapshot_spacing_must_fit_the_continuation() -> None:
    with pytest.raises(SystemExit):
        snapshots.parse_args(["--algo", "sac", "--checkpoint", "x", "--steps", "100", "--every", "250"])
