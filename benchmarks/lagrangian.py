"""Lagrangian algorithms against their unconstrained parents (SPEC.md 2.3, metrics of SPEC.md 3).

Trains PPO vs PPOLag and SAC vs SACLag on each env, for several seeds, with the parents' default
hyper-parameters (SB3's) and the Lagrangian defaults, and reports per run:

* final return and final episode cost: mean over ``--eval-episodes`` deterministic episodes of the
  trained policy (plus the mean of the last 10 training episodes);
* cumulative safety violations over training (``info["violation"]`` steps);
* wall-clock training throughput (env steps per second, ``learn()`` wall time);
* per env, the throughput ratios PPOLag / PPO and SACLag / SAC, from runs made in the same process
  and the same session (so the ratio reflects the algorithms, not the machine's load of the day --
  as long as the machine is not shared; the JSON records the load average to judge that).

Outputs ``<out>/lagrangian.json`` and ``<out>/lagrangian.png`` (training curves: episode return,
episode cost, cumulative violations against env steps; one line per run).

Per-env cost limits, the same as ``hyperparams/ppo_lag.yml`` and ``hyperparams/sac_lag.yml``
(``--cost-limit`` overrides them for all envs): SafePendulum-v0 0.3 per 200-step episode (an
unconstrained swing-up crosses the unsafe 20-30 degree band for ~1.2 steps per episode, swinging up
from the other side costs ~0); SafeHopper-v0 0.1 (an episode costs 1 when it ends by falling, so
this asks for at most ~10% unsafe episodes).

Usage (the real benchmark: 3 seeds, hours of CPU; do not run it on a shared machine)::

    python benchmarks/lagrangian.py --timesteps 200000 --out bench_out/lagrangian

Smoke run (seconds to minutes; its numbers only show that everything runs)::

    python benchmarks/lagrangian.py --timesteps 2000 --seeds 1 --out /tmp/lagrangian_smoke

Only SAC and SACLag::

    python benchmarks/lagrangian.py --algos sac,sac_lag
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

import sb3_safe  # noqa: F401 - registers the safe envs
from sb3_safe.common.cost import read_vec_costs

# name -> (module, class, takes a cost limit); PPOLag is imported only when asked for.
ALGOS: dict[str, tuple[str, str, bool]] = {
    "ppo": ("stable_baselines3", "PPO", False),
    "ppo_lag": ("sb3_safe.ppo_lag", "PPOLag", True),
    "sac": ("stable_baselines3", "SAC", False),
    "sac_lag": ("sb3_safe.sac_lag", "SACLag", True),
}
# (constrained, parent) pairs whose throughput ratio is reported.
RATIO_PAIRS = (("ppo_lag", "ppo"), ("sac_lag", "sac"))
DEFAULT_COST_LIMITS = {"SafePendulum-v0": 0.3, "SafeHopper-v0": 0.1}
TRAINING_EPISODES_FOR_FINAL = 10


@dataclass
class RunResult:
    """What one (env, algo, seed) training run measured."""

    env_id: str
    algo: str
    seed: int
    timesteps: int
    cost_limit: float | None
    wall_s: float
    steps_per_s: float
    eval_return: float
    eval_cost: float
    final_train_return: float
    final_train_cost: float
    violations_total: int
    final_lambda: float | None
    episode_end_steps: list[int] = field(default_factory=list)
    episode_returns: list[float] = field(default_factory=list)
    episode_costs: list[float] = field(default_factory=list)
    violation_steps: list[int] = field(default_factory=list)
    cumulative_violations: list[int] = field(default_factory=list)


class SafetyTraceCallback(BaseCallback):
    """Records, from the training env's infos, episode returns and costs and the violation count.

    It reads costs through the cost protocol, so it works the same for the unconstrained parents
    (which ignore the cost) and for the Lagrangian algorithms.

    :param record_every: store the cumulative violation count every this many calls
    """

    def __init__(self, record_every: int = 100) -> None:
        super().__init__()
        self.record_every = record_every
        self.violations_total = 0
        self.current_returns: np.ndarray | None = None
        self.current_costs: np.ndarray | None = None
        self.episode_end_steps: list[int] = []
        self.episode_returns: list[float] = []
        self.episode_costs: list[float] = []
        self.violation_steps: list[int] = []
        self.cumulative_violations: list[int] = []

    def _on_step(self) -> bool:
        infos, dones, rewards = self.locals["infos"], self.locals["dones"], self.locals["rewards"]
        if self.current_returns is None:
            self.current_returns = np.zeros(len(infos))
            self.current_costs = np.zeros(len(infos))
        assert self.current_costs is not None
        costs, violations = read_vec_costs(infos, "benchmark env", self.num_timesteps)
        self.violations_total += int(violations.sum())
        self.current_returns += np.asarray(rewards, dtype=np.float64)
        self.current_costs += costs
        for idx in np.flatnonzero(dones):
            # Monitor's undiscounted return when present (the VecEnv may normalise rewards).
            episode = infos[idx].get("episode")
            self.episode_returns.append(float(episode["r"]) if episode else float(self.current_returns[idx]))
            self.episode_costs.append(float(self.current_costs[idx]))
            self.episode_end_steps.append(self.num_timesteps)
            self.current_returns[idx] = 0.0
            self.current_costs[idx] = 0.0
        if self.n_calls % self.record_every == 0:
            self.violation_steps.append(self.num_timesteps)
            self.cumulative_violations.append(self.violations_total)
        return True


def make_algo(algo: str, env: VecEnv, seed: int, cost_limit: float) -> BaseAlgorithm:
    """Build one algorithm with its library defaults (plus ``cost_limit`` for the Lagrangian ones)."""
    module_name, class_name, constrained = ALGOS[algo]
    algo_class = getattr(importlib.import_module(module_name), class_name)
    kwargs: dict[str, Any] = {"seed": seed, "device": "cpu", "verbose": 0}
    if constrained:
        kwargs["cost_limit"] = cost_limit
    return algo_class("MlpPolicy", env, **kwargs)


def evaluate(model: BaseAlgorithm, env_id: str, seed: int, n_episodes: int) -> tuple[float, float]:
    """Mean return and mean summed cost of ``n_episodes`` deterministic episodes."""
    env = make_vec_env(env_id, n_envs=1, seed=seed + 10_000)
    returns, costs = [], []
    obs = env.reset()
    episode_return, episode_cost = 0.0, 0.0
    while len(returns) < n_episodes:
        action, _ = model.predict(obs, deterministic=True)
        obs, rewards, dones, infos = env.step(action)
        step_costs, _ = read_vec_costs(infos, env_id)
        episode_return += float(rewards[0])
        episode_cost += float(step_costs[0])
        if dones[0]:
            returns.append(episode_return)
            costs.append(episode_cost)
            episode_return, episode_cost = 0.0, 0.0
    env.close()
    return float(np.mean(returns)), float(np.mean(costs))


def tail_mean(values: list[float], count: int) -> float:
    return float(np.mean(values[-count:])) if values else float("nan")


def run_one(env_id: str, algo: str, seed: int, args: argparse.Namespace) -> RunResult:
    cost_limit = args.cost_limit if args.cost_limit is not None else DEFAULT_COST_LIMITS.get(env_id, 25.0)
    env = make_vec_env(env_id, n_envs=1, seed=seed)
    model = make_algo(algo, env, seed, cost_limit)
    trace = SafetyTraceCallback(record_every=max(args.timesteps // 200, 1))
    start = time.perf_counter()
    model.learn(args.timesteps, callback=trace)
    wall_s = time.perf_counter() - start
    eval_return, eval_cost = evaluate(model, env_id, seed, args.eval_episodes)
    env.close()
    # PPOLag and SACLag both expose the current lambda as `lagrange_value`.
    final_lambda = getattr(model, "lagrange_value", None)
    return RunResult(
        env_id=env_id,
        algo=algo,
        seed=seed,
        timesteps=model.num_timesteps,
        cost_limit=cost_limit if ALGOS[algo][2] else None,
        wall_s=wall_s,
        steps_per_s=model.num_timesteps / wall_s,
        eval_return=eval_return,
        eval_cost=eval_cost,
        final_train_return=tail_mean(trace.episode_returns, TRAINING_EPISODES_FOR_FINAL),
        final_train_cost=tail_mean(trace.episode_costs, TRAINING_EPISODES_FOR_FINAL),
        violations_total=trace.violations_total,
        final_lambda=None if final_lambda is None else float(final_lambda),
        episode_end_steps=trace.episode_end_steps,
        episode_returns=trace.episode_returns,
        episode_costs=trace.episode_costs,
        violation_steps=trace.violation_steps,
        cumulative_violations=trace.cumulative_violations,
    )


def mean_std(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(np.nanmean(array)), "std": float(np.nanstd(array)), "n": int(array.size)}


def summarise(results: list[RunResult]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per (env, algo) mean/std over seeds, and per env the throughput ratios of the pairs present."""
    summary: dict[str, dict[str, Any]] = {}
    for env_id in sorted({r.env_id for r in results}):
        summary[env_id] = {}
        for algo in sorted({r.algo for r in results if r.env_id == env_id}):
            runs = [r for r in results if r.env_id == env_id and r.algo == algo]
            summary[env_id][algo] = {
                metric: mean_std([getattr(r, metric) for r in runs])
                for metric in ("eval_return", "eval_cost", "final_train_return", "final_train_cost", "violations_total", "steps_per_s")
            }
    ratios: dict[str, dict[str, float]] = {}
    for env_id, per_algo in summary.items():
        for constrained, parent in RATIO_PAIRS:
            if constrained in per_algo and parent in per_algo:
                ratio = per_algo[constrained]["steps_per_s"]["mean"] / per_algo[parent]["steps_per_s"]["mean"]
                ratios.setdefault(env_id, {})[f"{constrained}/{parent}"] = ratio
    return summary, ratios


