"""A train / held-out split of a growing data set that keeps every row on its side.

Model-based agents refit their (warm-started) models on all data collected so far. If each fit
drew a fresh random held-out slice, most of it would be rows the model trained on in earlier
fits, and the held-out error (SMBPO's ``train/model_holdout_mse``, the early stopping of GuSS's
MDN) would measure memorisation rather than generalisation. Here the side of a row depends only
on its index, so rows appended later never move rows already held out into training.
"""

from __future__ import annotations

import math

import torch as th

_GOLDEN_FRACTION = (math.sqrt(5.0) - 1.0) / 2.0


def persistent_holdout_split(
    n_rows: int,
    holdout_fraction: float,
    max_holdout: int | None = None,
    device: th.device | str | None = None,
) -> tuple[th.Tensor, th.Tensor]:
    """Indices of the held-out and the training rows among rows ``0 .. n_rows - 1``.

    Row ``i`` is held out when the fractional part of ``(i + 1) * 0.618...`` (a Weyl sequence, spread
    evenly over the rows at every length) is below ``holdout_fraction``; with ``max_holdout``
    only the first ``max_holdout`` such rows are held out and later ones train. The split of the
    first ``n`` rows is therefore the same for every longer data set, as long as rows are only
    appended (a replay buffer that wraps around reuses indices). At least one row trains.

    :param n_rows: number of rows
    :param holdout_fraction: share of the rows held out, in [0, 1)
    :param max_holdout: cap on the number of held-out rows (None: no cap)
    :param device: device of the returned index tensors
    :return: ``(holdout_idx, train_idx)``, both sorted
    """
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    if n_rows < 1:
        raise ValueError(f"need at least one row to split, got {n_rows}")
    rows = th.arange(n_rows, device=device)
    held_out = th.frac((rows + 1).double() * _GOLDEN_FRACTION) < holdout_fraction
    if max_holdout is not None:
        held_out &= th.cumsum(held_out, dim=0) <= max_holdout
    if held_out.all():
        held_out[-1] = False
    return rows[held_out], rows[~held_out]
