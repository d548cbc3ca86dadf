"""Time per SAC gradient step: SB3's ``SAC.train`` against the fused steps of ``sb3_safe.common.sac_update``.

Five variants on one env's network sizes (SafeHopper-v0 and 2 x 256 networks by default, batch 256):
SB3's ``SAC.train`` with torch's default Adam and with its fused kernel
(``policy_kwargs=dict(optimizer_kwargs=dict(fused=True))``), and, all with the fused Adam kernel (as
``benchmarks/smbpo.py --fused-sac-update`` runs them), the one-backward step through autograd
(``autograd_fused_sac_train``), with its backward pass written out by hand (``mlp_fused_sac_train``,
what SMBPO's ``fused_sac_update`` runs for an MLP policy) and the latter with bfloat16 hidden-to-hidden
layers (``hidden_precision="bfloat16"``, SMBPO's ``sac_hidden_precision``). Each variant is a SAC with
the same seed whose replay buffer holds ``--warmup`` random steps; the variants then take turns,
``--repeats`` times, each timing ``--updates`` gradient steps, so that slow phases of the machine hit all
of them. Writes ``<out>/sac_update.json`` (every timing, the median ms per update, the ratios to SB3's)
and ``<out>/sac_update.png``.

The JSON also says how far each variant is from the machine's float32 matmul peak (measured at the start,
as in ``benchmarks/smbpo.py``): the FLOPs of one update counted from layer sizes, the achieved FLOP/s and
its share of the peak, the time one update would take at the peak, and, from torch's profiler over
``--profile-updates`` more updates, the share of CPU time inside matmul kernels and the FLOP/s they reach.
The bfloat16 variant is measured against the float32 peak too (its hidden layers could reach the bfloat16
peak, also in the JSON).

Usage::

    python benchmarks/sac_update.py --env SafeHopper-v0 --threads 1 --out bench_out/sac_update
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import torch as th
from bench_plots import saved_figure
from flop_counts import matmul_peak_flops, sac_update_flops
from stable_baselines3 import SAC
from torch.profiler import ProfilerActivity, profile

import sb3_safe  # noqa: F401 - registers the safe envs
from sb3_safe.common.sac_update import autograd_fused_sac_train, mlp_fused_sac_train


def sb3_train(model: SAC, gradient_steps: int, batch_size: int) -> None:
    model.train(gradient_steps, batch_size)


def hand_written_bf16_train(model: SAC, gradient_steps: int, batch_size: int) -> None:
    mlp_fused_sac_train(model, gradient_steps, batch_size, hidden_precision="bfloat16")


TrainFunction = Callable[[SAC, int, int], None]
# name -> (the function that runs the gradient steps, fused Adam?)
VARIANTS: dict[str, tuple[TrainFunction, bool]] = {
    "sb3": (sb3_train, False),
    "sb3_fused_adam": (sb3_train, True),
    "autograd_fused_adam": (autograd_fused_sac_train, True),
    "hand_written_fused_adam": (mlp_fused_sac_train, True),
    "hand_written_bf16_fused_adam": (hand_written_bf16_train, True),
}
# The kernels of nn.Linear's forward and backward passes on a CPU.
MATMUL_OPS = frozenset({"aten::mm", "aten::addmm", "aten::bmm"})


def warmed_up_sac(env_id: str, fused_adam: bool, args: argparse.Namespace) -> SAC:
    """A SAC whose replay buffer holds ``args.warmup`` uniform-random steps and which has not updated yet."""
    policy_kwargs: dict = {"net_arch": [256, 256]}
    if fused_adam:
        policy_kwargs["optimizer_kwargs"] = {"fused": True}
    model = SAC(
        "MlpPolicy",
        gym.make(env_id),
        learning_starts=args.warmup,
        batch_size=args.batch_size,
        policy_kwargs=policy_kwargs,
        seed=args.seed,
        device="cpu",
    )
    model.learn(args.warmup)
    return model


def seconds_per_update(model: SAC, train: TrainFunction, updates: int, batch_size: int) -> float:
    start = time.perf_counter()
    train(model, updates, batch_size)
    return (time.perf_counter() - start) / updates


def matmul_time(model: SAC, train: TrainFunction, updates: int, batch_size: int) -> tuple[float, float]:
    """Torch's profiler over ``updates`` gradient steps: the matmul kernels' share of their wall time (which,
    unlike the profiled ops' summed time, includes the Python time between ops) and those kernels' seconds
    per update."""
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        wall_s = seconds_per_update(model, train, updates, batch_size)
    matmul_us = sum(event.self_cpu_time_total for event in profiler.key_averages() if event.key in MATMUL_OPS)
    matmul_s = matmul_us / 1e6 / updates
    return matmul_s / wall_s, matmul_s


def distance_from_peak(
    model: SAC, train: TrainFunction, median_ms: float, peak: float, args: argparse.Namespace
) -> dict[str, float]:
    """One variant's FLOPs per update, achieved FLOP/s and share of ``peak``, the ms per update at ``peak``,
    and its matmul kernels' share of the time and FLOP/s."""
    flops = sac_update_flops(model, args.batch_size, fused_update=train is not sb3_train)
    achieved = flops / (median_ms / 1e3)
    report = {"flops_per_update": flops, "achieved_flops": achieved, "utilisation": achieved / peak,
              "ms_per_update_at_peak": 1e3 * flops / peak}
    if args.profile_updates > 0:
        share, matmul_s = matmul_time(model, train, args.profile_updates, args.batch_size)
        report["matmul_time_share"] = share
        report["matmul_flops"] = flops / matmul_s if matmul_s > 0 else float("nan")
    return report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def plot(median_ms: dict[str, float], path: Path, title: str) -> None:
    with saved_figure(path, figsize=(6, 3.5), dpi=120) as (fig, ax):
        names = list(median_ms)
        colors = ["tab:gray" if VARIANTS[name][0] is sb3_train else "tab:blue" for name in names]
        ax.bar(names, [median_ms[name] for name in names], color=colors)
        ax.set_ylabel("ms per gradient step (median)")
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7, labelrotation=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="SafeHopper-v0")
    parser.add_argument("--warmup", type=int, default=1000, help="random steps in the replay buffer")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--updates", type=int, default=200, help="gradient steps per timing")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile-updates", type=int, default=50,
                        help="gradient steps per variant under torch's profiler for the matmul share (0: none)")
    parser.add_argument("--peak-size", type=int, default=2048, help="matrix size of the matmul peak measurement")
    parser.add_argument("--out", type=Path, default=Path("bench_out/sac_update"))
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    peak = matmul_peak_flops(th.device("cpu"), args.peak_size, repeats=5)
    peak_bf16 = matmul_peak_flops(th.device("cpu"), args.peak_size, repeats=5, dtype=th.bfloat16)

    models = {name: warmed_up_sac(args.env, fused_adam, args) for name, (_, fused_adam) in VARIANTS.items()}
    for name, model in models.items():  # untimed: first calls allocate and warm the caches
        seconds_per_update(model, VARIANTS[name][0], 20, args.batch_size)
    timings: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, model in models.items():
            timings[name].append(1e3 * seconds_per_update(model, VARIANTS[name][0], args.updates, args.batch_size))
    median_ms = {name: statistics.median(values) for name, values in timings.items()}
    report = {
        "config": {key: str(value) for key, value in vars(args).items()},
        "machine": {"cpu": cpu_model(), "torch": th.__version__, "torch_threads": th.get_num_threads()},
        "ms_per_update": timings,
        "median_ms_per_update": median_ms,
        "ratio_to_sb3": {name: median_ms[name] / median_ms["sb3"] for name in VARIANTS},
        "matmul_peak_flops": peak,
        "matmul_peak_flops_bfloat16": peak_bf16,
        "distance_from_peak": {
            name: distance_from_peak(model, VARIANTS[name][0], median_ms[name], peak, args)
            for name, model in models.items()
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sac_update.json").write_text(json.dumps(report, indent=1))
    title = f"SAC gradient step, {args.env}, batch {args.batch_size}, {args.threads} thread(s)"
    plot(median_ms, args.out / "sac_update.png", title)
    shown = ("machine", "median_ms_per_update", "ratio_to_sb3", "matmul_peak_flops", "matmul_peak_flops_bfloat16",
             "distance_from_peak")
    print(json.dumps({k: report[k] for k in shown}, indent=1))


if __name__ == "__main__":
    main()
