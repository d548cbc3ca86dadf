"""benchmarks/smbpo_snapshots.py: a continued benchmark checkpoint, its training episodes and its snapshots' evaluations."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import pytest
import torch as th
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
    # The Monitor's episode lengths tile the continuation from its start (the resume resets the env), and
    # SafeHopper-v0 ends an episode early only at a fall.
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


def test_each_snapshot_is_a_copy_of_the_weights_that_acted_at_its_step(sac_checkpoint: Path) -> None:
    model = bench.ALGORITHMS["sac"].load(sac_checkpoint / "model.zip", env=gym.make("SafeHopper-v0"), device="cpu")
    model.load_replay_buffer(sac_checkpoint / "replay_buffer.pkl")
    callback = snapshots.SnapshotCallback(every=5)
    acting: dict[int, dict] = {}

    class ActingWeights(snapshots.BaseCallback):  # type: ignore[misc]
        def _on_step(self) -> bool:
            acting[self.num_timesteps] = {k: v.clone() for k, v in self.model.actor.state_dict().items()}
            return True

    model.learn(10, callback=[ActingWeights(), callback], reset_num_timesteps=False)

    assert [step for step, _ in callback.snapshots] == [205, 210]
    for step, weights in callback.snapshots:
        assert all(th.equal(weights[k], acting[step][k]) for k in weights)
    first, last = (weights for _, weights in callback.snapshots)
    assert not all(th.equal(first[k], last[k]) for k in first), "training between snapshots changes the actor"
    assert not all(th.equal(last[k], v) for k, v in model.actor.state_dict().items()), "the last step's update comes after"


def test_the_callback_refuses_a_vec_env_of_several_envs(sac_checkpoint: Path) -> None:
    from stable_baselines3.common.env_util import make_vec_env

    model = bench.ALGORITHMS["sac"].load(sac_checkpoint / "model.zip", env=make_vec_env("SafeHopper-v0", 2), device="cpu")
    with pytest.raises(ValueError, match="one env"):
        model.learn(4, callback=snapshots.SnapshotCallback(every=2), reset_num_timesteps=False)