def plot(results: list[RunResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env_ids = sorted({r.env_id for r in results})
    algos = sorted({r.algo for r in results})
    colours = {algo: f"C{i}" for i, algo in enumerate(algos)}
    fig, axes = plt.subplots(len(env_ids), 3, figsize=(15, 4 * len(env_ids)), squeeze=False)
    for row, env_id in enumerate(env_ids):
        for result in (r for r in results if r.env_id == env_id):
            label = f"{result.algo} s{result.seed}"
            style = {"color": colours[result.algo], "alpha": 0.8, "label": label}
            axes[row][0].plot(result.episode_end_steps, result.episode_returns, **style)
            axes[row][1].plot(result.episode_end_steps, result.episode_costs, **style)
            axes[row][2].plot(result.violation_steps, result.cumulative_violations, **style)
        limit = next((r.cost_limit for r in results if r.env_id == env_id and r.cost_limit is not None), None)
        if limit is not None:
            axes[row][1].axhline(limit, color="k", linestyle="--", label="cost limit")
        for col, title in enumerate(("episode return", "episode cost", "cumulative violations")):
            axes[row][col].set_title(f"{env_id}: {title}")
            axes[row][col].set_xlabel("env steps")
        axes[row][2].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="SafePendulum-v0,SafeHopper-v0", help="comma-separated env ids")
    parser.add_argument("--algos", default="ppo,ppo_lag,sac,sac_lag", help=f"comma-separated, from {sorted(ALGOS)}")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--timesteps", type=int, default=200_000, help="env steps per run")
    parser.add_argument("--eval-episodes", type=int, default=5, help="deterministic episodes for the final return/cost")
    parser.add_argument("--cost-limit", type=float, default=None, help="per-episode budget for every env (default: per env)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads (small MLPs run best on 1)")
    parser.add_argument("--out", default="bench_out/lagrangian", help="output folder")
    args = parser.parse_args(argv)
    args.env_ids = [name.strip() for name in args.envs.split(",") if name.strip()]
    args.algo_names = [name.strip() for name in args.algos.split(",") if name.strip()]
    unknown = [name for name in args.algo_names if name not in ALGOS]
    if unknown:
        parser.error(f"unknown algorithm(s) {unknown}; choose from {sorted(ALGOS)}")
    if args.seeds < 1 or args.timesteps < 1 or args.eval_episodes < 1:
        parser.error("--seeds, --timesteps and --eval-episodes must be >= 1")
    if args.cost_limit is not None and args.cost_limit < 0:
        parser.error("--cost-limit must be >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    th.set_num_threads(args.torch_threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: list[RunResult] = []
    for env_id in args.env_ids:
        for seed in range(args.seeds):
            # Algorithms of one seed run back to back so that their throughputs see the same machine load.
            for algo in args.algo_names:
                result = run_one(env_id, algo, seed, args)
                results.append(result)
                print(
                    f"{env_id} {algo} seed {seed}: eval return {result.eval_return:.1f}, eval cost {result.eval_cost:.2f}, "
                    f"violations {result.violations_total}, {result.steps_per_s:.0f} steps/s",
                    flush=True,
                )
    summary, ratios = summarise(results)
    report = {
        "config": {key: value for key, value in vars(args).items() if key not in ("env_ids", "algo_names")},
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_at_end": list(os.getloadavg()),
            "torch": th.__version__,
            "torch_threads": th.get_num_threads(),
        },
        "summary": summary,
        "throughput_ratios": ratios,
        "runs": [asdict(r) for r in results],
    }
    (out / "lagrangian.json").write_text(json.dumps(report, indent=1))
    plot(results, out / "lagrangian.png")
    print(json.dumps({"summary": summary, "throughput_ratios": ratios}, indent=1))
    return report


if __name__ == "__main__":
    main()
