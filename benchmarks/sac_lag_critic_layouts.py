"""Env steps/s of SB3 SAC and of SACLag with each cost-critic layout (``cost_value_head``).

Each run first makes ``--warmup`` random steps (``learning_starts``), then times ``--steps`` training
steps (one gradient step per env step, SB3's defaults, 2 x 256 networks). The three variants run in
turn, ``--repeats`` times, in one process with one torch thread; the best time of each is kept.
Writes ``<out>/sac_lag_critic_layouts.json`` and prints the speeds and the ratios to SAC.

Usage::

    python benchmarks/sac_lag_critic_layouts.py --env SafePendulum-v0 --out bench_out/critic_layouts
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm

import sb3_safe  # noqa: F401 - registers the safe envs
from sb3_safe.sac_lag import SACLag

VARIANTS = ("sac", "separate", "shared")


def make_model(variant: str, env_id: str, warmup: int, seed: int) -> BaseAlgorithm:
    """SAC, or SACLag with the ``variant`` cost-critic layout, on a fresh env."""
    kwargs = dict(learning_starts=warmup, seed=seed, policy_kwargs=dict(net_arch=[256, 256]))
    if variant == "sac":
        return SAC("MlpPolicy", gym.make(env_id), **kwargs)
    kwargs["policy_kwargs"]["cost_value_head"] = variant
    return SACLag("MlpPolicy", gym.make(env_id), **kwargs)


def steps_per_second(variant: str, args: argparse.Namespace) -> float:
    model = make_model(variant, args.env, args.warmup, args.seed)
    model.learn(args.warmup)
    start = time.perf_counter()
    model.learn(args.steps, reset_num_timesteps=False)
    return args.steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="SafePendulum-v0")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_out/critic_layouts"))
    args = parser.parse_args()
    th.set_num_threads(1)
    speeds: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            speeds[variant].append(steps_per_second(variant, args))
    best = {variant: max(values) for variant, values in speeds.items()}
    report = {
        "config": {key: str(value) for key, value in vars(args).items()},
        "steps_per_s": speeds,
        "best_steps_per_s": best,
        "ratio_to_sac": {variant: best[variant] / best["sac"] for variant in VARIANTS},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sac_lag_critic_layouts.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
