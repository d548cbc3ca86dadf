"""The README's demo (``examples/train_safe_agent.py``) runs end to end on a short budget."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "examples" / "train_safe_agent.py"


@pytest.mark.parametrize("algo", ["ppo_lag", "ppo"])
def test_demo_prints_return_cost_and_violations(algo: str, tmp_path: Path) -> None:
    args = ["--algo", algo, "--timesteps", "2048", "--eval-episodes", "2"]
    result = subprocess.run(
        [sys.executable, str(DEMO), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    # PPO finishes its last rollout (4 envs x 1024 steps), so 2048 steps become 4096.
    assert lines[0].startswith(f"{algo} on SafePendulum-v0, 4096 steps, seed 0")
    assert ("cost limit 0.3 per episode" in lines[0]) == (algo == "ppo_lag")
    assert re.fullmatch(r"training: \d+ violations, cost rate [\d.]+ per step", lines[1])
    evaluation = r"evaluation over 2 episodes: return -?[\d.]+, cost [\d.]+, violations [\d.]+ per episode"
    assert re.fullmatch(evaluation, lines[2])


def test_demo_rejects_an_env_without_an_entry(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO), "--env", "CartPole-v1"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "ppo_lag.yml has no entry for CartPole-v1" in result.stderr
