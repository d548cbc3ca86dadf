"""GuSS's training-log metrics (sb3_safe.common.metrics) on hand-made logs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sb3_safe.common.metrics import (
    TrainingLog,
    mean_asymptotic_reward,
    mean_p_unsafe,
    mean_reward_convergence_pace,
    summarize,
    transient_p_unsafe,
)

# 8 epochs; mean reward per step = return / length.
RETURNS = [-800.0, -600.0, -400.0, -300.0, -200.0, -100.0, -50.0, -10.0]
LENGTHS = [200, 200, 200, 200, 100, 100, 100, 100]
UNSAFE = [20, 10, 0, 0, 10, 0, 0, 0]


def hand_log() -> TrainingLog:
    return TrainingLog(np.array(RETURNS), np.array(LENGTHS), np.array(UNSAFE))


def test_mar_is_the_mean_reward_per_step_over_the_second_half() -> None:
    # Epochs 4..7: -2, -1, -0.5, -0.1.
    assert mean_asymptotic_reward(hand_log()) == pytest.approx((-2.0 - 1.0 - 0.5 - 0.1) / 4)


def test_mrcp_counts_real_steps_until_the_threshold() -> None:
    log = hand_log()
    # Mean rewards: -4, -3, -2, -1.5, -2, -1, -0.5, -0.1; -1.5 is first reached at epoch 3.
    assert mean_reward_convergence_pace(log, -1.5) == 800.0
    assert mean_reward_convergence_pace(log, -4.0) == 200.0
    assert mean_reward_convergence_pace(log, 0.0) == math.inf


def test_p_unsafe_and_its_transient_value() -> None:
    log = hand_log()
    np.testing.assert_allclose(log.p_unsafe, [10.0, 5.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0])
    assert mean_p_unsafe(log) == pytest.approx(25.0 / 8)
    # 15% of 8 epochs -> ceil(1.2) = 2 epochs.
    assert transient_p_unsafe(log) == pytest.approx(7.5)
    assert transient_p_unsafe(log, fraction=0.5) == pytest.approx(3.75)
    summary = summarize(log, reward_threshold=-1.5)
    assert summary["mrcp"] == 800.0 and summary["n_epochs"] == 8 and summary["n_steps"] == 1200
    assert math.isnan(summarize(log)["mrcp"])


def test_logs_from_records_and_monitor_csv(tmp_path: Path) -> None:
    records = [{"return": r, "length": l, "violations": u} for r, l, u in zip(RETURNS, LENGTHS, UNSAFE)]
    assert mean_p_unsafe(TrainingLog.from_records(records)) == mean_p_unsafe(hand_log())
    with pytest.raises(KeyError, match="violations"):
        TrainingLog.from_records([{"return": 1.0, "length": 2}])
    monitor = tmp_path / "0.monitor.csv"
    rows = "\n".join(f"{r},{l},{i}.0,{u}" for i, (r, l, u) in enumerate(zip(RETURNS, LENGTHS, UNSAFE)))
    monitor.write_text('#{"t_start": 0, "env_id": "SafePendulum-v0"}\nr,l,t,c\n' + rows + "\n")
    assert mean_asymptotic_reward(TrainingLog.from_monitor_csv(monitor)) == mean_asymptotic_reward(hand_log())
    no_cost = tmp_path / "plain.monitor.csv"
    no_cost.write_text("#{}\nr,l,t\n1.0,10,0.1\n")
    with pytest.raises(ValueError, match="r, l and v"):
        TrainingLog.from_monitor_csv(no_cost)


def test_bad_logs_are_rejected() -> None:
    with pytest.raises(ValueError, match="one entry per epoch"):
        TrainingLog(np.zeros(3), np.ones(2), np.zeros(3))
    with pytest.raises(ValueError, match="positive length"):
        TrainingLog(np.zeros(2), np.array([1.0, 0.0]), np.zeros(2))
    with pytest.raises(ValueError, match="between 0 and the epoch length"):
        TrainingLog(np.zeros(1), np.array([5.0]), np.array([6.0]))
    with pytest.raises(ValueError, match="no epoch"):
        TrainingLog(np.zeros(0), np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="fraction"):
        transient_p_unsafe(hand_log(), fraction=0.0)
