"""One stretch of a resumed ``benchmarks/smbpo.py`` run: the env steps between a checkpoint and the run's end.

A run continued with ``--resume`` reports its whole history, so its time per env step mixes every
setting and every code version it ran under. Given the trace of the checkpoint the run resumed from
(``<out-dir>/<algo>_checkpoint/step_<n>/trace.json``, kept from before the resume: the resumed run deletes
that folder once it saves a later one), this reports the stretch alone: env steps, wall time, falls, the
FLOPs of one env step's work counted from the stretch's own model rollouts and fits, and the utilisation
against the matmul peak of the cores the run occupied (the peak the run's own utilisation used, so a
background-fit run divides by two cores' peak). Usage::

    python benchmarks/smbpo_segment.py --out segment.json \\
        --run smbpo <copy>/smbpo_checkpoint/step_90000/trace.json <out-dir> \\
        --run sac <copy>/sac_checkpoint/step_90000/trace.json <out-dir>

The layer sizes come from the model of the run's last checkpoint in ``<out-dir>``; with both
algorithms the output also has the ratios SMBPO / SAC of the stretch's time per env step and falls.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from smbpo import ALGORITHMS, Checkpoint, flops_per_env_step, smbpo_over_sac
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm


def run_peak_flops(result: dict[str, Any]) -> float:
    """The matmul peak that ``result``'s utilisation was computed against (one measured peak times the
    cores the run occupied over its threads), recovered from the three numbers the result stores, so
    that results written before this script existed can be cut too."""
    utilisation = result["utilisation"]
    if not math.isfinite(utilisation) or utilisation <= 0:
        raise ValueError(f"the result's utilisation is {utilisation}: it has no timed env step to recover the peak from")
    return result["flops_per_env_step"] / result["wall_s_per_env_step"] / utilisation


def check_same_run(start: dict[str, Any], result: dict[str, Any]) -> None:
    """Refuse a start trace that is not an earlier state of the run that wrote ``result``."""
    recorded = len(start["steps"])
    if recorded and start["warmup_done"] and result["run"]["learning_starts"] + start["steps_after_warmup"] < start["steps"][-1]:
        # Checkpoints written before benchmarks/smbpo.py kept these counters current at every save.
        raise ValueError(f"the start trace's after-warm-up counters stop at step "
                         f"{result['run']['learning_starts'] + start['steps_after_warmup']} although it records step "
                         f"{start['steps'][-1]}: a checkpoint saved mid-run by an older benchmarks/smbpo.py")
    if (
        result["steps"][:recorded] != start["steps"]
        or result["cumulative_violations"][:recorded] != start["cumulative_violations"]
    ):
        raise ValueError("the start trace is not a checkpoint of this run: its recorded steps and violations "
                         "are not the start of the result's")
    if result["steps_after_warmup"] <= start["steps_after_warmup"]:
        raise ValueError(f"the run has no timed env step after the start trace (both at "
                         f"{start['steps_after_warmup']} steps after the warm-up)")


def segment(start: dict[str, Any], result: dict[str, Any], model: OffPolicyAlgorithm) -> dict[str, Any]:
    """The numbers of the env steps between the ``start`` trace and the end of ``result``'s run."""
    check_same_run(start, result)
    steps = result["steps_after_warmup"] - start["steps_after_warmup"]
    wall_s = result["wall_s_after_warmup"] - start["wall_s_after_warmup"]
    learning_starts = result["run"]["learning_starts"]
    peak = run_peak_flops(result)
    model_rows_per_step = (result["model_rows_after_warmup"] - start["model_rows_after_warmup"]) / steps
    flops = flops_per_env_step(
        model,
        result["run"]["gradient_steps"],
        result["run"]["batch_size"],
        model_rows_per_step,
        (result["model_updates_after_warmup"] - start["model_updates_after_warmup"]) / steps,
    )
    return {
        "from_step": learning_starts + start["steps_after_warmup"],
        "to_step": learning_starts + result["steps_after_warmup"],
        "env_steps": steps,
        "wall_s": wall_s,
        "s_per_env_step": wall_s / steps,
        "env_steps_per_s": steps / wall_s,
        "falls": result["violations_after_warmup"] - start["violations_after_warmup"],
        "falls_after_warmup_total": result["violations_after_warmup"],
        "model_rows_per_step": model_rows_per_step,
        "flops_per_env_step": flops,
        "matmul_peak_flops_of_run": peak,
        "utilisation": flops / (wall_s / steps) / peak,
        # The run's final evaluation (the mean over its snapshots with --eval-snapshots), not the stretch's own.
        "eval_return": result["eval_return"],
        "eval_violations_mean": result["eval_violations"],
        "run": result["run"],
        **{key: result[key] for key in ("smbpo_settings", "profile") if key in result},
    }


def load_final_model(algo: str, out_dir: Path) -> OffPolicyAlgorithm:
    """The model of the last checkpoint that ``benchmarks/smbpo.py`` saved in ``out_dir``."""
    folder = Checkpoint(out_dir / f"{algo}_checkpoint").latest_folder()
    if folder is None:
        raise FileNotFoundError(f"no {algo} checkpoint in {out_dir}: run benchmarks/smbpo.py with --checkpoint-every")
    return ALGORITHMS[algo].load(folder / "model.zip", device="cpu")


def with_ratios(segments: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The segments, and SMBPO / SAC ratios when both algorithms are there."""
    report: dict[str, Any] = dict(segments)
    if {"smbpo", "sac"} <= segments.keys():
        time_ratio, falls_ratio = smbpo_over_sac(
            segments["smbpo"], segments["sac"], "s_per_env_step", "falls_after_warmup_total"
        )
        report["time_ratio_smbpo_over_sac"] = time_ratio
        report["falls_after_warmup_ratio_smbpo_over_sac"] = falls_ratio
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs=3, action="append", required=True, metavar=("ALGO", "START_TRACE", "OUT_DIR"),
                        help="an algorithm (sac or smbpo), the trace.json it resumed from, and its --out-dir")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args()
    segments: dict[str, dict[str, Any]] = {}
    for algo, start_trace, out_dir in args.run:
        if algo not in ALGORITHMS:
            parser.error(f"--run: unknown algorithm {algo!r}; choose from {sorted(ALGORITHMS)}")
        if algo in segments:
            parser.error(f"--run: {algo} given twice; one stretch per algorithm")
        result = json.loads((Path(out_dir) / f"{algo}_result.json").read_text())
        start = json.loads(Path(start_trace).read_text())
        segments[algo] = segment(start, result, load_final_model(algo, Path(out_dir)))
    report = with_ratios(segments)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk not in ("run", "profile")} if isinstance(v, dict) else v)
                      for k, v in report.items()}, indent=1))


if __name__ == "__main__":
    main()
