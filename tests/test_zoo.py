"""The RL Zoo plug-in: start-up hook, algorithm registry, hyper-parameter files, samplers.

The command-line tests run the installed package in a subprocess (cwd = tmp_path), as a
user would after ``pip install``; the others exercise the same patches in-process.
"""

from __future__ import annotations

import csv
import inspect
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml

from sb3_safe.envs import SAFE_ENVS
from sb3_safe.zoo import (
    ZOO_ALGOS,
    AlgorithmUnavailableError,
    available_algos,
    default_hyperparams_file,
    hyperparams_dir,
    load_algo,
    register_with_zoo,
    unavailable_algos,
)
from sb3_safe.zoo import registry
from sb3_safe.zoo.callbacks import PENALTY_VARIABLE, CostAwareTrialEvalCallback, cost_aware_objective
from sb3_safe.zoo.integration import explain_unavailable_algo, patch_utils, requested_algo
from sb3_safe.zoo.samplers import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER

REPO_HYPERPARAMS = Path(__file__).resolve().parents[1] / "hyperparams"
LAGRANGIAN_FILES = ("ppo_lag", "trpo_lag", "sac_lag", "cpo")
ENV_ID = "SafePendulum-v0"
PLANNERS = ("guss", "rs", "srs", "cem", "rcem")
# Keys rl_zoo3 consumes itself instead of passing them to the algorithm's constructor.
ZOO_KEYS = {"n_timesteps", "n_envs", "normalize", "env_wrapper", "vec_env_wrapper", "frame_stack", "callback",
            "monitor_kwargs", "env_kwargs", "noise_type", "noise_std"}
# Tiny settings that make a zoo run of a few hundred steps take seconds.
TINY_PARAMS: dict[str, list[str]] = {
    "ppo_lag": ["n_envs:1", "n_steps:64", "batch_size:32", "n_epochs:1"],
    "trpo_lag": ["n_envs:1", "n_steps:64", "batch_size:32", "n_critic_updates:1"],
    "cpo": ["n_envs:1", "n_steps:64", "batch_size:32", "n_critic_updates:1"],
    "sac_lag": ["learning_starts:64", "batch_size:32", "buffer_size:1000"],
    "smbpo": ["learning_starts:64", "batch_size:32", "buffer_size:1000", "model_buffer_size:1000", "gradient_steps:1",
              "model_train_freq:64", "model_gradient_steps:2", "model_initial_gradient_steps:2", "rollout_batch_size:8",
              "ensemble_size:2", "model_hidden_size:16"],
    "guss": ["model_epochs:2", "horizon:3", "n_policies:10", "n_initial_policies:5", "n_policies_per_generation:5",
             "grid_size:5"],
    "rs": ["model_epochs:2", "horizon:3", "n_sequences:8"],
    "srs": ["model_epochs:2", "horizon:3", "n_sequences:8"],
    "cem": ["model_epochs:2", "horizon:3", "n_sequences:8", "n_elites:2", "n_iterations:1"],
    "rcem": ["model_epochs:2", "horizon:3", "n_sequences:8", "n_elites:2", "n_iterations:1"],
}
# Past the first 200-step SafePendulum-v0 episode: the planners act at random in it, refit their model when it
# ends and plan from then on, so their zoo runs exercise planning too.
N_STEPS = "210"
TIMEOUT_S = 300


