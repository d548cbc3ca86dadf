"""SMBPO against SB3 SAC: safety, return and cost per env step (SPEC.md 2.1, seed 000 figures).

Both algorithms get the same env, warm-up (``learning_starts`` uniform-random steps), number of
gradient updates per env step, batch size, networks and learning rates. The script reports:

* cumulative violations and episode returns against env steps (JSON and a PNG);
* wall time per env step after the warm-up for both, and the ratio SMBPO / SAC;
* the FLOPs of one env step's work after the warm-up (SAC updates; for SMBPO also the model
  rollouts and the amortised model fits), counted from the layer sizes;
* the matmul peak of the device, measured with a torch micro-benchmark at the start of the run,
  and the resulting utilisation (FLOPs per env step / time per env step / peak);
* the final deterministic evaluation (mean return, cost and violations over ``--eval-episodes``);
* where SMBPO's time goes: ``--profile-steps`` more training steps of the trained SMBPO under
  cProfile, split into SAC updates, model fits, model rollouts and the rest (env stepping,
  acting, buffers, logging). Profiling slows Python, so these steps are not in the timings above.

Usage (the real benchmark is >= 30,000 steps, about two hours on a GPU)::

    python benchmarks/smbpo.py --env SafeHopper-v0 --steps 30000 --out-dir bench_out

Smoke run (minutes, numbers only meaningful as a check that everything runs)::

    python benchmarks/smbpo.py --steps 600 --learning-starts 300 --model-initial-gradient-steps 200 \\
        --model-gradient-steps 100 --out-dir /tmp/smbpo_smoke
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn

import sb3_safe  # noqa: F401 - registers the safe envs
from sb3_safe.common.cost import read_vec_costs
from sb3_safe.common.dynamics import EnsembleLinear
from sb3_safe.common.evaluation import evaluate_safe_policy
from sb3_safe.smbpo import SMBPO


@dataclass
class RunTrace:
    """What one training run recorded."""

    steps: list[int] = field(default_factory=list)
    cumulative_violations: list[int] = field(default_factory=list)
    episode_end_steps: list[int] = field(default_factory=list)
    episode_returns: list[float] = field(default_factory=list)
    wall_s_after_warmup: float = 0.0
    steps_after_warmup: int = 0
    model_rows_after_warmup: int = 0
    model_updates_after_warmup: int = 0
    violations_after_warmup: int = 0


class TraceCallback(BaseCallback):
    """Records violations, episode returns and the wall time after the warm-up."""

    def __init__(self, trace: RunTrace, learning_starts: int, every: int = 100) -> None:
        super().__init__()
        self.trace = trace
        self.learning_starts = learning_starts
        self.every = every
        self.violations = 0
        self.warmup_end: float | None = None
        self.violations_at_warmup_end = 0
        self.model_rows_at_warmup_end = 0
        self.model_updates_at_warmup_end = 0

    def _model_rows(self) -> int:
        return int(getattr(self.model, "model_rows_generated", 0))

    def _model_updates(self) -> int:
        return int(getattr(self.model, "model_updates_done", 0))

    def _on_step(self) -> bool:
        infos = self.locals["infos"]
        _, violations = read_vec_costs(infos, "benchmark", self.num_timesteps)
        self.violations += int(violations.sum())
        for info in infos:
            if "episode" in info:
                self.trace.episode_end_steps.append(self.num_timesteps)
                self.trace.episode_returns.append(float(info["episode"]["r"]))
        if self.num_timesteps % self.every == 0:
            self.trace.steps.append(self.num_timesteps)
            self.trace.cumulative_violations.append(self.violations)
        if self.warmup_end is None and self.num_timesteps >= self.learning_starts:
            self.warmup_end = time.perf_counter()
            self.violations_at_warmup_end = self.violations
            self.model_rows_at_warmup_end = self._model_rows()
            self.model_updates_at_warmup_end = self._model_updates()
        return True

    def _on_training_end(self) -> None:
        if self.warmup_end is not None:
            self.trace.wall_s_after_warmup = time.perf_counter() - self.warmup_end
            self.trace.steps_after_warmup = self.num_timesteps - self.learning_starts
            self.trace.model_rows_after_warmup = self._model_rows() - self.model_rows_at_warmup_end
            self.trace.model_updates_after_warmup = self._model_updates() - self.model_updates_at_warmup_end
            self.trace.violations_after_warmup = self.violations - self.violations_at_warmup_end


def matmul_peak_flops(device: th.device, size: int, repeats: int) -> float:
    """Measured float32 matmul throughput (FLOP/s) of ``device``: best of ``repeats`` timings."""
    a = th.randn(size, size, device=device)
    b = th.randn(size, size, device=device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up
        if device.type == "cuda":
            th.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            th.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def linear_macs(module: nn.Module) -> int:
    """Multiply-accumulates of one forward pass of one input row through every linear layer."""
    macs = 0
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            macs += layer.in_features * layer.out_features
        elif isinstance(layer, EnsembleLinear):
            macs += layer.n_members * layer.in_features * layer.out_features
    return macs


def sac_update_flops(model: SAC, batch_size: int) -> float:
    """FLOPs of one SAC update: forward = 2 x MACs per row, backward = 2 x forward.

    Actor: forward on s (with grad), on s' (no grad), backward once. Critics (all Q nets):
    target forward on s', forward on (s, a) with backward, forward on (s, pi(s)) with backward.
    """
    actor = 2.0 * linear_macs(model.actor)
    critics = 2.0 * linear_macs(model.critic)  # every Q network, without the shared extractor cost
    per_row = (actor + actor + 2 * actor) + (critics + 3 * critics + 3 * critics)
    return per_row * batch_size


def smbpo_extra_flops_per_step(model: SMBPO, model_rows_per_step: float, model_updates_per_step: float) -> float:
    """FLOPs per env step of the model rollouts and the model fits (both measured counts, so the
    initial fit is included when it falls in the timed window).

    A rollout row runs through one ensemble member (GaussianEnsemble.sample_step) and the actor;
    a fit update runs every member on its own minibatch, forward and backward (3 x forward).
    """
    ensemble_row = 2.0 * linear_macs(model.dynamics)  # all members, one input row each
    actor_row = 2.0 * linear_macs(model.actor)
    rollouts = model_rows_per_step * (ensemble_row / model.ensemble_size + actor_row)
    fit = model_updates_per_step * 3.0 * ensemble_row * model.model_batch_size
    return rollouts + fit


def profile_smbpo(model: SMBPO, steps: int) -> dict[str, float]:
    """Share of the wall time of ``steps`` more training steps spent in each part of SMBPO's work.

    cProfile's cumulative times of the functions that do each part: SAC's updates (``SAC.train``),
    the model fits (``SMBPO.fit_model``) and the model rollouts (``SMBPO.model_rollouts``); the rest
    is env stepping, acting, buffer writes and logging.
    """
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.runcall(model.learn, steps, reset_num_timesteps=False)
    total = time.perf_counter() - start
    cumulative = {(path, name): row[3] for (path, _, name), row in pstats.Stats(profiler).stats.items()}  # type: ignore[attr-defined]

    def seconds(name: str, path_end: str) -> float:
        return sum(t for (path, fn), t in cumulative.items() if fn == name and path.endswith(path_end))

    parts = {
        "sac_updates": seconds("train", "sac/sac.py"),
        "model_fits": seconds("fit_model", "smbpo/smbpo.py"),
        "model_rollouts": seconds("model_rollouts", "smbpo/smbpo.py"),
    }
    parts["env_acting_buffers_logging"] = total - sum(parts.values())
    return {"profiled_steps": steps, "wall_s": total, **{f"share_{k}": v / total for k, v in parts.items()}}


def run(algo: str, args: argparse.Namespace) -> tuple[BaseAlgorithm, RunTrace]:
    common: dict[str, Any] = {
        "learning_starts": args.learning_starts,
        "gradient_steps": args.gradient_steps,
        "batch_size": args.batch_size,
        "learning_rate": 3e-4,
        "buffer_size": args.steps,
        "policy_kwargs": {"net_arch": [256, 256]},
        "target_entropy": args.target_entropy,
        "seed": args.seed,
        "device": args.device,
    }
    env = gym.make(args.env)
    if algo == "smbpo":
        model: BaseAlgorithm = SMBPO(
            "MlpPolicy",
            env,
            **common,
            model_buffer_size=args.model_buffer_size,
            rollout_batch_size=args.rollout_batch_size,
            rollout_horizon=args.rollout_horizon,
            model_gradient_steps=args.model_gradient_steps,
            model_initial_gradient_steps=args.model_initial_gradient_steps,
        )
    else:
        model = SAC("MlpPolicy", env, **common)
    trace = RunTrace()
    model.learn(args.steps, callback=TraceCallback(trace, args.learning_starts))
    return model, trace


def final_evaluation(model: BaseAlgorithm, env_id: str, n_episodes: int, seed: int) -> dict[str, float]:
    """Mean return, cost and violations of ``n_episodes`` deterministic episodes of the trained policy."""
    env = gym.make(env_id)
    env.reset(seed=seed + 10_000)
    returns, _, costs, violations = evaluate_safe_policy(model, env, n_episodes, return_episode_rewards=True)
    return {
        "eval_return": float(sum(returns) / len(returns)),
        "eval_cost": float(sum(costs) / len(costs)),
        "eval_violations": float(sum(violations) / len(violations)),
    }


def plot(results: dict[str, RunTrace], path: Path, env_id: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, trace in results.items():
        left.plot(trace.steps, trace.cumulative_violations, label=name)
        right.plot(trace.episode_end_steps, trace.episode_returns, ".-", label=name)
    left.set(xlabel="env steps", ylabel="cumulative violations", title=f"{env_id}: violations")
    right.set(xlabel="env steps", ylabel="episode return", title=f"{env_id}: return")
    left.legend()
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="SafeHopper-v0")
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--learning-starts", type=int, default=5000)
    parser.add_argument("--gradient-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--target-entropy", type=float, default=-1.0, help="paper: hopper -1")
    parser.add_argument("--rollout-batch-size", type=int, default=100)
    parser.add_argument("--rollout-horizon", type=int, default=10)
    parser.add_argument("--model-buffer-size", type=int, default=1_000_000)
    parser.add_argument("--model-gradient-steps", type=int, default=2000)
    parser.add_argument("--model-initial-gradient-steps", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=10, help="deterministic episodes of the final evaluation")
    parser.add_argument("--profile-steps", type=int, default=250, help="SMBPO steps under cProfile at the end (0: none; 250 = one model fit)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--peak-size", type=int, default=2048, help="matrix size of the matmul micro-benchmark")
    parser.add_argument("--out-dir", type=Path, default=Path("bench_out"))
    args = parser.parse_args()
    if args.steps <= args.learning_starts:
        parser.error("--steps must exceed --learning-starts (the timing covers the steps after the warm-up)")
    th.set_num_threads(args.threads)
    device = th.device("cuda" if args.device == "auto" and th.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    args.out_dir.mkdir(parents=True, exist_ok=True)

    peak = matmul_peak_flops(device, args.peak_size, repeats=5)
    results: dict[str, RunTrace] = {}
    models: dict[str, BaseAlgorithm] = {}
    for algo in ("sac", "smbpo"):
        models[algo], results[algo] = run(algo, args)

    report: dict[str, Any] = {"env": args.env, "device": str(device), "args": {k: str(v) for k, v in vars(args).items()},
                              "matmul_peak_flops": peak, "algorithms": {}}
    per_step_s: dict[str, float] = {}
    for algo, trace in results.items():
        model = models[algo]
        per_step_s[algo] = trace.wall_s_after_warmup / max(trace.steps_after_warmup, 1)
        sac_flops = args.gradient_steps * sac_update_flops(model, args.batch_size)  # type: ignore[arg-type]
        flops = sac_flops
        if isinstance(model, SMBPO):
            steps = max(trace.steps_after_warmup, 1)
            flops += smbpo_extra_flops_per_step(
                model, trace.model_rows_after_warmup / steps, trace.model_updates_after_warmup / steps
            )
        report["algorithms"][algo] = {
            **asdict(trace),
            **final_evaluation(model, args.env, args.eval_episodes, args.seed),
            "violations_total": trace.cumulative_violations[-1] if trace.cumulative_violations else 0,
            "wall_s_per_env_step": per_step_s[algo],
            "flops_per_env_step": flops,
            "utilisation": flops / per_step_s[algo] / peak if per_step_s[algo] > 0 else float("nan"),
        }
    report["time_ratio_smbpo_over_sac"] = per_step_s["smbpo"] / per_step_s["sac"]
    sac_violations = results["sac"].violations_after_warmup
    report["violations_after_warmup_ratio_smbpo_over_sac"] = (
        results["smbpo"].violations_after_warmup / sac_violations if sac_violations else float("nan")
    )
    if args.profile_steps > 0:
        report["smbpo_profile"] = profile_smbpo(models["smbpo"], args.profile_steps)  # type: ignore[arg-type]
    (args.out_dir / "smbpo_benchmark.json").write_text(json.dumps(report, indent=1))
    plot(results, args.out_dir / "smbpo_benchmark.png", args.env)
    summary = {algo: {k: v for k, v in values.items() if not isinstance(v, list)}
               for algo, values in report["algorithms"].items()}
    headline = {key: value for key, value in report.items() if key not in ("algorithms", "args")}
    print(json.dumps({**headline, **summary}, indent=1))


if __name__ == "__main__":
    main()
