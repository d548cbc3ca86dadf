"""Lagrangian algorithms against their unconstrained parents (SPEC.md 2.3, metrics of SPEC.md 3).

Trains PPO vs PPOLag and SAC vs SACLag on each env, for several seeds, and reports per run:

* final return and final episode cost of the trained policy, two ways, each a mean over
  ``--eval-episodes`` fresh episodes: *stochastic* (actions sampled as in training, gSDE noise
  resampled every ``sde_sample_freq`` steps) and *deterministic* (the distribution's mode), plus the
  mean of the last 10 training episodes. The stochastic policy is the one the constraint
  J_c(pi) <= d binds and the Lagrangian drives to the limit; its mode is a different policy that
  no Lagrangian method constrains, so its cost is reported beside it, not instead of it;
* how much of each evaluation's mean cost comes from episodes whose first state is already unsafe
  (the env's ``is_unsafe`` on the reset observation; e.g. a SafePendulum-v0 start inside the band),
  and how many such starts the evaluation had (both evaluations see the same start states);
* cumulative safety violations over training (``info["violation"]`` steps), with lambda and
  ``VecNormalize``'s reward divisor at the same steps (``lambdas``, ``reward_scales``): behind a
  reward-normalising ``VecNormalize`` lambda prices a unit of cost in normalised rewards, so the
  penalty it puts on a unit of cost, in the env's own rewards, is ``lambda * reward_scale`` (while
  the normalised rewards stay inside ``VecNormalize``'s ``clip_reward``);
* wall-clock training throughput (env steps per second, ``learn()`` wall time);
* per env, the throughput ratios PPOLag / PPO and SACLag / SAC (of the seed means, and per seed).

Settings. Every algorithm takes the rl_zoo3 entry of the env id (or the file's ``default`` entry)
from this package's ``hyperparams/ppo_lag.yml`` (PPO, PPOLag) or ``hyperparams/sac_lag.yml``
(SAC, SACLag): rl_zoo3's tuned PPO/SAC settings of the parent Gymnasium env plus the Lagrangian
keys (``cost_limit``, ``lagrangian_update``, ``lagrangian_kwargs``, ``cost_gamma``, ... and
``policy_kwargs["cost_value_head"]``). The parents use the same entry without the keys that only the
Lagrangian class accepts, so the two members of a pair differ only by the constraint. The entry goes
through rl_zoo3's own ``ExperimentManager`` (``read_hyperparameters``, ``_preprocess_hyperparams``,
``create_envs``, ``_preprocess_action_noise``, the same steps as its ``setup_experiment``), so
``n_envs``, ``n_timesteps``, ``policy``, ``normalize`` (a ``VecNormalize`` with the algorithm's
gamma; evaluation uses its observation statistics, raw rewards), ``policy_kwargs`` strings,
``lin_<x>`` schedules, ``frame_stack``, ``env_wrapper``, ``callback``, ``noise_type``... mean exactly
what they mean to ``python -m rl_zoo3.train``. This relies on those rl_zoo3 methods (checked with
rl_zoo3 2.9.2); their names start with an underscore, so another rl_zoo3 version may need a look.

Cost limits: the YAML's ``cost_limit`` per env (SafePendulum-v0 0.3 per 200-step episode,
SafeHopper-v0 0.1; the reasons are in the YAML files); ``--cost-limit`` overrides it for all envs,
the way ``rl_zoo3.train -params cost_limit:x`` would.

Budgets: ``--ppo-timesteps`` for PPO and PPOLag, ``--sac-timesteps`` for SAC and SACLag; without
them, each env's YAML ``n_timesteps``, capped by ``--max-timesteps`` when given. SB3 finishes the
rollout it is in, so an on-policy run makes at least ``n_steps * n_envs`` steps (the JSON keeps
both the requested and the actual count).

Order and machine load: for each env and each pair, the runs alternate per seed (ppo seed 0,
ppo_lag seed 0, ppo seed 1, ppo_lag seed 1, ...), so a drift of the machine's load affects both
members of a pair alike. The JSON records the load average at the start and the end of the
benchmark and around every run.

Parallel runs (``--jobs N``): the (env, algo, seed) runs are independent, so ``N`` worker processes
(``spawn``, one torch thread each) run them in the order above. Caveat: a throughput then depends
on what runs beside it. The two members of a pair are handed out one after the other, so with
``N >= 2`` they start together, but as soon as one finishes, the next run starts beside the other,
so the two members do not in general share the same neighbours for their whole run, and on a
machine with fewer free cores than ``N`` every run is slowed. Treat throughput ratios of a
``--jobs > 1`` benchmark as indicative; measure them with ``--jobs 1`` on an idle machine. The
JSON's ``jobs`` field records the worker count and this caveat.

Outputs ``<out>/lagrangian.json`` and ``<out>/lagrangian.png`` (training curves: episode return,
episode cost, cumulative violations against env steps; one line per run).

Usage (the real benchmark: 3 seeds and the YAML budgets, days of CPU; not for a shared machine)::

    python benchmarks/lagrangian.py --out bench_out/lagrangian

Shorter budgets, 2 runs at a time::

    python benchmarks/lagrangian.py --max-timesteps 200000 --jobs 2 --out bench_out/lagrangian

Smoke run (about two minutes; its numbers only show that everything runs)::

    python benchmarks/lagrangian.py --envs SafePendulum-v0 --seeds 1 --ppo-timesteps 2048 \\
        --sac-timesteps 300 --out /tmp/lag_smoke

Only SAC and SACLag::

    python benchmarks/lagrangian.py --algos sac,sac_lag

A variant of the YAML settings (as ``rl_zoo3.train -params``; mappings in YAML flow style)::

    python benchmarks/lagrangian.py --envs SafePendulum-v0 --algos ppo_lag --params cost_gae_lambda=0.99 \\
        "lagrangian_kwargs={initial_value: 0.001, kp: 1.0, ki: 0.4, kd: 0.0}"
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import io
import json
import os
import platform
import time
from contextlib import redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch as th
import yaml
from bench_params import parse_overrides
from bench_pool import imap_runs
from bench_plots import saved_figure
from rl_zoo3.exp_manager import ExperimentManager
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import (
    VecEnv,
    VecEnvWrapper,
    VecNormalize,
    sync_envs_normalization,
    unwrap_vec_normalize,
)
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

import sb3_safe  # noqa: F401 - registers the safe envs
from sb3_safe.common.evaluation import evaluate_safe_policy
from sb3_safe.common.safety_stats import SafetyStats
from sb3_safe.envs import SAFE_ENVS
from sb3_safe.zoo.config_files import default_hyperparams_file


class AlgoInfo(NamedTuple):
    """Where an algorithm lives, which zoo file holds its settings and which pair it belongs to."""

    module: str
    class_name: str
    zoo_file: str
    family: str
    constrained: bool


# The Lagrangian algorithms are imported only when asked for.
ALGOS: dict[str, AlgoInfo] = {
    "ppo": AlgoInfo("stable_baselines3", "PPO", "ppo_lag", "ppo", False),
    "ppo_lag": AlgoInfo("sb3_safe.ppo_lag", "PPOLag", "ppo_lag", "ppo", True),
    "sac": AlgoInfo("stable_baselines3", "SAC", "sac_lag", "sac", False),
    "sac_lag": AlgoInfo("sb3_safe.sac_lag", "SACLag", "sac_lag", "sac", True),
}
# family -> (parent, constrained); the throughput ratio constrained / parent is reported.
FAMILIES: dict[str, tuple[str, str]] = {"ppo": ("ppo", "ppo_lag"), "sac": ("sac", "sac_lag")}
EVAL_SEED_OFFSET = 10_000
TRAINING_EPISODES_FOR_FINAL = 10
TRACE_POINTS = 200
JOBS_CAVEAT = (
    "With workers > 1, runs share the machine: a pair's two members start together but need not keep the "
    "same neighbours for their whole run, so throughputs and their ratios are indicative only; measure "
    "ratios with --jobs 1 on an idle machine."
)


@dataclass(frozen=True)
class RunSpec:
    """One (env, algo, seed) training run to make.

    :param env_id: Gymnasium env id
    :param algo: a key of :data:`ALGOS`
    :param seed: seed of the algorithm and of the training envs
    :param timesteps: env steps asked of ``learn()``
    :param eval_episodes: episodes of each final evaluation (stochastic and deterministic)
    :param cost_limit: overrides the YAML's ``cost_limit`` (constrained algorithms only); None keeps it
    :param overrides: entries overriding the YAML's, as ``rl_zoo3.train -params`` (``--params``); a parent
        drops those that only its Lagrangian algorithm accepts
    """

    env_id: str
    algo: str
    seed: int
    timesteps: int
    eval_episodes: int
    cost_limit: float | None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """What one (env, algo, seed) training run measured."""

    env_id: str
    algo: str
    seed: int
    timesteps_requested: int
    timesteps: int
    n_envs: int
    cost_limit: float | None
    wall_s: float
    steps_per_s: float
    eval_return: float
    eval_cost: float
    eval_return_stochastic: float
    eval_cost_stochastic: float
    eval_unsafe_starts: int
    eval_cost_from_unsafe_starts: float
    eval_cost_from_unsafe_starts_stochastic: float
    final_train_return: float
    final_train_cost: float
    violations_total: int
    final_lambda: float | None
    load_average_before: float
    load_average_after: float
    episode_end_steps: list[int] = field(default_factory=list)
    episode_returns: list[float] = field(default_factory=list)
    episode_costs: list[float] = field(default_factory=list)
    violation_steps: list[int] = field(default_factory=list)
    cumulative_violations: list[int] = field(default_factory=list)
    lambdas: list[float | None] = field(default_factory=list)
    reward_scales: list[float | None] = field(default_factory=list)


class SafetyTraceCallback(BaseCallback):
    """Records, from the training env's infos, episode returns and costs and the violation count.

    It reads costs through the cost protocol, so it works the same for the unconstrained parents
    (which ignore the cost) and for the Lagrangian algorithms.

    At the same steps it stores lambda (None for a parent) and the divisor by which ``VecNormalize``
    scales the rewards the algorithm learns from (None without reward normalisation): lambda prices a
    unit of cost in *those* rewards, so ``lambda * reward_scale`` is the penalty in the env's reward
    (while the normalised rewards stay inside ``VecNormalize``'s ``clip_reward``).

    :param record_every: store the cumulative violation count, lambda and the reward scale every this many calls
    """

    def __init__(self, record_every: int = 100) -> None:
        super().__init__()
        self.record_every = record_every
        self.stats: SafetyStats | None = None
        self.current_returns: np.ndarray | None = None
        self.episode_end_steps: list[int] = []
        self.episode_returns: list[float] = []
        self.episode_costs: list[float] = []
        self.violation_steps: list[int] = []
        self.cumulative_violations: list[int] = []
        self.lambdas: list[float | None] = []
        self.reward_scales: list[float | None] = []

    @property
    def violations_total(self) -> int:
        """Violating steps seen so far."""
        return self.stats.violations_total if self.stats is not None else 0

    def _on_step(self) -> bool:
        infos, dones, rewards = self.locals["infos"], self.locals["dones"], self.locals["rewards"]
        if self.stats is None:
            self.stats = SafetyStats(len(infos), env_id="benchmark env")
            self.current_returns = np.zeros(len(infos))
        assert self.current_returns is not None
        self.stats.update(infos, dones)
        self.episode_costs.extend(self.stats.finished_costs)
        self.current_returns += np.asarray(rewards, dtype=np.float64)
        for idx in np.flatnonzero(dones):
            # Monitor's undiscounted return when present (the VecEnv may normalise rewards).
            episode = infos[idx].get("episode")
            self.episode_returns.append(float(episode["r"]) if episode else float(self.current_returns[idx]))
            self.episode_end_steps.append(self.num_timesteps)
            self.current_returns[idx] = 0.0
        if self.n_calls % self.record_every == 0:
            self.violation_steps.append(self.num_timesteps)
            self.cumulative_violations.append(self.violations_total)
            lagrange_value = getattr(self.model, "lagrange_value", None)
            self.lambdas.append(None if lagrange_value is None else float(lagrange_value))
            self.reward_scales.append(vec_normalize_reward_scale(self.model))
        return True


def reward_normaliser(model: BaseAlgorithm) -> VecNormalize | None:
    """The model's ``VecNormalize`` when it normalises rewards, else None."""
    vec_normalize = model.get_vec_normalize_env()
    return vec_normalize if vec_normalize is not None and vec_normalize.norm_reward else None


def vec_normalize_reward_scale(model: BaseAlgorithm) -> float | None:
    """The divisor ``sqrt(Var[discounted return] + epsilon)`` of the model's ``VecNormalize`` rewards,
    None when its rewards are not normalised."""
    normaliser = reward_normaliser(model)
    return None if normaliser is None else float(np.sqrt(normaliser.ret_rms.var + normaliser.epsilon))


def hyperparams_file(algo: str) -> Path:
    """This package's rl_zoo3 file that holds the settings of ``algo`` (and of its pair)."""
    path = default_hyperparams_file(ALGOS[algo].zoo_file)
    if path is None:
        raise FileNotFoundError(f"sb3-safe's hyperparams/{ALGOS[algo].zoo_file}.yml is missing; reinstall sb3-safe")
    return path


def zoo_entry_name(algo: str, env_id: str) -> str:
    """The entry of the zoo file that rl_zoo3 uses for ``env_id``: the env id itself, else ``default``."""
    path = hyperparams_file(algo)
    entries = yaml.safe_load(path.read_text())
    if env_id in entries:
        return env_id
    if "default" in entries:
        return "default"
    raise ValueError(f"{path} has no entry for {env_id} and no 'default' entry")


def zoo_manager(
    algo: str,
    env_id: str,
    seed: int,
    timesteps: int,
    cost_limit: float | None,
    extra_hyperparams: dict[str, Any] | None = None,
) -> ExperimentManager:
    """rl_zoo3's experiment manager for one run, reading sb3-safe's zoo file of the pair.

    ``timesteps = 0`` keeps the YAML's ``n_timesteps``. Nothing is written to disk: the envs are made
    with ``no_log=True`` and the manager's log folder is never created. ``extra_hyperparams``
    overrides entries of the YAML as the zoo's ``-params`` does (e.g. an ``env_wrapper``).
    """
    info = ALGOS[algo]
    override = dict(extra_hyperparams or {})
    if info.constrained and cost_limit is not None:
        override["cost_limit"] = cost_limit
    return ExperimentManager(
        argparse.Namespace(),
        algo,
        env_id,
        log_folder=os.devnull,
        n_timesteps=timesteps,
        hyperparams=override or None,
        seed=seed,
        verbose=0,
        device="cpu",
        config=str(hyperparams_file(algo)),
    )


def read_zoo_settings(manager: ExperimentManager, algo: str) -> dict[str, Any]:
    """The raw YAML entry (with ``--cost-limit`` applied), minus the Lagrangian keys for a parent
    (including the cost critic's layout, ``policy_kwargs["cost_value_head"]``)."""
    with redirect_stdout(io.StringIO()):  # read_hyperparameters always prints the entry
        hyperparams, _ = manager.read_hyperparameters()
    if not ALGOS[algo].constrained:
        added = constrained_only_parameters(ALGOS[algo].family)
        hyperparams = without_cost_value_head({key: value for key, value in hyperparams.items() if key not in added})
    return hyperparams


def algo_class(algo: str) -> type[BaseAlgorithm]:
    info = ALGOS[algo]
    return getattr(importlib.import_module(info.module), info.class_name)


def constrained_only_parameters(family: str) -> set[str]:
    """The constructor parameters that the family's Lagrangian algorithm adds to its parent
    (``cost_limit``, ``lagrangian_kwargs``, ``cost_gamma``, ...): its parent gets the entry without them."""
    parent, constrained = FAMILIES[family]
    return set(inspect.signature(algo_class(constrained)).parameters) - set(inspect.signature(algo_class(parent)).parameters)


def without_cost_value_head(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """``hyperparams`` whose ``policy_kwargs`` mapping lacks ``cost_value_head`` (dropped when empty)."""
    policy_kwargs = hyperparams.get("policy_kwargs")
    if isinstance(policy_kwargs, str) and "cost_value_head" in policy_kwargs:
        raise ValueError(
            "write policy_kwargs holding cost_value_head as a YAML mapping, not a string: "
            f"the benchmark drops that key for the unconstrained parent ({policy_kwargs!r})"
        )
    if not isinstance(policy_kwargs, dict) or "cost_value_head" not in policy_kwargs:
        return hyperparams
    parent_kwargs = {key: value for key, value in policy_kwargs.items() if key != "cost_value_head"}
    stripped = {key: value for key, value in hyperparams.items() if key != "policy_kwargs"}
    return {**stripped, "policy_kwargs": parent_kwargs} if parent_kwargs else stripped


def build_model(
    spec: RunSpec, extra_hyperparams: dict[str, Any] | None = None
) -> tuple[BaseAlgorithm, ExperimentManager, list[BaseCallback]]:
    """The model of one run, built by the same steps as rl_zoo3's ``ExperimentManager.setup_experiment``.

    :param extra_hyperparams: overrides of the YAML entry (see :func:`zoo_manager`)
    :return: the model (its env made by the zoo), the manager (to make the evaluation env) and the
        callbacks that the zoo entry asks for
    """
    manager = zoo_manager(
        spec.algo, spec.env_id, spec.seed, spec.timesteps, spec.cost_limit, {**spec.overrides, **(extra_hyperparams or {})}
    )
    hyperparams = read_zoo_settings(manager, spec.algo)
    saved_hyperparams = dict(sorted(hyperparams.items()))
    with redirect_stdout(io.StringIO()):
        hyperparams, manager.env_wrapper, zoo_callbacks, manager.vec_env_wrapper = manager._preprocess_hyperparams(
            hyperparams
        )
        env = manager.create_envs(manager.n_envs, no_log=True)
        hyperparams = manager._preprocess_action_noise(hyperparams, saved_hyperparams, env)
    model = algo_class(spec.algo)(env=env, seed=spec.seed, verbose=0, device="cpu", **hyperparams)
    return model, manager, zoo_callbacks


class TrainingSampler:
    """A ``predict`` that samples actions as training does, for :func:`evaluate_safe_policy`.

    With gSDE, ``predict`` alone keeps one exploration matrix for the whole evaluation; training
    resamples it every ``sde_sample_freq`` steps, so this wrapper does too (deterministic calls pass
    straight through).

    :param model: the trained algorithm
    """

    def __init__(self, model: BaseAlgorithm) -> None:
        self.model = model
        self.resample_every = getattr(model, "sde_sample_freq", -1) if getattr(model, "use_sde", False) else 0
        self.calls = 0

    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        if not deterministic and self.resample_every > 0 and self.calls % self.resample_every == 0:
            self.model.policy.reset_noise(1)  # type: ignore[operator]
        self.calls += 1
        return self.model.predict(observation, state, episode_start, deterministic)  # type: ignore[arg-type]


class UnsafeStartRecorder(VecEnvWrapper):
    """Records whether each episode of a one-env VecEnv starts in an unsafe state, in start order.

    The env's ``is_unsafe`` is applied to the raw observation (before a ``VecNormalize``); the first
    observation of an episode is the one ``reset()`` returns, or the one ``step`` returns when the
    previous episode ends (SB3's automatic reset).

    :param venv: the evaluation env, with one sub-env
    """

    def __init__(self, venv: VecEnv) -> None:
        if venv.num_envs != 1:
            raise ValueError(f"UnsafeStartRecorder needs a VecEnv with one env, got {venv.num_envs}")
        super().__init__(venv)
        self.is_unsafe = venv.get_attr("is_unsafe")[0]
        self.normalizer = unwrap_vec_normalize(venv)
        self.unsafe_starts: list[bool] = []

    def _record_start(self, obs: VecEnvObs) -> None:
        raw = self.normalizer.get_original_obs() if self.normalizer is not None else obs
        self.unsafe_starts.append(bool(self.is_unsafe(raw[0])))  # type: ignore[index]

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        self._record_start(obs)
        return obs

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        if dones[0]:
            self._record_start(obs)
        return obs, rewards, dones, infos


@dataclass
class Evaluation:
    """One final evaluation: means over its episodes, and the part of the mean cost that comes from
    episodes whose first state was already unsafe."""

    mean_return: float
    mean_cost: float
    unsafe_starts: int
    cost_from_unsafe_starts: float


def evaluate(
    model: BaseAlgorithm, manager: ExperimentManager, seed: int, n_episodes: int, deterministic: bool
) -> Evaluation:
    """Return and summed cost of ``n_episodes`` fresh episodes of the trained policy.

    The env is the zoo's evaluation env (``VecNormalize`` without reward normalisation or statistics
    updates when the entry normalises), with the training env's observation statistics, seeded the
    same way for every evaluation of a run (so they all see the same start states). A stochastic
    evaluation samples actions as training does (:class:`TrainingSampler`), with torch seeded for
    repeatability.

    :param deterministic: act with the distribution's mode instead of sampling
    """
    manager.seed = seed + EVAL_SEED_OFFSET
    with redirect_stdout(io.StringIO()):
        zoo_env = manager.create_envs(1, eval_env=True, no_log=True)
    training_env = model.get_env()
    assert training_env is not None
    sync_envs_normalization(training_env, zoo_env)  # before wrapping: it walks both wrapper chains in step
    env = UnsafeStartRecorder(zoo_env)
    th.manual_seed(seed + EVAL_SEED_OFFSET)
    returns, _, costs, _ = evaluate_safe_policy(  # type: ignore[misc]
        TrainingSampler(model),
        env,
        n_eval_episodes=n_episodes,
        deterministic=deterministic,
        return_episode_rewards=True,
    )
    env.close()
    unsafe_start = np.array(env.unsafe_starts[:n_episodes], dtype=bool)
    costs_array = np.asarray(costs, dtype=np.float64)
    return Evaluation(
        mean_return=float(np.mean(returns)),
        mean_cost=float(costs_array.mean()),
        unsafe_starts=int(unsafe_start.sum()),
        cost_from_unsafe_starts=float(costs_array[unsafe_start].sum() / n_episodes),
    )


def tail_mean(values: list[float], count: int) -> float:
    return float(np.mean(values[-count:])) if values else float("nan")


def run_one(spec: RunSpec) -> RunResult:
    """Train, time and evaluate one (env, algo, seed) run."""
    load_before = os.getloadavg()[0]
    model, manager, zoo_callbacks = build_model(spec)
    n_envs = model.n_envs
    trace = SafetyTraceCallback(record_every=max(spec.timesteps // (TRACE_POINTS * n_envs), 1))
    start = time.perf_counter()
    model.learn(spec.timesteps, callback=[trace, *zoo_callbacks])
    wall_s = time.perf_counter() - start
    deterministic = evaluate(model, manager, spec.seed, spec.eval_episodes, deterministic=True)
    stochastic = evaluate(model, manager, spec.seed, spec.eval_episodes, deterministic=False)
    training_env = model.get_env()
    assert training_env is not None
    training_env.close()
    # PPOLag and SACLag both expose the current lambda as `lagrange_value`.
    final_lambda = getattr(model, "lagrange_value", None)
    return RunResult(
        env_id=spec.env_id,
        algo=spec.algo,
        seed=spec.seed,
        timesteps_requested=spec.timesteps,
        timesteps=model.num_timesteps,
        n_envs=n_envs,
        cost_limit=float(model.cost_limit) if ALGOS[spec.algo].constrained else None,  # type: ignore[attr-defined]
        wall_s=wall_s,
        steps_per_s=model.num_timesteps / wall_s,
        eval_return=deterministic.mean_return,
        eval_cost=deterministic.mean_cost,
        eval_return_stochastic=stochastic.mean_return,
        eval_cost_stochastic=stochastic.mean_cost,
        eval_unsafe_starts=deterministic.unsafe_starts,
        eval_cost_from_unsafe_starts=deterministic.cost_from_unsafe_starts,
        eval_cost_from_unsafe_starts_stochastic=stochastic.cost_from_unsafe_starts,
        final_train_return=tail_mean(trace.episode_returns, TRAINING_EPISODES_FOR_FINAL),
        final_train_cost=tail_mean(trace.episode_costs, TRAINING_EPISODES_FOR_FINAL),
        violations_total=trace.violations_total,
        final_lambda=None if final_lambda is None else float(final_lambda),
        load_average_before=load_before,
        load_average_after=os.getloadavg()[0],
        episode_end_steps=trace.episode_end_steps,
        episode_returns=trace.episode_returns,
        episode_costs=trace.episode_costs,
        violation_steps=trace.violation_steps,
        cumulative_violations=trace.cumulative_violations,
        lambdas=trace.lambdas,
        reward_scales=trace.reward_scales,
    )


def family_budget(args: argparse.Namespace, family: str, yaml_timesteps: int) -> int:
    """Env steps per run of a pair: the family's option, else the YAML's, capped by ``--max-timesteps``."""
    explicit = args.ppo_timesteps if family == "ppo" else args.sac_timesteps
    if explicit is not None:
        return int(explicit)
    return min(yaml_timesteps, args.max_timesteps) if args.max_timesteps is not None else yaml_timesteps


def resolve_settings(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Per env and algo: the zoo file and entry used, its settings, the YAML budget and the budget used."""
    settings: dict[str, dict[str, Any]] = {}
    for env_id in args.env_ids:
        settings[env_id] = {}
        for algo in args.algo_names:
            hyperparams = read_zoo_settings(zoo_manager(algo, env_id, 0, 0, args.cost_limit, args.overrides), algo)
            yaml_timesteps = int(hyperparams["n_timesteps"])
            settings[env_id][algo] = {
                "file": str(hyperparams_file(algo)),
                "entry": zoo_entry_name(algo, env_id),
                "hyperparams": hyperparams,
                "yaml_n_timesteps": yaml_timesteps,
                "timesteps": family_budget(args, ALGOS[algo].family, yaml_timesteps),
            }
    return settings


def plan_runs(args: argparse.Namespace, settings: dict[str, dict[str, Any]]) -> list[RunSpec]:
    """Runs in the benchmark's order: per env and pair, the pair's members alternate per seed."""
    specs = []
    for env_id in args.env_ids:
        for members in FAMILIES.values():
            algos = [algo for algo in members if algo in args.algo_names]
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                for algo in algos:
                    budget = settings[env_id][algo]["timesteps"]
                    specs.append(RunSpec(env_id, algo, seed, budget, args.eval_episodes, args.cost_limit, args.overrides))
    return specs


def mean_std(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(np.nanmean(array)), "std": float(np.nanstd(array)), "n": int(array.size)}


SUMMARY_METRICS = (
    "eval_return",
    "eval_cost",
    "eval_return_stochastic",
    "eval_cost_stochastic",
    "eval_unsafe_starts",
    "eval_cost_from_unsafe_starts",
    "eval_cost_from_unsafe_starts_stochastic",
    "final_train_return",
    "final_train_cost",
    "violations_total",
    "steps_per_s",
    "timesteps",
)


def summarise(results: list[RunResult]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Per (env, algo) mean/std over seeds; per env the throughput ratios of the pairs present, of the
    seed means and per seed (a seed's ratio compares two runs made one after the other)."""
    summary: dict[str, dict[str, Any]] = {}
    for env_id in sorted({r.env_id for r in results}):
        summary[env_id] = {}
        for algo in sorted({r.algo for r in results if r.env_id == env_id}):
            runs = [r for r in results if r.env_id == env_id and r.algo == algo]
            summary[env_id][algo] = {metric: mean_std([getattr(r, metric) for r in runs]) for metric in SUMMARY_METRICS}
    ratios: dict[str, dict[str, float]] = {}
    ratios_per_seed: dict[str, dict[str, dict[str, float]]] = {}
    for env_id, per_algo in summary.items():
        for parent, constrained in FAMILIES.values():
            if constrained not in per_algo or parent not in per_algo:
                continue
            name = f"{constrained}/{parent}"
            ratio = per_algo[constrained]["steps_per_s"]["mean"] / per_algo[parent]["steps_per_s"]["mean"]
            ratios.setdefault(env_id, {})[name] = ratio
            speeds = {(r.algo, r.seed): r.steps_per_s for r in results if r.env_id == env_id}
            seeds = sorted({seed for algo, seed in speeds if (parent, seed) in speeds and (constrained, seed) in speeds})
            ratios_per_seed.setdefault(env_id, {})[name] = {
                str(seed): speeds[(constrained, seed)] / speeds[(parent, seed)] for seed in seeds
            }
    return summary, ratios, ratios_per_seed


def plot(results: list[RunResult], path: Path) -> None:
    env_ids = sorted({r.env_id for r in results})
    algos = sorted({r.algo for r in results})
    colours = {algo: f"C{i}" for i, algo in enumerate(algos)}
    with saved_figure(path, len(env_ids), 3, figsize=(15, 4 * len(env_ids)), squeeze=False) as (fig, axes):
        for row, env_id in enumerate(env_ids):
            for result in (r for r in results if r.env_id == env_id):
                label = f"{result.algo} s{result.seed}"
                style = {"color": colours[result.algo], "alpha": 0.8, "label": label}
                axes[row][0].plot(result.episode_end_steps, result.episode_returns, **style)
                axes[row][1].plot(result.episode_end_steps, result.episode_costs, **style)
                axes[row][2].plot(result.violation_steps, result.cumulative_violations, **style)
            limits = sorted({r.cost_limit for r in results if r.env_id == env_id and r.cost_limit is not None})
            for limit in limits:
                axes[row][1].axhline(limit, color="k", linestyle="--", label=f"cost limit {limit:g}")
            for col, title in enumerate(("episode return", "episode cost", "cumulative violations")):
                axes[row][col].set_title(f"{env_id}: {title}")
                axes[row][col].set_xlabel("env steps")
            axes[row][2].legend(fontsize="small")


def comma_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--envs", default="SafePendulum-v0,SafeHopper-v0", help="comma-separated env ids")
    parser.add_argument("--algos", default="ppo,ppo_lag,sac,sac_lag", help=f"comma-separated, from {sorted(ALGOS)}")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (--first-seed, --first-seed + 1, ...)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed")
    parser.add_argument("--ppo-timesteps", type=int, default=None, help="env steps per PPO/PPOLag run (default: YAML)")
    parser.add_argument("--sac-timesteps", type=int, default=None, help="env steps per SAC/SACLag run (default: YAML)")
    parser.add_argument(
        "--max-timesteps", type=int, default=None, help="cap on the YAML's n_timesteps (not on --ppo/--sac-timesteps)"
    )
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes of each final evaluation (stochastic and deterministic)")
    parser.add_argument("--cost-limit", type=float, default=None, help="per-episode budget for every env (default: YAML)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes running runs in parallel (1 torch thread each)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads with --jobs 1 (small MLPs run best on 1)")
    parser.add_argument(
        "--params",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="YAML entries to override for every algorithm, as rl_zoo3.train's -params (values read as YAML, "
        "e.g. cost_gae_lambda=0.99); the parents drop the Lagrangian-only ones",
    )
    parser.add_argument("--out", default="bench_out/lagrangian", help="output folder")
    args = parser.parse_args(argv)
    try:
        args.overrides = parse_overrides(args.params)
    except ValueError as error:
        parser.error(str(error))
    args.env_ids = comma_list(args.envs)
    args.algo_names = comma_list(args.algos)
    unknown = [name for name in args.algo_names if name not in ALGOS]
    if unknown:
        parser.error(f"unknown algorithm(s) {unknown}; choose from {sorted(ALGOS)}")
    unregistered = [env_id for env_id in args.env_ids if env_id not in gym.registry]
    if unregistered or not args.env_ids:
        parser.error(f"unknown or missing env id(s) {unregistered}; sb3-safe registers {sorted(SAFE_ENVS)}")
    for name in ("seeds", "eval_episodes", "jobs", "torch_threads", "ppo_timesteps", "sac_timesteps", "max_timesteps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.jobs > 1 and args.torch_threads != 1:
        parser.error("--torch-threads applies to --jobs 1 only: each of the --jobs workers uses 1 torch thread")
    if args.cost_limit is not None and args.cost_limit < 0:
        parser.error("--cost-limit must be >= 0")
    if args.first_seed < 0:
        parser.error("--first-seed must be >= 0")
    return args


def print_run(result: RunResult) -> None:
    print(
        f"{result.env_id} {result.algo} seed {result.seed}: {result.timesteps} steps, eval return "
        f"{result.eval_return:.1f}, eval cost {result.eval_cost:.2f} (stochastic: return "
        f"{result.eval_return_stochastic:.1f}, cost {result.eval_cost_stochastic:.2f}; of which from the "
        f"{result.eval_unsafe_starts} unsafe starts {result.eval_cost_from_unsafe_starts:.2f} / "
        f"{result.eval_cost_from_unsafe_starts_stochastic:.2f}), violations {result.violations_total}, "
        f"{result.steps_per_s:.0f} steps/s",
        flush=True,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    th.set_num_threads(args.torch_threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_at_start = list(os.getloadavg())
    settings = resolve_settings(args)
    specs = plan_runs(args, settings)
    results: list[RunResult] = []
    for result in imap_runs(run_one, specs, args.jobs):
        results.append(result)
        print_run(result)
    summary, ratios, ratios_per_seed = summarise(results)
    report = {
        "config": {key: value for key, value in vars(args).items() if key not in ("env_ids", "algo_names", "params")},
        "jobs": {
            "workers": args.jobs,
            "torch_threads_per_worker": 1 if args.jobs > 1 else args.torch_threads,
            "caveat": JOBS_CAVEAT if args.jobs > 1 else "runs made one at a time, in this process",
        },
        "settings": settings,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": list(os.getloadavg()),
            "torch": th.__version__,
        },
        "summary": summary,
        "throughput_ratios": ratios,
        "throughput_ratios_per_seed": ratios_per_seed,
        "runs": [asdict(r) for r in results],
    }
    (out / "lagrangian.json").write_text(json.dumps(report, indent=1))
    plot(results, out / "lagrangian.png")
    print(json.dumps({"summary": summary, "throughput_ratios": ratios, "jobs": report["jobs"]}, indent=1))
    return report


if __name__ == "__main__":
    main()
