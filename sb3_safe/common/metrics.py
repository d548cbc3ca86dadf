"""Training-log metrics of GuSS (SPEC.md 3): MAR, MRCP(τ), p(unsafe) and its transient value.

Reference: Paolo et al., "Guided Safe Shooting" (2022), supplementary section 4. An *epoch* is
one training episode. For epoch ``e`` with summed reward ``R_e`` over ``L_e`` steps, of which
``U_e`` were unsafe:

- mean reward ``r_e = R_e / L_e``;
- MAR = mean of ``r_e`` over the second half of the epochs (``e >= E // 2``);
- MRCP(τ) = real env steps (summed ``L_e`` up to and including the first epoch with
  ``r_e >= τ``), infinite if never reached;
- p(unsafe)_e = 100 ``U_e / L_e`` (a percentage); the transient p(unsafe) is its mean over the first
  15 % of the epochs (at least one epoch).

The log can come from any algorithm: :meth:`TrainingLog.from_records` reads the
``training_log`` of the sb3-safe shooting algorithms (or any list of per-episode dicts) and
:meth:`TrainingLog.from_monitor_csv` reads an SB3 ``Monitor`` CSV whose rows carry ``r``, ``l``
and the sb3-safe episode statistics ``v`` (violating steps) or ``c`` (summed cost).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TrainingLog:
    """Per-epoch (per training episode) totals of a training run.

    :param returns: summed reward of each epoch
    :param lengths: number of env steps of each epoch (> 0)
    :param unsafe_steps: number of unsafe (violating) steps of each epoch
    """

    returns: np.ndarray
    lengths: np.ndarray
    unsafe_steps: np.ndarray

    def __post_init__(self) -> None:
        returns = np.asarray(self.returns, dtype=np.float64).reshape(-1)
        lengths = np.asarray(self.lengths, dtype=np.float64).reshape(-1)
        unsafe = np.asarray(self.unsafe_steps, dtype=np.float64).reshape(-1)
        if not (len(returns) == len(lengths) == len(unsafe)):
            raise ValueError(
                f"TrainingLog: returns, lengths and unsafe_steps need one entry per epoch, got "
                f"{len(returns)}, {len(lengths)} and {len(unsafe)}"
            )
        if len(returns) == 0:
            raise ValueError("TrainingLog: the log has no epoch")
        if (lengths <= 0).any():
            raise ValueError("TrainingLog: every epoch needs a positive length")
        if (unsafe < 0).any() or (unsafe > lengths).any():
            raise ValueError("TrainingLog: unsafe_steps must be between 0 and the epoch length")
        if not (np.isfinite(returns).all() and np.isfinite(lengths).all() and np.isfinite(unsafe).all()):
            raise ValueError("TrainingLog: the log contains NaN or infinite values")
        object.__setattr__(self, "returns", returns)
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "unsafe_steps", unsafe)

    @property
    def n_epochs(self) -> int:
        """Number of epochs in the log."""
        return len(self.returns)

    @classmethod
    def from_records(
        cls,
        records: Sequence[Mapping[str, float]],
        return_key: str = "return",
        length_key: str = "length",
        unsafe_key: str = "violations",
    ) -> TrainingLog:
        """Build a log from per-episode dicts (e.g. a shooting algorithm's ``training_log``).

        :param records: one mapping per epoch
        :param return_key: key of the summed reward
        :param length_key: key of the episode length
        :param unsafe_key: key of the number of unsafe steps
        :return: the log
        """
        try:
            return cls(
                np.array([r[return_key] for r in records], dtype=np.float64),
                np.array([r[length_key] for r in records], dtype=np.float64),
                np.array([r[unsafe_key] for r in records], dtype=np.float64),
            )
        except KeyError as exc:
            raise KeyError(f"TrainingLog.from_records: an epoch record lacks the key {exc}") from exc

    @classmethod
    def from_monitor_csv(cls, path: str | Path) -> TrainingLog:
        """Read an SB3 ``Monitor`` CSV (first line a JSON comment, then ``r,l,t,...`` rows).

        Unsafe steps come from the ``v`` column (violating steps, sb3-safe's episode statistic),
        else from ``c`` (summed cost, equal to the unsafe step count for 0/1 step costs).

        :param path: the ``*.monitor.csv`` file
        :return: the log
        """
        with open(path, newline="") as handle:
            lines = [line for line in handle if not line.startswith("#")]
        rows = list(csv.DictReader(lines))
        if not rows:
            raise ValueError(f"{path}: no episode rows")
        columns = rows[0].keys()
        unsafe_column = "v" if "v" in columns else "c" if "c" in columns else None
        if unsafe_column is None or "r" not in columns or "l" not in columns:
            raise ValueError(
                f"{path}: a monitor log needs the columns r, l and v (or c); got {sorted(columns)}. "
                "Record episode costs with sb3-safe's monitor/cost wrappers."
            )
        return cls(
            np.array([float(row["r"]) for row in rows]),
            np.array([float(row["l"]) for row in rows]),
            np.array([float(row[unsafe_column]) for row in rows]),
        )

    @property
    def mean_rewards(self) -> np.ndarray:
        """Mean reward per step of each epoch, ``R_e / L_e``."""
        return self.returns / self.lengths

    @property
    def p_unsafe(self) -> np.ndarray:
        """Percentage of unsafe steps of each epoch, ``100 U_e / L_e``."""
        return 100.0 * self.unsafe_steps / self.lengths


def mean_asymptotic_reward(log: TrainingLog) -> float:
    """MAR: the mean per-step reward over the second half of the epochs (``e >= E // 2``).

    :param log: the training log
    :return: the MAR
    """
    return float(log.mean_rewards[log.n_epochs // 2 :].mean())


def mean_reward_convergence_pace(log: TrainingLog, threshold: float) -> float:
    """MRCP(τ): real env steps until an epoch's mean per-step reward first reaches ``threshold``.

    :param log: the training log
    :param threshold: the env-specific reward threshold τ (per step)
    :return: summed epoch lengths up to and including that epoch, or ``inf`` if never reached
    """
    reached = np.flatnonzero(log.mean_rewards >= threshold)
    if len(reached) == 0:
        return math.inf
    return float(log.lengths[: reached[0] + 1].sum())


def mean_p_unsafe(log: TrainingLog) -> float:
    """p(unsafe) over the whole run: the mean over epochs of the per-epoch unsafe percentage."""
    return float(log.p_unsafe.mean())


def transient_p_unsafe(log: TrainingLog, fraction: float = 0.15) -> float:
    """Transient p(unsafe): the mean unsafe percentage over the first ``fraction`` of the epochs.

    :param log: the training log
    :param fraction: share of the epochs counted as the transient (0.15 in the paper)
    :return: the mean over the first ``max(1, ceil(fraction * E))`` epochs
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = max(1, math.ceil(fraction * log.n_epochs))
    return float(log.p_unsafe[:n].mean())


def summarize(
    log: TrainingLog, reward_threshold: float | None = None, transient_fraction: float = 0.15
) -> dict[str, float]:
    """All the metrics of a run in one dict (keys ``mar``, ``mrcp``, ``p_unsafe``, ``transient_p_unsafe``).

    :param log: the training log
    :param reward_threshold: τ of MRCP; without it ``mrcp`` is NaN
    :param transient_fraction: share of the epochs of the transient p(unsafe)
    :return: the metrics
    """
    return {
        "mar": mean_asymptotic_reward(log),
        "mrcp": math.nan if reward_threshold is None else mean_reward_convergence_pace(log, reward_threshold),
        "p_unsafe": mean_p_unsafe(log),
        "transient_p_unsafe": transient_p_unsafe(log, transient_fraction),
        "n_epochs": float(log.n_epochs),
        "n_steps": float(log.lengths.sum()),
    }
