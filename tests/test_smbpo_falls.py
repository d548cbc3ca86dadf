"""The SMBPO fall analysis: the simulator state it rebuilds from observations is the real one."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from benchmark_modules import load_benchmark
from test_smbpo import TINY

import sb3_safe  # noqa: F401 - registers the safe envs
from sb3_safe.smbpo import SMBPO

falls = load_benchmark("smbpo_falls")


@pytest.fixture(scope="module")
def hopper_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("smbpo_checkpoint")
    model = SMBPO("MlpPolicy", "SafeHopper-v0", **TINY)
    model.learn(300)  # random warm-up actions make the hopper fall every few dozen steps
    model.save(folder / "model.zip")
    model.save_replay_buffer(folder / "replay_buffer.pkl")
    return folder


def test_restored_state_reproduces_the_recorded_step() -> None:
    env = gym.make("SafeHopper-v0")
    obs, _ = env.reset(seed=3)
    action = np.full(env.action_space.shape, 0.5, dtype=np.float32)
    expected = env.step(action)[0]
    other = gym.make("SafeHopper-v0")
    other.reset(seed=99)
    falls.restore_state(other, obs)
    np.testing.assert_allclose(other.step(action)[0], expected, atol=1e-12)


def test_restore_state_refuses_an_observation_without_the_full_state() -> None:
    env = gym.make("SafeHopper-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        falls.restore_state(env, np.zeros(5))


def test_analysis_replays_every_fall_exactly(hopper_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "falls"
    report = falls.main([
        "--checkpoint", str(hopper_checkpoint), "--window", "300", "--look-back", "1", "3", "--reps", "4",
        "--real-reps", "1", "--recovery-steps", "20", "--controls", "3", "--out", str(out),
    ])
    assert report["falls_in_window"] > 0
    for row in report["look_back"]:
        if row["n_falls"]:
            assert row["replay_check"] == 1.0  # the recorded actions fall at exactly step k again
            assert 0.0 <= row["model_hit_rate"] <= 1.0
    assert report["absorbing_value"] == pytest.approx(-report["penalty_c"] / 0.01)
    assert json.loads(out.with_suffix(".json").read_text())["look_back"] == report["look_back"]
    assert out.with_suffix(".png").stat().st_size > 0


def test_recovery_window_must_cover_the_look_back() -> None:
    with pytest.raises(SystemExit):
        falls.parse_args(["--checkpoint", "x", "--out", "y", "--look-back", "50", "--recovery-steps", "50"])
