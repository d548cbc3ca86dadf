"""Does computing SAC's hidden layers in bfloat16 change what SAC learns? Paired seeds, float32 against bfloat16.

SMBPO's ``sac_hidden_precision="bfloat16"`` (not in the paper) runs the 256 x 256 layers of the actor and both
critics in bfloat16 inside the hand-written SAC step of ``sb3_safe.common.sac_update``; a test bounds the
rounding of one update, but whether it changes the course of training is a question about many runs.
SMBPO runs take hours here, so this script asks it of SAC alone, whose updates are the same step: for
each seed, a SAC with the hand-written step in float32 and one in bfloat16 train from the same seed (the
same warm-up, then paths that the rounding alone separates), and the script reports per precision the
falls after the warm-up, the final deterministic evaluation return and the training returns, with the
paired differences (bfloat16 minus float32) and their standard errors across seeds.

Settings of the SAC part of SMBPO's benchmark runs (``benchmarks/smbpo.py``: SMBPO's per-env target entropy,
2 x 256 networks, batch 256, critic learning rate 3e-4, 1e6 buffer, and, as its ``fused_sac_update``, fused Adam),
except that the actor's learning rate is the critic's (SB3's single one; SMBPO's is 1e-4), that the SAC
optimisers' denormal floats are not flushed (SMBPO flushes them, which matters mostly for the speed), and
``--gradient-steps`` updates per env step. Runs go to ``--jobs`` worker processes with one torch thread each; with
more than one, the wall times are those of processes sharing the machine. Writes ``<out>/sac_precision.json`` (every run's
trace and the summary) and ``<out>/sac_precision.png`` (cumulative falls and evaluation returns).

Usage::

    python benchmarks/sac_precision.py --env SafeHopper-v0 --steps 30000 --seeds 0 1 2 3 --jobs 2 --out bench_out/sac_precision
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from bench_plots import saved_figure
from bench_pool import imap_runs
from smbpo import RunTrace, TraceCallback, final_evaluation
from stable_baselines3 import SAC

import sb3_safe  # noqa: F401 - registers the safe envs
from sb3_safe.common.sac_update import mlp_fused_sac_train

PRECISIONS = ("float32", "bfloat16")


class HandWrittenSAC(SAC):
    """SB3's SAC whose updates are :func:`~sb3_safe.common.sac_update.mlp_fused_sac_train`, the step SMBPO's
    ``fused_sac_update`` runs, with its hidden layers in ``hidden_precision``."""

    def __init__(self, *args: Any, hidden_precision: str = "float32", **kwargs: Any) -> None:
        self.hidden_precision = hidden_precision
        super().__init__(*args, **kwargs)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        mlp_fused_sac_train(self, gradient_steps, batch_size, self.hidden_precision)


@dataclass(frozen=True)
class RunSpec:
    env_id: str
    seed: int
    precision: str
    total_steps: int
    learning_starts: int
    gradient_steps: int
    target_entropy: float
    eval_episodes: int


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Train one (seed, precision) run and evaluate it."""
    model = HandWrittenSAC(
        "MlpPolicy",
        gym.make(spec.env_id),
        hidden_precision=spec.precision,
        learning_starts=spec.learning_starts,
        gradient_steps=spec.gradient_steps,
        batch_size=256,
        learning_rate=3e-4,
        buffer_size=1_000_000,
        target_entropy=spec.target_entropy,
        policy_kwargs={"net_arch": [256, 256], "optimizer_kwargs": {"fused": True}},
        seed=spec.seed,
        device="cpu",
    )
    trace = RunTrace()
    start = time.perf_counter()
    model.learn(spec.total_steps, callback=TraceCallback(trace, spec.learning_starts))
    wall_s = time.perf_counter() - start
    return {
        **asdict(spec),
        **asdict(trace),
        **final_evaluation(model, spec.env_id, spec.eval_episodes, spec.seed),
        "wall_s": wall_s,
    }


