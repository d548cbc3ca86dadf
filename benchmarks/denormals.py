"""SAC gradient steps with denormal floats kept and flushed, on the checkpoints of a long run.

Adam's moment estimates of weights with zero gradient decay into denormal floats, which x86 CPUs
process many times slower (``sb3_safe.common.float_modes``); how many there are depends on how long
the networks have trained, so a freshly built SAC shows none of it. This script loads checkpoints
written by ``benchmarks/smbpo.py`` (``--checkpoint-every``): an SMBPO one (whose SAC step is
``fused_sac_train`` or SB3's ``SAC.train``, as the run used) and/or an SB3 SAC one. For each it:

* counts the denormal entries of the actor's and critics' Adam moments (``exp_avg``, ``exp_avg_sq``);
* loads a second copy, since a step with denormals flushed rewrites the optimiser state (flushed
  moments stay zero) and the two variants must not share it;
* times ``--updates`` gradient steps of each copy, ``--repeats`` times in turns, one with denormals
  kept and one with them flushed (``denormals_flushed``), the setting SMBPO's ``train`` uses.

Writes ``<out>/denormals.json`` (counts before and after, every timing, medians, flushed / kept) and
``<out>/denormals.png``.

Usage::

    python benchmarks/denormals.py --smbpo-checkpoint bench_out/run/smbpo_checkpoint/step_65000 \\
        --sac-checkpoint bench_out/run/sac_checkpoint/step_65000 --out bench_out/denormals
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch as th
from bench_plots import saved_figure
from sac_update import cpu_model
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure

import sb3_safe  # noqa: F401 - registers the safe envs
from sb3_safe.common.float_modes import denormals_flushed
from sb3_safe.smbpo import SMBPO

FLOAT32_EXPONENT_BITS = 0x7F800000
FLOAT32_MANTISSA_BITS = 0x007FFFFF
VARIANTS = {"kept": False, "flushed": True}


def load_checkpoint(algo_class: type[SAC], folder: Path, env_id: str) -> SAC:
    """A model and its replay buffer(s) from a ``benchmarks/smbpo.py`` checkpoint folder, ready to train."""
    model = algo_class.load(folder / "model.zip", env=gym.make(env_id), device="cpu")
    model.load_replay_buffer(folder / "replay_buffer.pkl")
    model.set_logger(configure(None, []))
    return model


def count_denormals(values: th.Tensor) -> int:
    """Denormal entries of a float32 tensor, read from the bits (exponent 0, mantissa not 0), so that the
    count holds whatever the thread's denormal setting (with flushing on, comparisons see them as 0)."""
    bits = values.detach().float().contiguous().view(th.int32)
    return int(((bits & FLOAT32_EXPONENT_BITS == 0) & (bits & FLOAT32_MANTISSA_BITS != 0)).sum())


def denormal_counts(model: SAC) -> dict[str, int]:
    """Denormal entries of the actor's and critics' Adam moments, and how many entries they have."""
    counts = {"exp_avg": 0, "exp_avg_sq": 0, "entries": 0}
    for optimizer in (model.actor.optimizer, model.critic.optimizer):
        for state in optimizer.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                counts[key] += count_denormals(state[key])
                counts["entries"] += state[key].numel()
    return counts


def sac_step(model: SAC) -> Callable[[int, int], None]:
    """The gradient step the model trains with: SMBPO's (fused or SB3's, without its denormal setting)
    or SB3's ``SAC.train``."""
    return model._sac_update if isinstance(model, SMBPO) else model.train


def ms_per_update(step: Callable[[int, int], None], flush: bool, updates: int, batch_size: int) -> float:
    """Wall-clock ms per gradient step of ``updates`` steps with denormals flushed (``flush``) or kept."""
    with denormals_flushed(flush):
        start = time.perf_counter()
        step(updates, batch_size)
        return 1e3 * (time.perf_counter() - start) / updates


def measure(algo_class: type[SAC], folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Counts and timings of one checkpoint, both variants from their own copy of it, timed in turns
    whose order alternates between repeats (so that a drift of the machine's speed hits both)."""
    models = {name: load_checkpoint(algo_class, folder, args.env) for name in VARIANTS}
    counts_before, updates_before = denormal_counts(models["kept"]), models["kept"]._n_updates
    timings: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):
        order = list(VARIANTS.items()) if repeat % 2 == 0 else list(reversed(VARIANTS.items()))
        for name, flush in order:
            timings[name].append(ms_per_update(sac_step(models[name]), flush, args.updates, args.batch_size))
    median_ms = {name: statistics.median(values) for name, values in timings.items()}
    return {
        "checkpoint": str(folder),
        "num_timesteps": models["kept"].num_timesteps,
        "sac_updates_before": updates_before,
        "fused_sac_update": bool(getattr(models["kept"], "fused_sac_update", False)),
        "denormals_before": counts_before,
        "denormals_after": {name: denormal_counts(model) for name, model in models.items()},
        "ms_per_update": timings,
        "median_ms_per_update": median_ms,
        "flushed_over_kept": median_ms["flushed"] / median_ms["kept"],
    }


def plot(results: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """Bar chart of the median ms per gradient step of every checkpoint and variant."""
    with saved_figure(path, figsize=(6, 3.5), dpi=120) as (fig, ax):
        labels, heights, colors = [], [], []
        for algo, result in results.items():
            for name, color in zip(VARIANTS, ("tab:gray", "tab:blue")):
                labels.append(f"{algo}\n{name}")
                heights.append(result["median_ms_per_update"][name])
                colors.append(color)
        ax.bar(labels, heights, color=colors)
        ax.set_ylabel("ms per gradient step (median)")
        ax.set_title(title, fontsize=9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="SafeHopper-v0")
    parser.add_argument("--smbpo-checkpoint", type=Path, help="an SMBPO checkpoint folder (model.zip, replay_buffer.pkl)")
    parser.add_argument("--sac-checkpoint", type=Path, help="an SB3 SAC checkpoint folder")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--updates", type=int, default=50, help="gradient steps per timing")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("bench_out/denormals"))
    args = parser.parse_args()
    checkpoints = {"smbpo": (SMBPO, args.smbpo_checkpoint), "sac": (SAC, args.sac_checkpoint)}
    checkpoints = {algo: entry for algo, entry in checkpoints.items() if entry[1] is not None}
    if not checkpoints:
        parser.error("give --smbpo-checkpoint and/or --sac-checkpoint")
    th.set_num_threads(args.threads)

    results = {algo: measure(algo_class, folder, args) for algo, (algo_class, folder) in checkpoints.items()}
    report = {
        "config": {key: str(value) for key, value in vars(args).items()},
        "machine": {"cpu": cpu_model(), "torch": th.__version__, "torch_threads": th.get_num_threads()},
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "denormals.json").write_text(json.dumps(report, indent=1))
    plot(results, args.out / "denormals.png", f"SAC gradient step, {args.env}, batch {args.batch_size}, denormals kept / flushed")
    summary = {
        algo: {key: result[key] for key in ("denormals_before", "median_ms_per_update", "flushed_over_kept")}
        for algo, result in results.items()
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
