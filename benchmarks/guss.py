"""Benchmark GuSS against CEM, RCEM, RS and S-RS on SafePendulum-v0 and SafeAcrobot-v0 (SPEC.md 2.4 and 3).

Each (env, algorithm, seed) trains for ``--episodes`` episodes with the hyper-parameters of
``hyperparams/<algo>.yml`` (optionally with fewer model epochs, ``--model-epochs``), then the
planner's speed is timed on ``--speed-steps`` real control steps. Writes ``guss_benchmark.json``
(per-epoch return and p(unsafe), the metrics and the speeds), ``guss_benchmark.png`` (return and
p(unsafe) per epoch, mean and min/max over seeds) and prints a table of MAR, MRCP(τ),
p(unsafe), transient p(unsafe), control steps per wall-clock and per CPU second, and the GuSS/CEM
time per control step ratio.

Example (a smoke run)::

    python benchmarks/guss.py --episodes 3 --seeds 0 1 2 --model-epochs 20 --out /tmp/guss_bench

Runs split over cores (e.g. one seed per process) are combined afterwards, without training, by
``--merge DIR [DIR ...] --out DIR`` (same JSON, PNG and table over all the runs)::

    python benchmarks/guss.py --merge /tmp/guss_s0 /tmp/guss_s1 --out /tmp/guss_merged

The paper's MRCP thresholds τ did not survive in the appendix text; the defaults below
(per-step mean reward) are ours and can be changed with ``--thresholds``.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import yaml
from bench_params import parse_overrides
from bench_plots import saved_figure

import sb3_safe  # noqa: F401 - registers the envs
from sb3_safe.common.metrics import TrainingLog, summarize
from sb3_safe.guss import CEM, RCEM, RS, SRS, GuSS, ShootingAlgorithm

ALGOS: dict[str, type[ShootingAlgorithm]] = {"guss": GuSS, "cem": CEM, "rcem": RCEM, "rs": RS, "srs": SRS}
ENVS = ("SafePendulum-v0", "SafeAcrobot-v0")
# Per-step mean reward thresholds of MRCP (ours: Pendulum swung up, Acrobot tip about 1.5 above hanging).
DEFAULT_THRESHOLDS = {"SafePendulum-v0": -1.0, "SafeAcrobot-v0": 1.5}
HYPERPARAMS_DIR = Path(__file__).resolve().parents[1] / "hyperparams"
ZOO_ONLY_KEYS = ("n_timesteps", "policy", "n_envs")
SUMMARY_KEYS = ("mar", "mrcp", "p_unsafe", "transient_p_unsafe")
EPISODE_LENGTH = 200
"""Steps per episode of both envs (they never terminate early)."""
Results = dict[str, dict[str, list[dict[str, Any]]]]
"""env id -> algorithm -> one record per seed (curves, metrics, speeds)."""


def algo_kwargs(
    algo: str, env_id: str, model_epochs: int | None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The constructor arguments of ``hyperparams/<algo>.yml`` for ``env_id``, updated by ``overrides``."""
    entry = dict(yaml.safe_load((HYPERPARAMS_DIR / f"{algo}.yml").read_text())[env_id])
    for key in ZOO_ONLY_KEYS:
        entry.pop(key, None)
    if isinstance(entry.get("policy_kwargs"), str):
        entry["policy_kwargs"] = eval(entry["policy_kwargs"])  # the zoo's convention for dict strings
    if model_epochs is not None:
        entry["model_epochs"] = model_epochs
    entry.update(overrides or {})
    return entry


def planning_speed(model: ShootingAlgorithm, n_steps: int) -> tuple[float, float]:
    """Control steps per second of ``model.predict`` while acting in its env.

    :return: steps per wall-clock second, and per second of this process's CPU time (the speed
        on an idle core: on a shared machine the wall-clock figure mostly measures the load)
    """
    env = model.get_env()
    assert env is not None
    obs = env.reset()
    wall, cpu = 0.0, 0.0
    for _ in range(n_steps):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        action, _ = model.predict(obs, deterministic=True)
        wall += time.perf_counter() - start_wall
        cpu += time.process_time() - start_cpu
        obs, _, _, _ = env.step(action)
    return n_steps / wall, n_steps / max(cpu, 1e-9)