def mean_se(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    se = float(array.std(ddof=1) / np.sqrt(array.size)) if array.size > 1 else float("nan")
    return {"mean": float(array.mean()), "se": se, "n": int(array.size)}


def last_train_returns(run: dict[str, Any], episodes: int = 10) -> float:
    returns = run["episode_returns"][-episodes:]
    return float(np.mean(returns)) if returns else float("nan")


METRICS: dict[str, Callable[[dict[str, Any]], float]] = {
    "violations_after_warmup": lambda run: float(run["violations_after_warmup"]),
    "eval_return": lambda run: run["eval_return"],
    "eval_violations": lambda run: run["eval_violations"],
    "last_10_train_returns": last_train_returns,
    "wall_s": lambda run: run["wall_s"],
}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per precision, mean and standard error over that precision's runs of each metric; over the seeds run in
    both precisions, the paired difference bfloat16 - float32 of each (so with unpaired seeds, the difference is
    not the difference of the two means)."""
    by_key = {(run["seed"], run["precision"]): run for run in runs}
    paired = sorted({seed for seed, _ in by_key if all((seed, p) in by_key for p in PRECISIONS)})
    summary: dict[str, Any] = {"paired_seeds": paired}
    for name, metric in METRICS.items():
        entry = {p: mean_se([metric(r) for r in runs if r["precision"] == p]) for p in PRECISIONS}
        entry["bfloat16_minus_float32"] = mean_se(
            [metric(by_key[(s, "bfloat16")]) - metric(by_key[(s, "float32")]) for s in paired]
        )
        summary[name] = entry
    return summary


def plot(runs: list[dict[str, Any]], path: Path, env_id: str) -> None:
    colours = {"float32": "tab:blue", "bfloat16": "tab:orange"}
    with saved_figure(path, 1, 2, figsize=(11, 4), dpi=120) as (fig, (left, right)):
        for run in runs:
            left.plot(run["steps"], run["cumulative_violations"], color=colours[run["precision"]], alpha=0.6)
        for precision, colour in colours.items():
            left.plot([], [], color=colour, label=precision)
            chosen = [r for r in runs if r["precision"] == precision]
            right.scatter([r["seed"] for r in chosen], [r["eval_return"] for r in chosen], color=colour, label=precision)
        left.set(xlabel="env steps", ylabel="cumulative falls", title=f"{env_id}: SAC falls, one line per run")
        right.set(xlabel="seed", ylabel="deterministic evaluation return", title="final evaluation")
        left.legend()
        right.legend()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SafeHopper-v0")
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--learning-starts", type=int, default=5000)
    parser.add_argument("--gradient-steps", type=int, default=1, help="SAC updates per env step")
    parser.add_argument("--target-entropy", type=float, default=-1.0, help="SMBPO's value for hopper")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--eval-episodes", type=int, default=10, help="deterministic episodes of the final evaluation")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (one torch thread each)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/sac_precision"))
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must not repeat a seed, got {args.seeds}")
    if args.steps <= args.learning_starts:
        parser.error(f"--steps ({args.steps}) must exceed --learning-starts ({args.learning_starts})")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    th.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    specs = [
        RunSpec(args.env, seed, precision, args.steps, args.learning_starts, args.gradient_steps,
                args.target_entropy, args.eval_episodes)
        for seed in args.seeds for precision in PRECISIONS
    ]
    runs = []
    for run in imap_runs(run_one, specs, args.jobs):
        runs.append(run)
        print(f"seed {run['seed']} {run['precision']}: {run['violations_after_warmup']} falls after the warm-up, "
              f"evaluation return {run['eval_return']:.1f}, {run['wall_s']:.0f} s", flush=True)
    report = {
        "config": {key: str(value) for key, value in vars(args).items()},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": th.__version__},
        "summary": summarise(runs),
        "runs": runs,
    }
    (args.out / "sac_precision.json").write_text(json.dumps(report, indent=1))
    plot(runs, args.out / "sac_precision.png", args.env)
    print(json.dumps(report["summary"], indent=1))
    return report


if __name__ == "__main__":
    main()
