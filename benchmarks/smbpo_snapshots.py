"""How much one snapshot's evaluation says: evaluate every snapshot of a benchmark run continued for a while.

``benchmarks/smbpo.py`` evaluates the policy of one step, the last, unless its run was made with
``--eval-snapshots``. Training changes the policy ten times per env step, and its evaluation return can swing by
more than a thousand within a few hundred steps (docs/benchmarks.md). This script continues a checkpoint of that
benchmark (SMBPO or SB3 SAC: ``model.zip`` and
``replay_buffer.pkl``) for ``--steps`` env steps with the settings saved in it (SB3 SAC's denormal flushing,
``benchmarks/smbpo.py --sac-flush-denormals``, is not one of them), on the CPU, records every training episode
that ends (length, return, fall), saves the actor's weights every ``--every`` steps, and then evaluates each
saved actor with frozen weights over ``--episodes`` deterministic and as many sampled episodes. The snapshot of
step ``t`` is the policy that acted at env step ``t``: it has the updates of the steps before ``t``, not those of
step ``t`` itself (SB3 trains after the step's callback), whereas ``benchmarks/smbpo.py``'s ``step_<t>`` checkpoint
has them. Episode ``i`` of every
evaluation starts from ``reset(seed=--first-reset-seed + i)``, so all snapshots and both algorithms face the same
start states (SB3's ``evaluate_policy`` and ``evaluate_safe_policy`` seed only the first reset, hence the
episode loop here). A resumed run's random streams restart, so the continuation is one path of the run, not the
one it would have taken uninterrupted.

Writes ``<out>/snapshots.json`` (the training episodes, every snapshot's per-episode results and means) and
``<out>/snapshots.png`` (return per snapshot, deterministic and sampled).

Usage::

    python benchmarks/smbpo_snapshots.py --algo smbpo --checkpoint <out-dir>/smbpo_checkpoint/step_55000 \\
        --steps 3000 --every 250 --out bench_out/snapshots_smbpo

(``benchmarks/smbpo.py`` keeps only its latest ``step_<n>`` folder; copy one to keep it.)
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from bench_plots import saved_figure
from smbpo import ALGORITHMS
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

import sb3_safe  # noqa: F401 - registers the safe envs
from sb3_safe.common.cost import read_cost, read_violation


class SnapshotCallback(BaseCallback):
    """Records the training episodes that end (one env) and copies the actor's weights every ``every`` steps: the
    weights that chose that step's action (the callback runs before SB3's update of the step)."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every
        self.start_step = 0
        self.episodes: list[dict[str, Any]] = []
        self.snapshots: list[tuple[int, dict[str, th.Tensor]]] = []

    def _on_training_start(self) -> None:
        if self.training_env.num_envs != 1:
            raise ValueError(f"SnapshotCallback records one env's episodes, the run has {self.training_env.num_envs}")
        self.start_step = self.num_timesteps

    def _on_step(self) -> bool:
        if self.locals["dones"][0]:
            info = self.locals["infos"][0]
            self.episodes.append({
                "end": self.num_timesteps,
                "length": int(info["episode"]["l"]),
                "return": float(info["episode"]["r"]),
                "fell": read_violation(info, read_cost(info, "snapshot run", self.num_timesteps)),
            })
        if (self.num_timesteps - self.start_step) % self.every == 0:
            self.snapshots.append((self.num_timesteps, copy.deepcopy(self.model.actor.state_dict())))  # type: ignore[attr-defined]
        return True


def episode(model: BaseAlgorithm, env: gym.Env, reset_seed: int, deterministic: bool) -> tuple[float, bool, int]:
    """Return, whether it ended in a fall, and length of one episode from ``reset(seed=reset_seed)``."""
    obs, _ = env.reset(seed=reset_seed)
    total, length = 0.0, 0
    while True:
        action, _ = model.predict(obs, deterministic=deterministic)
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        length += 1
        if terminated or truncated:
            return total, read_violation(info, read_cost(info, "evaluation", length)), length


