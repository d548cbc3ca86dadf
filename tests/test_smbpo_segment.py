"""The stretch of a resumed SMBPO benchmark run: counted from the resume, against the run's own cores' peak."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pytest
from benchmark_modules import load_benchmark
from test_smbpo_benchmark import Interrupted, tiny_args

bench = load_benchmark("smbpo")
segment_script = load_benchmark("smbpo_segment")

ONE_CORE_PEAK = 1e10


def run_resumed(algo: str, out_dir: Path, **settings: object) -> Path:
    """Train ``algo`` to 200 steps, keep a copy of that checkpoint's trace, resume to 300 and write the
    result as the benchmark does; returns the copied trace."""
    first = argparse.Namespace(**{**vars(tiny_args(out_dir, resume=False)), "steps": 200, **settings})
    bench.train(algo, first)
    start_trace = out_dir / f"{algo}_start_trace.json"
    shutil.copy(out_dir / f"{algo}_checkpoint" / "step_200" / "trace.json", start_trace)
    resumed = argparse.Namespace(
        **{**vars(tiny_args(out_dir, resume=True)), "eval_episodes": 1, "profile_steps": 0, **settings}
    )
    result = bench.algorithm_result(algo, resumed, ONE_CORE_PEAK, ONE_CORE_PEAK)
    (out_dir / f"{algo}_result.json").write_text(json.dumps(result))
    return start_trace


def test_a_background_fit_stretch_is_counted_from_the_resume_against_two_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smbpo_trace = run_resumed("smbpo", tmp_path, background_model_fit=True)
    sac_trace = run_resumed("sac", tmp_path, threads=2)
    out = tmp_path / "segment.json"
    monkeypatch.setattr(sys, "argv", ["smbpo_segment.py", "--out", str(out),
                                      "--run", "smbpo", str(smbpo_trace), str(tmp_path),
                                      "--run", "sac", str(sac_trace), str(tmp_path)])

    segment_script.main()

    report = json.loads(out.read_text())
    smbpo, sac = report["smbpo"], report["sac"]
    start, result = json.loads(smbpo_trace.read_text()), json.loads((tmp_path / "smbpo_result.json").read_text())
    assert (smbpo["from_step"], smbpo["to_step"], smbpo["env_steps"]) == (200, 300, 100)
    assert smbpo["smbpo_settings"] == {"model_precision": "float32", "rollout_freq": 1, "fused_sac_update": False,
                                       "sac_hidden_precision": "float32", "background_model_fit": True,
                                       "actor_learning_rate": 1e-4}
    assert "smbpo_settings" not in report["sac"]
    assert smbpo["wall_s"] == pytest.approx(result["wall_s_after_warmup"] - start["wall_s_after_warmup"])
    assert smbpo["falls"] == result["violations_after_warmup"] - start["violations_after_warmup"]
    # The background fit occupies a second core, so the stretch divides by two cores' peak, as the run did.
    assert smbpo["matmul_peak_flops_of_run"] == pytest.approx(2 * ONE_CORE_PEAK)
    assert smbpo["utilisation"] == pytest.approx(
        smbpo["flops_per_env_step"] / smbpo["s_per_env_step"] / (2 * ONE_CORE_PEAK)
    )
    # SAC with two threads measured its peak with two threads: one peak, not two.
    assert sac["matmul_peak_flops_of_run"] == pytest.approx(ONE_CORE_PEAK)
    sac_result = json.loads((tmp_path / "sac_result.json").read_text())
    assert sac["flops_per_env_step"] == pytest.approx(sac_result["flops_per_env_step"])  # SAC's work is per update
    assert report["time_ratio_smbpo_over_sac"] == pytest.approx(smbpo["s_per_env_step"] / sac["s_per_env_step"])


def test_the_stretch_counts_only_its_own_model_rollouts_and_fits(tmp_path: Path) -> None:
    start_trace = run_resumed("smbpo", tmp_path)
    start, result = json.loads(start_trace.read_text()), json.loads((tmp_path / "smbpo_result.json").read_text())
    model = segment_script.load_final_model("smbpo", tmp_path)
    rows = result["model_rows_after_warmup"] - start["model_rows_after_warmup"]
    updates = result["model_updates_after_warmup"] - start["model_updates_after_warmup"]
    # The initial model fit (at the warm-up's end, step 100) falls before the stretch.
    assert rows > 0 and updates < result["model_updates_after_warmup"]

    stretch = segment_script.segment(start, result, model)

    expected = bench.flops_per_env_step(model, 1, 32, rows / 100, updates / 100)
    assert stretch["flops_per_env_step"] == pytest.approx(expected)
    assert stretch["model_rows_per_step"] == rows / 100
    assert stretch["flops_per_env_step"] < result["flops_per_env_step"]


def test_a_stretch_from_a_checkpoint_saved_mid_run_counts_only_the_steps_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save = bench.Checkpoint.save
    start_trace = tmp_path / "start_trace.json"

    def save_then_stop_at_200(self, model, trace) -> None:  # type: ignore[no-untyped-def]
        save(self, model, trace)
        if model.num_timesteps == 200:
            shutil.copy(self.directory / "step_200" / "trace.json", start_trace)
            raise Interrupted

    monkeypatch.setattr(bench.Checkpoint, "save", save_then_stop_at_200)
    with pytest.raises(Interrupted):
        bench.train("smbpo", tiny_args(tmp_path, resume=False))  # a 300-step run, stopped at its checkpoint at 200
    monkeypatch.setattr(bench.Checkpoint, "save", save)
    resumed = argparse.Namespace(**{**vars(tiny_args(tmp_path, resume=True)), "eval_episodes": 1, "profile_steps": 0})
    result = bench.algorithm_result("smbpo", resumed, ONE_CORE_PEAK, ONE_CORE_PEAK)
    start = json.loads(start_trace.read_text())

    stretch = segment_script.segment(start, result, segment_script.load_final_model("smbpo", tmp_path))

    assert (stretch["from_step"], stretch["env_steps"]) == (200, 100)
    assert stretch["wall_s"] == pytest.approx(result["wall_s_after_warmup"] - start["wall_s_after_warmup"])
    assert stretch["falls"] == result["violations_after_warmup"] - (start["violations"] - start["violations_at_warmup_end"])


def test_a_trace_of_another_run_of_the_end_or_with_stale_counters_is_refused() -> None:
    result = {"steps": [100, 200, 300], "cumulative_violations": [3, 4, 6], "steps_after_warmup": 200,
              "run": {"learning_starts": 100}}
    other = {"steps": [100, 200], "cumulative_violations": [3, 5], "steps_after_warmup": 100, "warmup_done": True}
    with pytest.raises(ValueError, match="not a checkpoint of this run"):
        segment_script.check_same_run(other, result)
    end = {**result, "warmup_done": True}
    with pytest.raises(ValueError, match="no timed env step after the start trace"):
        segment_script.check_same_run(end, result)
    stale = {"steps": [100, 200], "cumulative_violations": [3, 4], "steps_after_warmup": 0, "warmup_done": True}
    with pytest.raises(ValueError, match="saved mid-run by an older"):
        segment_script.check_same_run(stale, result)


def test_one_stretch_per_algorithm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trace = str(tmp_path / "trace.json")
    monkeypatch.setattr(sys, "argv", ["smbpo_segment.py", "--out", str(tmp_path / "out.json"),
                                      "--run", "sac", trace, str(tmp_path), "--run", "sac", trace, str(tmp_path)])
    (tmp_path / "sac_result.json").write_text("{}")
    monkeypatch.setattr(segment_script, "segment", lambda start, result, model: {})
    monkeypatch.setattr(segment_script, "load_final_model", lambda algo, out_dir: None)
    (tmp_path / "trace.json").write_text("{}")
    with pytest.raises(SystemExit):
        segment_script.main()


def test_segments_of_different_settings_are_not_compared() -> None:
    sac = {"run": {"seed": 0}, "s_per_env_step": 0.1, "falls_after_warmup_total": 8}
    smbpo = {"run": {"seed": 1}, "s_per_env_step": 0.13, "falls_after_warmup_total": 2}
    with pytest.raises(ValueError, match="different settings"):
        segment_script.with_ratios({"smbpo": smbpo, "sac": sac})
    report = segment_script.with_ratios({"smbpo": {**smbpo, "run": sac["run"]}, "sac": sac})
    assert report["falls_after_warmup_ratio_smbpo_over_sac"] == 0.25
    assert report["time_ratio_smbpo_over_sac"] == pytest.approx(1.3)


def test_a_missing_checkpoint_names_the_flag_to_use(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--checkpoint-every"):
        segment_script.load_final_model("sac", tmp_path)
