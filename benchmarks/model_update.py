"""Time and profile the dynamics ensemble's update (``fit_ensemble``), with and without denormals flushed.

SMBPO fits its ensemble in a thread that flushes denormal floats to zero (``torch.set_flush_denormal``,
a per-thread setting). This script measures what that buys: it fits an ensemble of the paper's size
(5 members, 3 x 200 trunk, 200-unit heads, batch 256 per member, fused Adam) on synthetic transitions
of ``--obs-dim`` / ``--action-dim``, with the flag off and with it on (set around each call). Each
variant first trains ``--pretrain`` updates (Adam's moments of weights with zero gradient, fed by dead
ReLU units, decay during training: that is where denormals come from), then times ``--repeats`` fits of ``--updates`` updates,
the two variants in turns, and profiles one more fit with the torch profiler. Writes
``<out>/model_update.json`` (ms per update of every timing, the median, and the ten operators with the
largest self time per update) and ``<out>/model_update.png``.

Usage::

    python benchmarks/model_update.py --precision bfloat16 --out bench_out/model_update
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch as th
from bench_plots import saved_figure
from torch.profiler import profile

from sb3_safe.common.dynamics import GaussianEnsemble, fit_ensemble
from sb3_safe.common.float_modes import denormals_flushed


class EnsembleFit:
    """An ensemble, its fused Adam and synthetic data, fitted with denormals flushed or kept."""

    def __init__(self, args: argparse.Namespace, flush_denormal: bool) -> None:
        generator = th.Generator().manual_seed(args.seed)
        n = args.transitions
        self.obs = th.randn(n, args.obs_dim, generator=generator)
        self.actions = th.rand(n, args.action_dim, generator=generator) * 2 - 1
        self.next_obs = self.obs + 0.1 * th.randn(n, args.obs_dim, generator=generator)
        self.rewards = th.randn(n, generator=generator)
        th.manual_seed(args.seed)
        self.model = GaussianEnsemble(args.obs_dim, args.action_dim, precision=args.precision)
        self.optimizer = th.optim.Adam(self.model.parameters(), lr=1e-3, fused=True)
        self.batch_size = args.batch_size
        self.flush_denormal = flush_denormal

    def _fit(self, n_updates: int) -> None:
        with denormals_flushed(self.flush_denormal):
            fit_ensemble(
                self.model, self.optimizer, self.obs, self.actions, self.next_obs, self.rewards, n_updates,
                batch_size=self.batch_size,
            )

    def ms_per_update(self, n_updates: int) -> float:
        start = time.perf_counter()
        self._fit(n_updates)
        return 1e3 * (time.perf_counter() - start) / n_updates

    def profile_top_ops(self, n_updates: int, n_ops: int = 10) -> dict[str, float]:
        """Self CPU ms per update of the ``n_ops`` operators that take the most."""
        with profile() as prof:
            self._fit(n_updates)
        rows = sorted(prof.key_averages(), key=lambda row: row.self_cpu_time_total, reverse=True)
        return {row.key: row.self_cpu_time_total / 1e3 / n_updates for row in rows[:n_ops]}


def plot(report: dict[str, Any], path: Path, title: str) -> None:
    variants = list(report["median_ms_per_update"])
    ops = sorted({op for variant in variants for op in report["top_ops_ms_per_update"][variant]})
    with saved_figure(path, figsize=(8.5, 4), dpi=120) as (fig, ax):
        bottom = [0.0] * len(variants)
        for op in ops:
            heights = [report["top_ops_ms_per_update"][variant].get(op, 0.0) for variant in variants]
            ax.bar(variants, heights, bottom=bottom, label=op)
            bottom = [b + h for b, h in zip(bottom, heights)]
        ax.set_ylabel("self CPU ms per update (top operators)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obs-dim", type=int, default=11, help="SafeHopper-v0: 11")
    parser.add_argument("--action-dim", type=int, default=3, help="SafeHopper-v0: 3")
    parser.add_argument("--transitions", type=int, default=5000)
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--pretrain", type=int, default=2000, help="untimed updates first")
    parser.add_argument("--updates", type=int, default=100, help="updates per timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_out/model_update"))
    args = parser.parse_args()
    th.set_num_threads(1)

    fits = {"denormals_kept": EnsembleFit(args, False), "denormals_flushed": EnsembleFit(args, True)}
    for fit in fits.values():
        fit.ms_per_update(args.pretrain)
    timings: dict[str, list[float]] = {name: [] for name in fits}
    for _ in range(args.repeats):
        for name, fit in fits.items():
            timings[name].append(fit.ms_per_update(args.updates))
    report: dict[str, Any] = {
        "config": {key: str(value) for key, value in vars(args).items()},
        "torch": th.__version__,
        "ms_per_update": timings,
        "median_ms_per_update": {name: statistics.median(values) for name, values in timings.items()},
        "top_ops_ms_per_update": {name: fit.profile_top_ops(args.updates) for name, fit in fits.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_update.json").write_text(json.dumps(report, indent=1))
    plot(report, args.out / "model_update.png", f"ensemble update, {args.precision}, batch {args.batch_size}, 1 thread")
    print(json.dumps({key: report[key] for key in ("median_ms_per_update", "top_ops_ms_per_update")}, indent=1))


if __name__ == "__main__":
    main()