def evaluate(model: BaseAlgorithm, env_id: str, reset_seeds: list[int], deterministic: bool) -> dict[str, Any]:
    env = gym.make(env_id)
    results = [episode(model, env, seed, deterministic) for seed in reset_seeds]
    env.close()
    returns, falls, lengths = (np.array(column, dtype=float) for column in zip(*results))
    return {"return": float(returns.mean()), "falls": float(falls.mean()), "len": float(lengths.mean()),
            "returns": returns.round(1).tolist()}


def continue_and_snapshot(args: argparse.Namespace) -> dict[str, Any]:
    model = ALGORITHMS[args.algo].load(args.checkpoint / "model.zip", env=gym.make(args.env), device="cpu")
    model.load_replay_buffer(args.checkpoint / "replay_buffer.pkl")
    start_step = model.num_timesteps
    callback = SnapshotCallback(args.every)
    start = time.perf_counter()
    model.learn(args.steps, callback=callback, reset_num_timesteps=False)  # SMBPO's learn waits for its last fit
    train_s = time.perf_counter() - start
    reset_seeds = [args.first_reset_seed + i for i in range(args.episodes)]
    evaluations = {}
    for step, weights in callback.snapshots:
        model.actor.load_state_dict(weights)  # type: ignore[attr-defined]
        evaluations[str(step)] = {"det": evaluate(model, args.env, reset_seeds, True),
                                  "sampled": evaluate(model, args.env, reset_seeds, False)}
        print(step, {mode: round(result["return"], 1) for mode, result in evaluations[str(step)].items()}, flush=True)
    return {"config": {key: str(value) for key, value in vars(args).items()}, "start_step": start_step,
            "train_s": train_s, "episodes": callback.episodes, "snapshot_evals": evaluations,
            "summary": summarise(evaluations)}


def summarise(evaluations: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per mode, the mean, lowest and highest snapshot return and the mean fraction of episodes ending in a fall."""
    summary = {}
    for mode in ("det", "sampled"):
        returns = np.array([snapshot[mode]["return"] for snapshot in evaluations.values()])
        falls = np.array([snapshot[mode]["falls"] for snapshot in evaluations.values()])
        summary[mode] = {"mean_return_over_snapshots": float(returns.mean()), "min_return": float(returns.min()),
                         "max_return": float(returns.max()), "mean_fall_fraction": float(falls.mean()),
                         "snapshots": int(returns.size)}
    return summary


def plot(report: dict[str, Any], path: Path, title: str) -> None:
    evaluations = report["snapshot_evals"]
    steps = [int(step) for step in evaluations]
    with saved_figure(path, figsize=(7, 4), dpi=110) as (fig, ax):
        ax.plot(steps, [e["det"]["return"] for e in evaluations.values()], "o-", label="deterministic")
        ax.plot(steps, [e["sampled"]["return"] for e in evaluations.values()], "x--", label="sampled")
        ax.set(xlabel="env steps of the snapshot", ylabel="mean evaluation return", title=title)
        ax.legend()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=sorted(ALGORITHMS), required=True)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a step_<n> folder of benchmarks/smbpo.py")
    parser.add_argument("--env", default="SafeHopper-v0")
    parser.add_argument("--steps", type=int, default=3000, help="env steps to continue for")
    parser.add_argument("--every", type=int, default=250, help="env steps between snapshots")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per snapshot, each mode")
    parser.add_argument("--first-reset-seed", type=int, default=12_000)
    parser.add_argument("--out", type=Path, default=Path("bench_out/snapshots"))
    args = parser.parse_args(argv)
    if args.steps < args.every or args.every < 1:
        parser.error(f"--every must be >= 1 and at most --steps, got --every {args.every} --steps {args.steps}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    th.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    report = continue_and_snapshot(args)
    (args.out / "snapshots.json").write_text(json.dumps(report, indent=1))
    plot(report, args.out / "snapshots.png", f"{args.env}, {args.algo}: one snapshot every {args.every} steps")
    print(json.dumps(report["summary"], indent=1))
    return report


if __name__ == "__main__":
    main()
