"""Tests of the persistent train / held-out split (sb3_safe.common.holdout)."""

from __future__ import annotations

import pytest
import torch as th

from sb3_safe.common.holdout import persistent_holdout_split


def test_the_split_holds_out_the_fraction_spread_over_the_rows() -> None:
    holdout, train = persistent_holdout_split(2000, 0.1)
    assert len(holdout) == 200 and len(train) == 1800
    assert th.equal(th.sort(th.cat([holdout, train])).values, th.arange(2000))
    per_block = th.bincount(holdout // 500, minlength=4)
    assert bool(((per_block >= 45) & (per_block <= 55)).all())


def test_rows_keep_their_side_when_rows_are_appended() -> None:
    small_holdout, small_train = persistent_holdout_split(500, 0.2)
    large_holdout, large_train = persistent_holdout_split(3000, 0.2)
    assert th.equal(large_holdout[large_holdout < 500], small_holdout)
    assert th.equal(large_train[large_train < 500], small_train)


def test_the_cap_keeps_the_earliest_held_out_rows() -> None:
    uncapped, _ = persistent_holdout_split(1000, 0.1)
    capped, train = persistent_holdout_split(1000, 0.1, max_holdout=30)
    assert th.equal(capped, uncapped[:30])
    assert len(train) == 970


def test_at_least_one_row_trains_and_bad_fractions_are_refused() -> None:
    holdout, train = persistent_holdout_split(1, 0.9)
    assert len(holdout) == 0 and th.equal(train, th.tensor([0]))
    assert len(persistent_holdout_split(50, 0.0)[0]) == 0
    with pytest.raises(ValueError, match="holdout_fraction"):
        persistent_holdout_split(10, 1.0)
    with pytest.raises(ValueError, match="at least one row"):
        persistent_holdout_split(0, 0.1)
