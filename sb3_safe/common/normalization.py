"""Normalisation statistics shared by the learned models (dynamics ensemble, mixture density networks)."""

from __future__ import annotations

import torch as th


def std_or_one(values: th.Tensor) -> th.Tensor:
    """Per-column standard deviation of ``values`` (rows are samples), 1 for (nearly) constant columns.

    A column that never varied in the data (a lidar bin that never fired, a velocity that stayed 0, an
    unused one-hot entry) must not be divided by a tiny spread: the first deviation in a model rollout
    would become a huge network input. MBPO's scaler makes the same choice. A single row counts as
    constant.

    :param values: shape ``(n, d)``
    :return: shape ``(d,)``
    """
    if values.shape[0] < 2:
        return th.ones_like(values[0])
    std = values.std(dim=0, unbiased=False)
    return th.where(std < 1e-6, th.ones_like(std), std)
