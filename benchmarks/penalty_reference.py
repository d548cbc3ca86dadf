"""A reference for "the best return achievable under the cost limit": the unconstrained parent behind
the early-termination penalty.

Issue 3 asks that PPOLag's return be "within the best achievable under the limit". On the SMBPO envs
(an episode costs 1 if it ends in an unsafe state, else 0) a simple way to find policies that meet a
fall limit is SMBPO's modified MDP: the parent algorithm (PPO or SAC) trained behind
:class:`sb3_safe.wrappers.EarlyTerminationPenalty` (a violation ends the episode and pays ``-C``), for
a few values of C. Each run uses exactly the settings that ``benchmarks/lagrangian.py`` gives the
parent (this package's zoo file of the pair, Lagrangian keys dropped) and is evaluated like it: on the
plain env, from the same evaluation starts, deterministic and sampled. Writes
``penalty_reference.json`` (one record per (C, seed)) and ``penalty_reference.png`` (evaluation
return against the fraction of episodes with a violation).

The wrapper's ``-C`` is a reward, so an entry with ``normalize: true`` passes it through
``VecNormalize``, which divides it by the return spread and clips the result at ``clip_reward``: the
penalty a fall really pays, in the env's rewards, is then about ``min(C, clip_reward * reward_scale)``.
Each record keeps the divisor every 1,000 steps (``trace_steps``, ``reward_scales``) and
``clip_reward`` (None without reward normalisation) to tell the effective C from the nominal one.

Example (SafeHopper-v0, the budget of the Lagrangian benchmark; about 5 minutes per run on one core)::

    python benchmarks/penalty_reference.py --env SafeHopper-v0 --algo ppo --penalties 100 200 300 1000 \\
        --seeds 0 1 2 --timesteps 200000 --out bench_out/penalty_reference
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch as th
from bench_plots import saved_figure
from lagrangian import ALGOS, RunSpec, SafetyTraceCallback, build_model, evaluate, reward_normaliser, tail_mean

PENALTY_WRAPPER = "sb3_safe.wrappers.cost.EarlyTerminationPenalty"


def run_one(env_id: str, algo: str, penalty: float, seed: int, timesteps: int, eval_episodes: int) -> dict[str, Any]:
    """Train the parent behind the penalty wrapper; evaluate it on the plain env."""
    spec = RunSpec(env_id, algo, seed, timesteps, eval_episodes, None)
    model, manager, zoo_callbacks = build_model(spec, {"env_wrapper": [{PENALTY_WRAPPER: {"penalty": penalty}}]})
    trace = SafetyTraceCallback(record_every=1000)
    start = time.perf_counter()
    model.learn(timesteps, callback=[trace, *zoo_callbacks])
    wall_s = time.perf_counter() - start
    # The evaluation env is made by the same manager: without the wrapper it is the plain env.
    manager.env_wrapper = None
    deterministic = evaluate(model, manager, seed, eval_episodes, deterministic=True)
    sampled = evaluate(model, manager, seed, eval_episodes, deterministic=False)
    normaliser = reward_normaliser(model)
    return {
        "env_id": env_id,
        "algo": algo,
        "penalty": penalty,
        "seed": seed,
        "timesteps": model.num_timesteps,
        "wall_s": wall_s,
        "eval_return_deterministic": deterministic.mean_return,
        "eval_cost_deterministic": deterministic.mean_cost,
        "eval_return_sampled": sampled.mean_return,
        "eval_cost_sampled": sampled.mean_cost,
        "violations_in_training": trace.violations_total,
        "last_10_training_episode_cost": tail_mean(trace.episode_costs, 10),
        "trace_steps": trace.violation_steps,
        "reward_scales": trace.reward_scales,
        "clip_reward": None if normaliser is None else float(normaliser.clip_reward),
    }


def plot(records: list[dict[str, Any]], path: Path) -> None:
    with saved_figure(path, 1, 2, figsize=(11, 4.5), sharey=True) as (fig, axes):
        for axis, mode in zip(axes, ("deterministic", "sampled")):
            for penalty in sorted({record["penalty"] for record in records}):
                runs = [record for record in records if record["penalty"] == penalty]
                costs = [run[f"eval_cost_{mode}"] for run in runs]
                axis.scatter(costs, [run[f"eval_return_{mode}"] for run in runs], label=f"C={penalty:g}")
            axis.set_title(f"{records[0]['env_id']}: {mode} evaluation")
            axis.set_xlabel("episode cost (fraction of episodes with a violation)")
        axes[0].set_ylabel("episode return")
        axes[0].legend()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SafeHopper-v0")
    parser.add_argument("--algo", default="ppo", choices=[name for name, info in ALGOS.items() if not info.constrained])
    parser.add_argument("--penalties", nargs="+", type=float, required=True, help="values of C")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=200_000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("penalty_reference"))
    args = parser.parse_args()
    if any(penalty < 0 for penalty in args.penalties):
        parser.error("--penalties must be >= 0")
    th.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for penalty in args.penalties:
        for seed in args.seeds:
            records.append(run_one(args.env, args.algo, penalty, seed, args.timesteps, args.eval_episodes))
            print(json.dumps(records[-1]), flush=True)
            (args.out / "penalty_reference.json").write_text(
                json.dumps({"config": {k: str(v) for k, v in vars(args).items()}, "runs": records}, indent=1)
            )
    plot(records, args.out / "penalty_reference.png")
    print(f"wrote {args.out / 'penalty_reference.json'} and {args.out / 'penalty_reference.png'}")


if __name__ == "__main__":
    main()
