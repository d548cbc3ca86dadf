"""The merge step of benchmarks/guss.py: runs split over processes combine into one summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark_modules import load_benchmark

guss_benchmark = load_benchmark("guss")


def saved_output(directory: Path, algo: str, seed: int, mar: float, p_unsafe: float, episodes: int = 50) -> Path:
    """A guss_benchmark.json as the script writes it, with one run."""
    run = {
        "seed": seed,
        "returns": [-400.0, -300.0],
        "p_unsafe": [p_unsafe, p_unsafe],
        "mean_rewards": [-2.0, -1.5],
        "train_seconds": 1.0,
        "steps_per_s": 10.0 if algo == "guss" else 30.0,
        "steps_per_cpu_s": 10.0 if algo == "guss" else 30.0,
        "metrics": {"mar": mar, "mrcp": 200.0, "p_unsafe": p_unsafe, "transient_p_unsafe": p_unsafe},
    }
    config = {
        "episodes": str(episodes), "model_epochs": "None", "seeds": f"[{seed}]", "envs": "['SafePendulum-v0']",
        "algos": f"['{algo}']",
    }
    directory.mkdir(parents=True)
    saved = {"config": config, "summary": {}, "runs": {"SafePendulum-v0": {algo: [run]}}}
    (directory / "guss_benchmark.json").write_text(json.dumps(saved))
    return directory


def test_merged_outputs_average_over_all_their_seeds(tmp_path: Path) -> None:
    folders = [
        saved_output(tmp_path / "g0", "guss", 0, mar=-3.0, p_unsafe=1.0),
        saved_output(tmp_path / "g1", "guss", 1, mar=-2.0, p_unsafe=0.0),
        saved_output(tmp_path / "c0", "cem", 0, mar=-1.0, p_unsafe=4.0),
    ]
    results, configs = guss_benchmark.merge_outputs(folders)
    assert len(configs) == 3
    assert [run["seed"] for run in results["SafePendulum-v0"]["guss"]] == [0, 1]

    summary = guss_benchmark.write_outputs(tmp_path / "merged", configs, results)["SafePendulum-v0"]
    assert summary["guss"]["mar"] == pytest.approx(-2.5)
    assert summary["guss"]["p_unsafe"] == pytest.approx(0.5)
    assert summary["guss"]["per_seed_p_unsafe"] == [1.0, 0.0]
    assert summary["cem"]["mar"] == pytest.approx(-1.0)
    assert summary["guss_over_cem_time_per_step"]["ratio"] == pytest.approx(3.0)
    written = json.loads((tmp_path / "merged" / "guss_benchmark.json").read_text())
    assert written["summary"]["SafePendulum-v0"]["guss"]["mar"] == pytest.approx(-2.5)
    assert (tmp_path / "merged" / "guss_benchmark.png").exists()


def test_outputs_of_different_budgets_are_not_merged(tmp_path: Path) -> None:
    folders = [
        saved_output(tmp_path / "a", "guss", 0, mar=-3.0, p_unsafe=1.0, episodes=20),
        saved_output(tmp_path / "b", "guss", 1, mar=-2.0, p_unsafe=0.0, episodes=50),
    ]
    with pytest.raises(ValueError, match="different --episodes"):
        guss_benchmark.merge_outputs(folders)


def with_config(folder: Path, **config: str) -> Path:
    config_file = folder / "guss_benchmark.json"
    saved = json.loads(config_file.read_text())
    saved["config"].update(config)
    config_file.write_text(json.dumps(saved))
    return folder


def test_outputs_of_other_params_for_one_algorithm_or_the_same_seed_twice_are_not_merged(tmp_path: Path) -> None:
    sigma = "['mutation_sigma=0.5']"
    guss_variant = with_config(saved_output(tmp_path / "a", "guss", 0, mar=-3.0, p_unsafe=1.0), params=sigma)
    cem = saved_output(tmp_path / "c", "cem", 0, mar=-1.0, p_unsafe=4.0)
    results, _ = guss_benchmark.merge_outputs([guss_variant, cem])  # a GuSS variant against plain CEM: fine
    assert set(results["SafePendulum-v0"]) == {"guss", "cem"}
    plain_guss = saved_output(tmp_path / "b", "guss", 1, mar=-2.0, p_unsafe=0.0)
    with pytest.raises(ValueError, match="different --params for guss"):
        guss_benchmark.merge_outputs([guss_variant, plain_guss])
    # Also when the variant comes inside an output that is itself a merge.
    results, configs = guss_benchmark.merge_outputs([guss_variant, cem])
    guss_benchmark.write_outputs(tmp_path / "merged", configs, results)
    with pytest.raises(ValueError, match="different --params for guss"):
        guss_benchmark.merge_outputs([tmp_path / "merged", plain_guss])
    other_threshold = with_config(saved_output(tmp_path / "d", "cem", 1, mar=-1.0, p_unsafe=4.0), thresholds="[-2.0]")
    with pytest.raises(ValueError, match="different MRCP threshold for SafePendulum-v0"):
        guss_benchmark.merge_outputs([cem, other_threshold])
    twice = [cem, saved_output(tmp_path / "e", "cem", 0, mar=-2.0, p_unsafe=0.0)]
    with pytest.raises(ValueError, match="the same run twice: SafePendulum-v0 cem seeds \\[0, 0\\]"):
        guss_benchmark.merge_outputs(twice)


def test_params_override_the_yaml_with_typed_values() -> None:
    overrides = guss_benchmark.parse_overrides(["n_warm_start=5", "mutation_sigma=0.1"])
    assert overrides == {"n_warm_start": 5, "mutation_sigma": 0.1}
    kwargs = guss_benchmark.algo_kwargs("guss", "SafePendulum-v0", model_epochs=7, overrides={"n_warm_start": 0})
    assert kwargs["n_warm_start"] == 0 and kwargs["model_epochs"] == 7 and kwargs["n_policies"] == 100
    with pytest.raises(ValueError, match="KEY=VALUE"):
        guss_benchmark.parse_overrides(["n_warm_start"])
    # YAML 1.1 reads 3e-4 (no dot) as a string; rl_zoo3's -params would give a float.
    exponents = guss_benchmark.parse_overrides(["learning_rate=3e-4", "lagrangian_kwargs={lr: 1e-2}", "schedule=lin_1e-3"])
    assert exponents == {"learning_rate": 3e-4, "lagrangian_kwargs": {"lr": 1e-2}, "schedule": "lin_1e-3"}
    assert guss_benchmark.parse_overrides(["label='7'", "mode=nan"]) == {"label": "7", "mode": "nan"}