def run_one(
    env_id: str,
    algo: str,
    seed: int,
    episodes: int,
    model_epochs: int | None,
    speed_steps: int,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    kwargs = algo_kwargs(algo, env_id, model_epochs, overrides)
    model = ALGOS[algo]("MlpPolicy", env_id, seed=seed, **kwargs)
    start = time.perf_counter()
    model.learn(episodes * EPISODE_LENGTH)
    train_seconds = time.perf_counter() - start
    log = TrainingLog.from_records(model.training_log)
    wall_speed, cpu_speed = planning_speed(model, speed_steps)
    return {
        "seed": seed,
        "returns": log.returns.tolist(),
        "p_unsafe": log.p_unsafe.tolist(),
        "mean_rewards": log.mean_rewards.tolist(),
        "train_seconds": train_seconds,
        "steps_per_s": wall_speed,
        "steps_per_cpu_s": cpu_speed,
        "log": log,
    }


def plot(results: Results, path: Path) -> None:
    with saved_figure(path, 2, len(results), figsize=(6 * len(results), 7), squeeze=False) as (fig, axes):
        for column, (env_id, per_algo) in enumerate(results.items()):
            for algo, runs in per_algo.items():
                for row, key in enumerate(("returns", "p_unsafe")):
                    curves = np.array([run[key] for run in runs])
                    epochs = np.arange(1, curves.shape[1] + 1)
                    axis = axes[row, column]
                    axis.plot(epochs, curves.mean(axis=0), label=algo)
                    axis.fill_between(epochs, curves.min(axis=0), curves.max(axis=0), alpha=0.2)
            axes[0, column].set_title(env_id)
            axes[0, column].set_ylabel("episode return")
            axes[1, column].set_ylabel("p(unsafe) [%]")
            axes[1, column].set_xlabel("epoch (episode)")
            axes[0, column].legend()


def summarise(results: Results) -> dict[str, dict[str, Any]]:
    """Per env and algorithm: the mean over seeds of the metrics and speeds, the per-seed values,
    and the GuSS / CEM time per control step where both ran."""
    summary: dict[str, dict[str, Any]] = {}
    for env_id, per_algo in results.items():
        summary[env_id] = {}
        for algo, runs in per_algo.items():
            # Mean over seeds; MRCP is inf when a seed never reached the threshold.
            row: dict[str, Any] = {key: float(np.mean([run["metrics"][key] for run in runs])) for key in SUMMARY_KEYS}
            for key in ("steps_per_s", "steps_per_cpu_s"):
                row[key] = float(np.mean([run[key] for run in runs]))
            row["per_seed_mar"] = [run["metrics"]["mar"] for run in runs]
            row["per_seed_p_unsafe"] = [run["metrics"]["p_unsafe"] for run in runs]
            summary[env_id][algo] = row
        if "guss" in summary[env_id] and "cem" in summary[env_id]:
            # Time per control step ratio = inverse ratio of the speeds.
            guss, cem = summary[env_id]["guss"], summary[env_id]["cem"]
            summary[env_id]["guss_over_cem_time_per_step"] = {
                "ratio": cem["steps_per_s"] / guss["steps_per_s"],
                "cpu_ratio": cem["steps_per_cpu_s"] / guss["steps_per_cpu_s"],
            }
    return summary


def load_saved_runs(directories: list[Path], filename: str) -> tuple[Results, list[dict[str, str]]]:
    """The runs in ``filename`` of each folder (an output of this script or of
    ``benchmarks/guss_true_model.py``), combined per env and algorithm (or variant label), and the
    configs they were made with."""
    results: Results = {}
    configs = []
    for directory in directories:
        saved = json.loads((directory / filename).read_text())
        configs.extend(saved["config"] if isinstance(saved["config"], list) else [saved["config"]])
        for env_id, per_algo in saved["runs"].items():
            for algo, runs in per_algo.items():
                results.setdefault(env_id, {}).setdefault(algo, []).extend(runs)
    return results, configs


def merge_outputs(directories: list[Path]) -> tuple[Results, list[dict[str, str]]]:
    """The runs of several earlier outputs of this script (e.g. one per seed, run on different cores),
    combined per env and algorithm, and their configs.

    :raises ValueError: if the outputs were made with different settings (episodes, model epochs, threads,
        timed control steps; ``--params`` for one algorithm, MRCP threshold for one env) or hold the same
        (env, algorithm, seed) twice
    """
    results, configs = load_saved_runs(directories, "guss_benchmark.json")
    check_mergeable(results, configs, ("episodes", "model_epochs", "threads", "speed_steps"))
    return results, configs


def check_mergeable(results: Results, configs: list[dict[str, str]], same_keys: tuple[str, ...]) -> None:
    """Refuse merged outputs made with different settings or holding a run twice.

    :param results: the combined runs per env and algorithm (or variant label)
    :param configs: the configs of the outputs combined (an output that is itself a merge brings the configs
        of the outputs it was made from)
    :param same_keys: config keys that must agree across all outputs
    :raises ValueError: naming the setting or the repeated runs
    """
    for key in same_keys:
        values = {str(config.get(key)) for config in configs}
        if len(values) > 1:
            raise ValueError(f"cannot merge outputs made with different --{key.replace('_', '-')}: {sorted(values)}")
    # --params may differ between variants (a GuSS variant merged with plain CEM runs) and MRCP thresholds
    # between envs, but not within one variant or env.
    seen: dict[str, str] = {}
    for config in configs:
        for part, value in settings_per_part(config):
            if seen.setdefault(part, value) != value:
                raise ValueError(f"cannot merge outputs made with different {part}: {seen[part]} and {value}")
    for env_id, per_algo in results.items():
        for algo, runs in per_algo.items():
            seeds = [run["seed"] for run in runs]
            if len(seeds) != len(set(seeds)):
                raise ValueError(f"cannot merge outputs holding the same run twice: {env_id} {algo} seeds {sorted(seeds)}")


def settings_per_part(config: dict[str, str]) -> list[tuple[str, str]]:
    """The MRCP threshold of each env and the ``--params`` of each variant (``--label``, else each planner of
    ``--algos``) of one output's config, as (part, value) pairs."""
    envs = ast.literal_eval(config["envs"])
    given = ast.literal_eval(config.get("thresholds", "None"))
    thresholds = DEFAULT_THRESHOLDS if given is None else dict(zip(envs, given))
    label = config.get("label", "None")
    if label != "None":  # a variant of benchmarks/guss_true_model.py
        variants = [label]
    else:
        variants = ast.literal_eval(config["algos"]) if "algos" in config else list(ALGOS)
    return [
        *((f"MRCP threshold for {env_id}", str(thresholds[env_id])) for env_id in envs),
        *((f"--params for {variant}", config.get("params", "[]")) for variant in variants),
    ]


def print_table(summary: dict[str, dict[str, Any]]) -> None:
    header = f"{'env':<17} {'algo':<5} {'MAR':>8} {'MRCP':>8} {'p(unsafe)%':>11} {'transient%':>11}"
    print(f"\n{header} {'steps/s':>8} {'steps/cpu-s':>12}")
    for env_id, per_algo in summary.items():
        for algo, row in per_algo.items():
            if algo == "guss_over_cem_time_per_step":
                ratios = f"{row['ratio']:.2f} (CPU time: {row['cpu_ratio']:.2f})"
                print(f"{env_id:<17} GuSS/CEM time per control step: {ratios}")
                continue
            print(
                f"{env_id:<17} {algo:<5} {row['mar']:>8.3f} {row['mrcp']:>8.0f} {row['p_unsafe']:>11.2f} "
                f"{row['transient_p_unsafe']:>11.2f} {row['steps_per_s']:>8.1f} {row['steps_per_cpu_s']:>12.1f}"
            )


def write_outputs(out: Path, config: Any, results: Results) -> dict[str, dict[str, Any]]:
    """Write ``guss_benchmark.json`` and ``.png`` into ``out``, print the table; return the summary."""
    summary = summarise(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "guss_benchmark.json").write_text(
        json.dumps({"config": config, "summary": summary, "runs": results}, indent=1)
    )
    plot(results, out / "guss_benchmark.png")
    print_table(summary)
    print(f"\nwrote {out / 'guss_benchmark.json'} and {out / 'guss_benchmark.png'}")
    return summary


def add_planner_run_arguments(parser: argparse.ArgumentParser, episodes_help: str) -> None:
    """The command-line arguments shared with ``benchmarks/guss_true_model.py``: what to run and how
    to combine runs split over processes."""
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=ENVS)
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=10, help=episodes_help)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (tiny networks: 1 is fastest)")
    parser.add_argument(
        "--params",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="constructor arguments overriding the YAML's for every algorithm in --algos (e.g. n_warm_start=1)",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        help="run nothing: combine the outputs in these folders (e.g. one per seed) into --out",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_planner_run_arguments(parser, "training episodes (epochs) per run")
    parser.add_argument("--model-epochs", type=int, default=None, help="override the model epochs per refit (300)")
    parser.add_argument("--speed-steps", type=int, default=20, help="control steps timed after training")
    parser.add_argument("--thresholds", nargs="+", type=float, default=None, help="MRCP tau per env, in --envs order")
    parser.add_argument("--out", type=Path, default=Path("guss_benchmark"))
    args = parser.parse_args()
    if args.merge is not None:
        results, configs = merge_outputs(args.merge)
        write_outputs(args.out, configs, results)
        return
    if args.episodes < 2:
        parser.error("--episodes must be >= 2 (the first episode is random)")
    thresholds = DEFAULT_THRESHOLDS if args.thresholds is None else dict(zip(args.envs, args.thresholds, strict=True))
    th.set_num_threads(args.threads)
    try:
        overrides = parse_overrides(args.params)
    except ValueError as error:
        parser.error(str(error))

    results: Results = {}
    for env_id in args.envs:
        results[env_id] = {}
        for algo in args.algos:
            runs = []
            for seed in args.seeds:
                run = run_one(env_id, algo, seed, args.episodes, args.model_epochs, args.speed_steps, overrides)
                run["metrics"] = summarize(run.pop("log"), thresholds[env_id])
                runs.append(run)
                print(f"{env_id} {algo} seed {seed}: {run['metrics']} steps/s {run['steps_per_s']:.1f}", flush=True)
            results[env_id][algo] = runs
    write_outputs(args.out, {k: str(v) for k, v in vars(args).items()}, results)


if __name__ == "__main__":
    main()