def run_python(args: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(extra_env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def assert_ok(result: subprocess.CompletedProcess) -> None:
    output = f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"exit {result.returncode}\n{output}"


def train_args(algo: str) -> list[str]:
    return ["--algo", algo, "--env", ENV_ID, "-n", N_STEPS, "--eval-freq", "-1", "--seed", "0",
            "--num-threads", "1", "-params", *TINY_PARAMS[algo]]


def enjoy_args(algo: str) -> list[str]:
    return ["--algo", algo, "--env", ENV_ID, "-f", "logs/", "-n", "20", "--no-render", "--num-threads", "1"]


# ----------------------------------------------------------------------------- start-up hook


def test_startup_hook_is_installed_and_lazy(tmp_path: Path) -> None:
    probe = (
        "import json, sys, gymnasium\n"
        "heavy = ('torch', 'rl_zoo3', 'stable_baselines3', 'sb3_safe')\n"
        "at_start = {name: name in sys.modules for name in heavy}\n"
        "hooked = any(type(f).__name__ == 'ZooImportHook' for f in sys.meta_path)\n"
        "import sb3_safe.zoo\n"
        "print(json.dumps({'at_start': at_start, 'hooked': hooked, 'torch_after_zoo': 'torch' in sys.modules}))\n"
    )
    result = run_python(["-c", probe], cwd=tmp_path)
    assert_ok(result)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["hooked"], "sb3_safe_zoo_hook.pth is not active: reinstall with `pip install -e .`"
    assert report["at_start"] == {"torch": False, "rl_zoo3": False, "stable_baselines3": False, "sb3_safe": False}
    assert not report["torch_after_zoo"], "importing sb3_safe.zoo must not import torch"


def test_hook_can_be_switched_off(tmp_path: Path) -> None:
    probe = "import sys; print(any(type(f).__name__ == 'ZooImportHook' for f in sys.meta_path))"
    result = run_python(["-c", probe], cwd=tmp_path, extra_env={"SB3_SAFE_ZOO_HOOK": "0"})
    assert_ok(result)
    assert result.stdout.strip() == "False"


def test_hook_ignores_other_modules_and_survives_a_failing_patch() -> None:
    import types

    import sb3_safe_zoo_hook as hook

    assert hook.ZooImportHook().find_spec("json", None) is None

    class DoNothingLoader:
        def create_module(self, spec: Any) -> None:
            return None

        def exec_module(self, module: types.ModuleType) -> None:
            module.executed = True

    loader = hook._PatchAfterExecLoader(DoNothingLoader(), "no_such_patch")
    module = types.ModuleType("rl_zoo3.somewhere")
    with pytest.warns(RuntimeWarning, match="sb3-safe could not plug into rl_zoo3.somewhere"):
        loader.exec_module(module)
    assert module.executed


# ----------------------------------------------------------------------------- registry


def test_registry_lists_every_algorithm_lazily() -> None:
    assert set(ZOO_ALGOS) == {"ppo_lag", "trpo_lag", "sac_lag", "cpo", "smbpo", "guss", "rs", "srs", "cem", "rcem"}
    assert unavailable_algos() == {}
    for name in ZOO_ALGOS:  # what the command-line tests below train with
        assert default_hyperparams_file(name) is not None, name
        assert name in TINY_PARAMS, name
    for name, algo_class in available_algos().items():
        assert algo_class is load_algo(name)
        assert algo_class.__name__ == ZOO_ALGOS[name].partition(":")[2]


def test_unavailable_algorithm_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ZOO_ALGOS, "ghost", "sb3_safe.no_such_module:Ghost")
    registry._import_result.cache_clear()
    try:
        with pytest.raises(AlgorithmUnavailableError, match=r"'ghost'.*sb3_safe\.no_such_module"):
            load_algo("ghost")
        assert "ghost" in unavailable_algos() and "ghost" not in available_algos()
        zoo_utils = SimpleNamespace(ALGOS={})
        patch_utils(zoo_utils)  # what the hook does to rl_zoo3.utils: an unusable name stays out of --algo's choices
        assert "ghost" not in zoo_utils.ALGOS and zoo_utils.ALGOS["ppo_lag"] is load_algo("ppo_lag")
        explanation = explain_unavailable_algo(["--env", ENV_ID, "--algo", "ghost"])
        assert explanation is not None and "no_such_module" in explanation
        assert explain_unavailable_algo(["--algo=ppo"]) is None
    finally:
        registry._import_result.cache_clear()
    with pytest.raises(KeyError, match="not an sb3-safe zoo algorithm"):
        load_algo("ppo")


def test_requested_algo_reads_both_spellings() -> None:
    assert requested_algo(["--env", "X", "--algo", "sac_lag"]) == "sac_lag"
    assert requested_algo(["--algo=cpo"]) == "cpo"
    assert requested_algo(["--env", "X"]) is None


def test_patches_register_algorithms_envs_and_samplers() -> None:
    register_with_zoo()
    import gymnasium as gym
    from rl_zoo3 import exp_manager, hyperparams_opt
    from rl_zoo3.utils import ALGOS

    for name, algo_class in available_algos().items():
        assert ALGOS[name] is algo_class
        if name in HYPERPARAMS_SAMPLER:
            assert hyperparams_opt.HYPERPARAMS_SAMPLER[name] is HYPERPARAMS_SAMPLER[name]
            assert hyperparams_opt.HYPERPARAMS_CONVERTER[name] is HYPERPARAMS_CONVERTER[name]
    assert set(SAFE_ENVS) <= set(gym.registry)
    assert exp_manager.TrialEvalCallback is CostAwareTrialEvalCallback
    register_with_zoo()  # idempotent: no double wrapping
    assert exp_manager.ExperimentManager.__init__.__wrapped__.__module__ == "rl_zoo3.exp_manager"


# ----------------------------------------------------------------------------- hyper-parameter files


@pytest.mark.parametrize("algo", LAGRANGIAN_FILES)
def test_hyperparameter_file_covers_every_env(algo: str) -> None:
    path = REPO_HYPERPARAMS / f"{algo}.yml"
    entries = yaml.safe_load(path.read_text())
    expected = set(SAFE_ENVS) - ({"SafeAcrobot-v0"} if algo == "sac_lag" else set())
    assert expected <= set(entries), f"{path} lacks {expected - set(entries)}"
    if algo == "sac_lag":
        assert "SafeAcrobot-v0" not in entries and "Discrete" in path.read_text()
    assert entries["default"]["cost_limit"] == 25.0  # the published Safety Gym limit, for other envs
    for env_id in expected:
        assert 0 < entries[env_id]["cost_limit"] < 25, f"{algo}/{env_id}: choose an env-specific cost_limit"
        assert entries[env_id]["policy"] == "MlpPolicy"
    # SMBPO envs: an episode costs 0 or 1, so the limit is a fraction of violating episodes.
    for env_id in ("SafeHopper-v0", "SafeHalfCheetah-v0", "SafeAnt-v0", "SafeHumanoid-v0"):
        assert entries[env_id]["cost_limit"] < 1


@pytest.mark.parametrize("algo", LAGRANGIAN_FILES)
def test_hyperparameter_keys_are_constructor_arguments(algo: str) -> None:
    accepted = set(inspect.signature(load_algo(algo).__init__).parameters)
    entries = yaml.safe_load((REPO_HYPERPARAMS / f"{algo}.yml").read_text())
    for env_id, entry in entries.items():
        unknown = set(entry) - ZOO_KEYS - accepted
        assert not unknown, f"{algo}.yml/{env_id}: {unknown} are not arguments of {ZOO_ALGOS[algo]}"


def test_package_hyperparams_are_the_repository_files() -> None:
    for algo in LAGRANGIAN_FILES:
        found = default_hyperparams_file(algo)
        assert found is not None and found.read_text() == (REPO_HYPERPARAMS / f"{algo}.yml").read_text()
    assert default_hyperparams_file("ppo") is None
    assert hyperparams_dir().is_dir()


BUILD_INPUTS = ("sb3_safe", "hyperparams", "pyproject.toml", "_sb3_safe_build.py", "sb3_safe_zoo_hook.py",
                "sb3_safe_zoo_hook.pth", "MANIFEST.in", "README.md")


def test_wheel_and_editable_wheel_ship_the_hook(tmp_path: Path) -> None:
    repo = REPO_HYPERPARAMS.parent
    source = tmp_path / "src"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (repo / name).is_dir():
            shutil.copytree(repo / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif (repo / name).is_file():
            shutil.copy2(repo / name, source / name)
    build = (
        "from setuptools import build_meta as b\n"
        "print('BUILT', b.build_wheel('dist'), b.build_editable('dist'), b.build_sdist('sdist'))\n"
    )
    result = run_python(["-c", build], cwd=source)
    assert_ok(result)
    built = [line.split() for line in result.stdout.splitlines() if line.startswith("BUILT ")]
    assert built, result.stdout[-2000:]
    wheel_name, editable_name, sdist_name = built[-1][1:]
    # a wheel built from the sdist (what `python -m build` does) must be the same
    with tarfile.open(source / "sdist" / sdist_name) as sdist:
        sdist.extractall(tmp_path / "unpacked", filter="data")
    from_sdist = run_python(
        ["-c", f"from setuptools import build_meta as b; print('BUILT', b.build_wheel({str(tmp_path / 'dist2')!r}))"],
        cwd=tmp_path / "unpacked" / sdist_name.removesuffix(".tar.gz"),
    )
    assert_ok(from_sdist)
    wheel_from_sdist = [line.split() for line in from_sdist.stdout.splitlines() if line.startswith("BUILT ")][-1][1]
    for wheel_path in (source / "dist" / wheel_name, tmp_path / "dist2" / wheel_from_sdist):
        with zipfile.ZipFile(wheel_path) as wheel:
            names = set(wheel.namelist())
            assert {"sb3_safe_zoo_hook.pth", "sb3_safe_zoo_hook.py"} <= names  # at the root of site-packages
            for algo in LAGRANGIAN_FILES:
                packaged = wheel.read(f"sb3_safe/zoo/hyperparams/{algo}.yml").decode()
                assert packaged == (REPO_HYPERPARAMS / f"{algo}.yml").read_text()
            assert wheel.read("sb3_safe_zoo_hook.pth").decode().startswith("import ")  # site runs "import" lines
    with zipfile.ZipFile(source / "dist" / editable_name) as editable:
        assert "sb3_safe_zoo_hook.pth" in editable.namelist()


def make_manager(tmp_path: Path, algo: str, **kwargs: Any) -> Any:
    register_with_zoo()
    import argparse

    from rl_zoo3.exp_manager import ExperimentManager

    return ExperimentManager(argparse.Namespace(), algo, ENV_ID, str(tmp_path / "logs"), seed=0, device="cpu", **kwargs)


def test_exp_manager_falls_back_to_package_file_but_keeps_conf(tmp_path: Path) -> None:
    assert make_manager(tmp_path, "ppo_lag").config == str(default_hyperparams_file("ppo_lag"))
    custom = tmp_path / "mine.yml"
    assert make_manager(tmp_path, "ppo_lag", config=str(custom)).config == str(custom)
    assert make_manager(tmp_path, "ppo").config.endswith(os.path.join("rl_zoo3", "hyperparams", "ppo.yml"))


def test_missing_hyperparameter_file_says_to_pass_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sb3_safe.zoo import integration

    monkeypatch.setattr(integration, "default_hyperparams_file", lambda algo: None)
    with pytest.raises(FileNotFoundError, match=r"--algo rs.*-conf"):
        make_manager(tmp_path, "rs")


def test_bad_hyperparameter_key_names_the_key(tmp_path: Path) -> None:
    manager = make_manager(tmp_path, "ppo_lag", hyperparams={"n_steps": 32, "not_a_parameter": 1}, eval_freq=-1)
    with pytest.raises(TypeError, match=r"not_a_parameter.*ppo_lag.*ppo_lag\.yml"):
        manager.setup_experiment()


# ----------------------------------------------------------------------------- Optuna


def test_cost_aware_objective() -> None:
    assert cost_aware_objective(100.0, 0.05, 0.1, 1.0) == 100.0  # feasible: the return itself
    assert cost_aware_objective(100.0, 0.2, 0.1, 1.0) == pytest.approx(100.0 - 101.0)  # double the limit
    assert cost_aware_objective(-300.0, 0.6, 0.3, 1.0) == pytest.approx(-300.0 - 301.0)
    assert cost_aware_objective(100.0, 0.2, 0.1, 0.0) == 100.0  # k = 0: the zoo's plain objective
    assert cost_aware_objective(10.0, 3.0, 0.0, 1.0) < -1e6  # zero limit: any cost is heavily penalised


PARENT_TRIAL_VALUES: dict[str, dict[str, Any]] = {
    "on_policy": {"batch_size_pow": 5, "n_steps_pow": 6, "one_minus_gamma": 0.01, "one_minus_gae_lambda": 0.05,
                  "learning_rate": 3e-4, "net_arch": "small", "activation_fn": "tanh"},
    "ppo": {"ent_coef": 1e-4, "clip_range": 0.2, "n_epochs": 1, "max_grad_norm": 0.5},
    "trpo": {"n_critic_updates": 5, "cg_max_steps": 10, "target_kl": 0.01},
    "sac": {"one_minus_gamma": 0.01, "batch_size_pow": 5, "learning_rate": 3e-4, "train_freq": 1, "tau": 0.005,
            "net_arch": "small"},
}
LAGRANGIAN_TRIAL_VALUES = {
    "plain": {"lag_update_rule": "plain", "lag_initial_value": 0.01, "lag_lr": 0.02},
    "pid": {"lag_update_rule": "pid", "lag_initial_value": 0.01, "lag_kp": 0.2, "lag_ki": 0.02, "lag_kd": 0.005},
}


def trial_values(algo: str, rule: str) -> dict[str, Any]:
    if algo == "sac_lag":
        parent = PARENT_TRIAL_VALUES["sac"]
    else:
        parent = {**PARENT_TRIAL_VALUES["on_policy"], **PARENT_TRIAL_VALUES["ppo" if algo == "ppo_lag" else "trpo"]}
    return parent if algo == "cpo" else {**parent, **LAGRANGIAN_TRIAL_VALUES[rule]}


@pytest.mark.parametrize(
    ("algo", "rule"),
    [(algo, rule) for algo in ("ppo_lag", "trpo_lag", "sac_lag") for rule in ("plain", "pid")] + [("cpo", "none")],
)
def test_samplers_give_arguments_the_algorithm_accepts(algo: str, rule: str) -> None:
    values = trial_values(algo, rule)
    trial = optuna.trial.FixedTrial(values)
    sampled = HYPERPARAMS_SAMPLER[algo](trial, 1, 1, {"using_her_replay_buffer": False, "her_kwargs": {}})
    assert HYPERPARAMS_CONVERTER[algo](values) == sampled  # a stored trial converts to the same arguments
    model = load_algo(algo)("MlpPolicy", ENV_ID, device="cpu", **sampled)
    if algo != "cpo":
        assert sampled["lagrangian_update"] == rule  # one multiplier API for PPOLag, TRPOLag and SACLag
        assert model.lagrange_multiplier.update_rule == rule
        assert model.lagrange_multiplier.value == pytest.approx(0.01)


def test_optimize_objective_reports_the_cost_aware_value(tmp_path: Path) -> None:
    manager = make_manager(
        tmp_path, "ppo_lag", n_timesteps=128, hyperparams={"n_envs": 1}, optimize_hyperparameters=True,
        n_evaluations=1, n_eval_episodes=1, eval_freq=-1,
    )
    assert manager.setup_experiment() is None  # optimisation mode builds no model up front
    values = {**PARENT_TRIAL_VALUES["on_policy"], **PARENT_TRIAL_VALUES["ppo"], **LAGRANGIAN_TRIAL_VALUES["pid"]}
    trial = optuna.trial.FixedTrial(values)
    value = manager.objective(trial)
    mean_reward, mean_cost = trial.user_attrs["mean_reward_1"], trial.user_attrs["mean_cost_1"]
    assert mean_cost >= 0
    assert value == pytest.approx(cost_aware_objective(mean_reward, mean_cost, 0.3, 1.0))


# ----------------------------------------------------------------------------- command line


def test_rl_zoo3_train_and_enjoy_ppo_lag(tmp_path: Path) -> None:
    result = run_python(["-m", "rl_zoo3.train", *train_args("ppo_lag")], cwd=tmp_path)
    assert_ok(result)
    run_dir = tmp_path / "logs" / "ppo_lag" / f"{ENV_ID}_1"
    assert (run_dir / f"{ENV_ID}.zip").is_file()
    config = yaml.unsafe_load((run_dir / ENV_ID / "config.yml").read_text())
    assert dict(config)["cost_limit"] == 0.3  # read from sb3-safe's hyperparams/ppo_lag.yml
    assert "ppo_lag.yml" in result.stdout
    replay = run_python(["-m", "rl_zoo3.enjoy", *enjoy_args("ppo_lag")], cwd=tmp_path)
    assert_ok(replay)
    assert f"logs/ppo_lag/{ENV_ID}_1/{ENV_ID}.zip" in replay.stdout


def test_rl_zoo3_optimize_reports_the_cost_aware_value_of_a_lagrangian_trial(tmp_path: Path) -> None:
    result = run_python(
        ["-m", "rl_zoo3.train", "--algo", "ppo_lag", "--env", ENV_ID, "-n", "256", "--seed", "0", "--num-threads", "1",
         "-optimize", "--n-trials", "1", "--n-jobs", "1", "--sampler", "random", "--pruner", "none",
         "--n-evaluations", "1", "--eval-episodes", "1", "-params", "n_envs:1"],
        cwd=tmp_path, extra_env={PENALTY_VARIABLE: "2.0"},
    )
    assert_ok(result)
    (report,) = (tmp_path / "logs" / "ppo_lag").glob(f"report_{ENV_ID}_1-trials-256-random-none_*.csv")
    with report.open() as file:
        (trial,) = csv.DictReader(file)
    assert trial["state"] == "COMPLETE" and trial["params_lag_update_rule"] in ("plain", "pid")
    last = max(int(key.rpartition("_")[2]) for key in trial if key.startswith("user_attrs_mean_cost_"))
    reward, cost = float(trial[f"user_attrs_mean_reward_{last}"]), float(trial[f"user_attrs_mean_cost_{last}"])
    assert float(trial["value"]) == pytest.approx(cost_aware_objective(reward, cost, 0.3, 2.0), rel=1e-6)


# One fresh interpreter trains and then replays every other algorithm in turn through rl_zoo3.train.train() and
# rl_zoo3.enjoy.enjoy(), registered by the start-up hook exactly as for `python -m rl_zoo3.train` and
# `python -m rl_zoo3.enjoy` (one interpreter per command would spend most of the test time importing torch and
# rl_zoo3 again). Each command's printed output is kept, or its traceback after "FAILED".
BATCH_ZOO_SCRIPT = """
import contextlib, io, json, sys, traceback
from rl_zoo3.enjoy import enjoy
from rl_zoo3.train import train
results = {}
for algo, commands in json.loads(sys.argv[1]).items():
    results[algo] = {}
    for name, main in (("train", train), ("enjoy", enjoy)):
        sys.argv = ["rl_zoo3." + name, *commands[name]]
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output):
                main()
            results[algo][name] = output.getvalue()
        except BaseException:
            results[algo][name] = "FAILED " + traceback.format_exc()
            break
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def batch_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, str]]]:
    workdir = tmp_path_factory.mktemp("zoo_batch")
    commands = {
        algo: {"train": train_args(algo), "enjoy": enjoy_args(algo)}
        for algo in ZOO_ALGOS if algo != "ppo_lag"
    }
    result = run_python(["-c", BATCH_ZOO_SCRIPT, json.dumps(commands)], cwd=workdir)
    assert_ok(result)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULTS ")]
    assert lines, result.stdout[-3000:]
    return workdir, json.loads(lines[-1].partition(" ")[2])


@pytest.mark.parametrize("algo", [name for name in ZOO_ALGOS if name != "ppo_lag"])
def test_rl_zoo3_train_and_enjoy_every_available_algorithm(
    algo: str, batch_runs: tuple[Path, dict[str, dict[str, str]]]
) -> None:
    workdir, results = batch_runs
    for command in ("train", "enjoy"):
        assert not results[algo][command].startswith("FAILED"), results[algo][command]
    saved = workdir / "logs" / algo / f"{ENV_ID}_1" / f"{ENV_ID}.zip"
    assert saved.is_file()
    assert f"logs/{algo}/{ENV_ID}_1/{ENV_ID}.zip" in results[algo]["enjoy"]  # enjoy replayed the trained model
    if algo in PLANNERS:
        trained = load_algo(algo).load(saved, device="cpu")
        # The one finished episode was random; the model was fitted on it once, so the 10 steps after it planned.
        assert [episode["planned"] for episode in trained.training_log] == [0.0]
        assert int(trained.policy.dynamics.n_fits) == 1 and trained._uses_planner()
        assert trained.num_timesteps == int(N_STEPS)


def test_explicit_entry_point_works_without_the_hook(tmp_path: Path) -> None:
    result = run_python(
        ["-m", "sb3_safe.zoo", "train", *train_args("ppo_lag")], cwd=tmp_path, extra_env={"SB3_SAFE_ZOO_HOOK": "0"}
    )
    assert_ok(result)
    assert (tmp_path / "logs" / "ppo_lag" / f"{ENV_ID}_1" / f"{ENV_ID}.zip").is_file()


def test_explicit_entry_point_rejects_unknown_script(tmp_path: Path) -> None:
    from sb3_safe.zoo.__main__ import main

    with pytest.raises(SystemExit, match="usage: python -m sb3_safe.zoo"):
        main(["fly", "--algo", "ppo_lag"])
    with pytest.raises(SystemExit, match="usage"):
        main([])
