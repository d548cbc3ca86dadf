"""SB3 algorithm classes of the shooting planners: GuSS, RS, S-RS, CEM and RCEM (SPEC.md 2.4).

All five share :class:`ShootingAlgorithm`: iterated batch model-based RL. ``learn`` plays one
episode at a time (the first ``n_random_episodes`` with uniformly random actions, then with the
planner re-planning at every step), and after every episode refits the dynamics model on all the
transitions collected so far.
"""

from __future__ import annotations

import sys
import time
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import safe_mean
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

from sb3_safe.common.cost import env_name
from sb3_safe.common.mdn import ModelFitResult
from sb3_safe.common.safety_stats import SafetyStatsMixin
from sb3_safe.guss.planners import CEMPlanner, GuSSPlanner, RandomShootingPlanner, ShootingPlanner
from sb3_safe.guss.policies import NumpyDynamics, PlanningPolicy
from sb3_safe.guss.rollout import (
    DEFAULT_POLICY_ARCH,
    DESCRIPTORS,
    ENV_DESCRIPTORS,
    ENV_POLICY_ARCHS,
    BatchedMLPPolicies,
    CostFunction,
    DescriptorFunction,
    DynamicsModel,
    RolloutEvaluator,
)

SelfShootingAlgorithm = TypeVar("SelfShootingAlgorithm", bound="ShootingAlgorithm")


class TransitionStore:
    """All real transitions seen so far, in growable NumPy arrays (the model's training set).

    :param observation_dim: size of an observation
    :param action_shape: shape of one action (``()`` for discrete indices)
    """

    def __init__(self, observation_dim: int, action_shape: tuple[int, ...]) -> None:
        self.size = 0
        self.observations = np.zeros((64, observation_dim), dtype=np.float32)
        self.next_observations = np.zeros((64, observation_dim), dtype=np.float32)
        self.actions = np.zeros((64, *action_shape), dtype=np.float32)
        self.rewards = np.zeros(64, dtype=np.float32)
        self.costs = np.zeros(64, dtype=np.float32)

    def add(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: float, cost: float) -> None:
        """Append one transition."""
        if self.size == len(self.rewards):
            for name in ("observations", "next_observations", "actions", "rewards", "costs"):
                array = getattr(self, name)
                setattr(self, name, np.concatenate([array, np.zeros_like(array)]))
        i = self.size
        self.observations[i], self.actions[i], self.next_observations[i] = obs, action, next_obs
        self.rewards[i], self.costs[i] = reward, cost
        self.size += 1

    def arrays(self) -> dict[str, np.ndarray]:
        """Views of the filled part of every array."""
        n = self.size
        return {
            "observations": self.observations[:n],
            "actions": self.actions[:n],
            "next_observations": self.next_observations[:n],
            "rewards": self.rewards[:n],
            "costs": self.costs[:n],
        }


def predicate_from_env(env: VecEnv | gym.Env) -> CostFunction:
    """Fetch the batched safety predicate ``is_unsafe(obs)`` from an env or a local VecEnv.

    :param env: a Gymnasium env (wrappers allowed) or a VecEnv whose sub-envs live in this process
    :return: the predicate
    :raises ValueError: if the env has no ``is_unsafe`` or lives in another process
    """
    base: Any = env
    while isinstance(base, VecEnvWrapper):
        base = base.venv
    if isinstance(base, DummyVecEnv):
        base = base.envs[0]
    elif isinstance(base, VecEnv):
        raise ValueError(
            f"cannot read the safety predicate of {type(base).__name__}: its envs live in other processes. "
            "Use a DummyVecEnv, pass cost_fn=<batched predicate>, or cost_source='learned'."
        )
    try:
        predicate = base.get_wrapper_attr("is_unsafe")
    except AttributeError:
        predicate = None
    if not callable(predicate):
        raise ValueError(
            f"env '{env_name(env)}' has no batched is_unsafe(obs) predicate: pass cost_fn=<batched predicate> "
            "or cost_source='learned' (a learned cost head)"
        )
    return predicate


@dataclass
class EpisodeTotals:
    """Running totals of the training episode being played (it may span several ``learn()`` calls).

    :param planned: whether the episode acts with the planner (else uniformly random actions)
    """

    planned: bool
    ep_return: float = 0.0
    cost: float = 0.0
    violations: int = 0
    length: int = 0

    def add(self, reward: float, cost: float, violations: int) -> None:
        self.ep_return += reward
        self.cost += cost
        self.violations += violations
        self.length += 1


class ShootingAlgorithm(SafetyStatsMixin, BaseAlgorithm):
    """Common base of the model-based shooting planners of GuSS (iterated batch MPC).

    Reference: Paolo et al., "Guided Safe Shooting: model based reinforcement learning with
    safety constraints" (2022), section 4 and supplementary section 5.1. The dynamics model is a
    D(AR)MDN (:class:`~sb3_safe.common.mdn.MDNDynamicsModel`, set up through ``policy_kwargs``)
    refit after every episode for ``model_epochs`` epochs on the data collected so far. By default a
    fixed ``holdout_fraction`` of it is held out to report the NLL and stop early
    (``early_stopping_patience``), which the issue allows; ``holdout_fraction=0.0,
    early_stopping_patience=None`` fits on all data for all epochs, as the paper. Predicted costs come from the env's
    batched predicate ``is_unsafe`` (default; read from the env, or from ``gym.make(env_id)``
    when a saved agent is loaded without an env), from ``cost_fn``, or from a learned cost head
    (``cost_source="learned"``). Only ``n_envs=1`` is supported. Episode termination is not
    modelled. Logs SB3's ``rollout/`` and ``time/`` keys, the safety keys of
    :class:`~sb3_safe.common.safety_stats.SafetyStats`, ``rollout/ep_p_unsafe`` (percentage of
    unsafe steps of the last episode), ``train/model_*`` and ``planner/*``. ``training_log``
    keeps one record per finished episode for :mod:`sb3_safe.common.metrics`.

    :param policy: "MlpPolicy" (:class:`~sb3_safe.guss.policies.PlanningPolicy`) or a subclass
    :param env: the env (one env; a VecEnv must have ``num_envs == 1``)
    :param learning_rate: Adam learning rate of the model (1e-3 in the paper)
    :param horizon: planning horizon (10 for the classic envs)
    :param model_epochs: model epochs per refit (300 in the paper)
    :param batch_size: model minibatch size
    :param holdout_fraction: fraction of the data held out to report (and early-stop on) the NLL
    :param early_stopping_patience: stop a refit after this many epochs without held-out
        improvement (None: always ``model_epochs``)
    :param n_random_episodes: episodes played with uniformly random actions before planning
    :param model_threads: torch threads while fitting the model (None: torch's setting). The
        per-dimension networks are tiny, so extra intra-op threads only add synchronisation
        stalls (measured 10x slower fits with 2 threads on a busy 2-core machine)
    :param cost_source: "env" (predicate from the env or ``cost_fn``) or "learned" (cost head)
    :param cost_fn: batched predicate/cost on observations, overriding the env's ``is_unsafe``
    :param stats_window_size: episodes averaged in the ``rollout/`` statistics
    :param tensorboard_log: tensorboard log folder
    :param policy_kwargs: model options (``net_arch``, ``n_components``, ``autoregressive``,
        ``optimizer_class``, ``optimizer_kwargs``)
    :param verbose: 0 silent, 1 info
    :param seed: random seed (env, action sampling, model data split, planner)
    :param device: must resolve to the CPU: the planners' tiny batched passes are faster there
    :param _init_setup_model: build the model at construction (False when loading)
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": PlanningPolicy}
    policy: PlanningPolicy

    def __init__(
        self,
        policy: str | type[PlanningPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 1e-3,
        horizon: int = 10,
        model_epochs: int = 300,
        batch_size: int = 256,
        holdout_fraction: float = 0.1,
        early_stopping_patience: int | None = 30,
        n_random_episodes: int = 1,
        model_threads: int | None = 1,
        cost_source: str = "env",
        cost_fn: CostFunction | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if str(device) not in ("auto", "cpu") and th.device(device).type != "cpu":
            raise ValueError(f"{type(self).__name__} plans on the CPU (tiny batched passes); got device={device!r}")
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device="cpu",
            support_multi_env=True,
            seed=seed,
            supported_action_spaces=(spaces.Box, spaces.Discrete),
        )
        if self.env is not None and self.n_envs != 1:
            raise ValueError(
                f"{type(self).__name__} plans for a single env (n_envs=1), got a VecEnv with {self.n_envs} envs"
            )
        if self._vec_normalize_env is not None:
            raise ValueError(
                f"{type(self).__name__} normalises its model inputs itself and evaluates the safety predicate "
                "on raw observations: do not wrap the env in VecNormalize"
            )
        if cost_source not in ("env", "learned"):
            raise ValueError(f"cost_source must be 'env' or 'learned', got {cost_source!r}")
        for name, value in (("horizon", horizon), ("model_epochs", model_epochs), ("batch_size", batch_size)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if n_random_episodes < 1:
            raise ValueError(f"n_random_episodes must be >= 1 (the model needs data), got {n_random_episodes}")
        self.horizon = int(horizon)
        self.model_epochs = int(model_epochs)
        self.batch_size = int(batch_size)
        self.holdout_fraction = float(holdout_fraction)
        self.early_stopping_patience = early_stopping_patience
        self.n_random_episodes = int(n_random_episodes)
        if model_threads is not None and model_threads < 1:
            raise ValueError(f"model_threads must be >= 1 or None, got {model_threads}")
        self.model_threads = model_threads
        self.cost_source = cost_source
        self.cost_fn = cost_fn
        self.env_id = env_name(self.env) if self.env is not None else None
        self.training_log: list[dict[str, float]] = []
        self._predicate_env: gym.Env | None = None
        if _init_setup_model:
            self._setup_model()

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_predicate_env", "_rng"]

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        kwargs = dict(self.policy_kwargs)
        if self.cost_source == "learned":
            kwargs["predict_cost"] = True
        self.policy = self.policy_class(self.observation_space, self.action_space, self.lr_schedule, **kwargs)
        self.policy = self.policy.to(self.device)
        if not hasattr(self, "_dataset") or self._dataset is None:
            action_shape = () if isinstance(self.action_space, spaces.Discrete) else self.action_space.shape
            self._dataset = TransitionStore(int(self.observation_space.shape[0]), tuple(action_shape))
        self._rng = np.random.default_rng(self.seed)
        self._episode: EpisodeTotals | None = None
        self._attach_planner()

    def _attach_planner(self) -> None:
        self.plan_with(NumpyDynamics(self.policy.dynamics))

    def plan_with(self, dynamics: DynamicsModel) -> None:
        """Plan with ``dynamics`` instead of the learned model, e.g. an exact batched copy of the env's
        physics: with a perfect model a planner's results show what its search and the constraint allow,
        apart from what model learning costs. ``learn`` still refits the learned model, which planning
        then ignores; :meth:`set_env` (and ``load``) attach the learned model again.

        :param dynamics: a batched one-step model (:class:`~sb3_safe.guss.rollout.DynamicsModel`)
        """
        self.policy.set_planner(self._make_planner(RolloutEvaluator(dynamics, self.horizon, self._cost_fn())))

    def _cost_fn(self) -> CostFunction | None:
        if self.cost_source == "learned":
            return None
        if self.cost_fn is not None:
            return self.cost_fn
        if self.env is not None:
            return predicate_from_env(self.env)
        if self.env_id is not None and self.env_id in gym.registry:
            # A saved agent loaded without an env (e.g. by the zoo's enjoy): rebuild the predicate.
            self._predicate_env = gym.make(self.env_id)
            return predicate_from_env(self._predicate_env)
        raise ValueError(
            f"{type(self).__name__}: no safety predicate: the agent has no env and its env id "
            f"{self.env_id!r} is not registered; load it with env=..., or pass cost_fn=..."
        )

    @abstractmethod
    def _make_planner(self, evaluator: RolloutEvaluator) -> ShootingPlanner:
        """Build this algorithm's planner around the shared rollout evaluator."""

    def set_random_seed(self, seed: int | None = None) -> None:
        super().set_random_seed(seed)
        policy = getattr(self, "policy", None)
        if seed is not None and policy is not None and policy.planner is not None:
            policy.planner.seed(seed)

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        super().set_env(env, force_reset)
        if self.n_envs != 1:
            raise ValueError(f"{type(self).__name__} plans for a single env (n_envs=1), got {self.n_envs} envs")
        self.env_id = env_name(self.env)  # the env's defaults (descriptor, policy size) follow it
        self._attach_planner()

    def _uses_planner(self) -> bool:
        # The model is refit after every finished episode, so its fit count is the number of episodes
        # played so far, across learn() calls (SB3 restarts _episode_num with reset_num_timesteps).
        return int(self.policy.dynamics.n_fits) >= self.n_random_episodes

    def _after_learn_setup(self, step_shift: int, env_was_reset: bool) -> None:
        if env_was_reset:  # the episode being played was cut: it is not logged
            self._episode = None

    def _collect_episode(self, callback: BaseCallback, total_timesteps: int) -> tuple[bool, bool]:
        """Play until the episode ends or the budget is spent; an episode cut by the budget goes on at the
        next ``learn(..., reset_num_timesteps=False)``, its totals kept in :attr:`_episode`.

        :return: (continue training, the episode finished)
        """
        assert self.env is not None and self._last_obs is not None
        if self._episode is None:
            self._episode = EpisodeTotals(planned=self._uses_planner())
        episode = self._episode
        callback.on_rollout_start()
        plan_time, plan_steps, finished, continue_training = 0.0, 0, False, True
        while self.num_timesteps < total_timesteps:
            if self._last_episode_starts is not None and self._last_episode_starts[0]:
                self.policy.reset_planner()
            if episode.planned:
                start = time.perf_counter()
                actions, _ = self.policy.predict(self._last_obs, deterministic=True)
                plan_time += time.perf_counter() - start
                plan_steps += 1
            else:
                actions = np.array([self.action_space.sample()])
            new_obs, rewards, dones, infos = self.env.step(actions)
            self.num_timesteps += 1
            before = self.safety_stats.violations_total
            costs = self.safety_stats.update(infos, dones)
            self._update_info_buffer(infos, dones)
            next_obs = infos[0]["terminal_observation"] if dones[0] else new_obs[0]
            self._dataset.add(self._last_obs[0], actions[0], next_obs, float(rewards[0]), float(costs[0]))
            episode.add(float(rewards[0]), float(costs[0]), self.safety_stats.violations_total - before)
            # The step is fully booked before the callback may stop training: a stop on the step that ends an
            # episode (StopTrainingOnMaxEpisodes) must still log that episode, and the next learn() call must
            # start from new_obs, not splice a stale observation into the model's data.
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
            finished = bool(dones[0])
            callback.update_locals(locals())
            continue_training = callback.on_step()
            if finished or not continue_training:
                break
        if finished:
            self._record_episode(episode)
            self._episode = None
        if plan_steps:
            self.logger.record("planner/steps_per_s", plan_steps / max(plan_time, 1e-9))
            assert self.policy.planner is not None
            for key, value in self.policy.planner.last_info.items():
                self.logger.record(f"planner/{key}", value)
        callback.on_rollout_end()
        return continue_training, finished

    def _record_episode(self, episode: EpisodeTotals) -> None:
        self.training_log.append(
            {
                "episode": float(len(self.training_log)),
                "return": episode.ep_return,
                "length": float(episode.length),
                "cost": episode.cost,
                "violations": float(episode.violations),
                "timesteps": float(self.num_timesteps),
                "planned": float(episode.planned),
            }
        )
        self.logger.record("rollout/ep_p_unsafe", 100.0 * episode.violations / max(episode.length, 1))

    def train(self) -> None:
        """Refit the dynamics model on all the transitions collected so far."""
        self._update_learning_rate(self.policy.optimizer)
        data = self._dataset.arrays()
        actions = data["actions"]
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.astype(np.int64)
        previous_threads = th.get_num_threads()
        if self.model_threads is not None:
            th.set_num_threads(self.model_threads)
        try:
            result = self._fit_model(data, actions)
        finally:
            th.set_num_threads(previous_threads)
        self._n_updates += result.epochs
        self.logger.record("train/model_nll", result.train_loss)
        self.logger.record("train/model_val_nll", result.val_loss)
        self.logger.record("train/model_epochs", result.epochs)
        self.logger.record("train/n_transitions", result.n_samples)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def _fit_model(self, data: dict[str, np.ndarray], actions: np.ndarray) -> ModelFitResult:
        return self.policy.dynamics.fit(
            data["observations"],
            actions,
            data["next_observations"],
            data["rewards"],
            self.policy.optimizer,
            costs=data["costs"],
            epochs=self.model_epochs,
            batch_size=self.batch_size,
            holdout_fraction=self.holdout_fraction,
            early_stopping_patience=self.early_stopping_patience,
            rng=self._rng,
        )

    def _dump_logs(self) -> None:
        time_elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        fps = int((self.num_timesteps - self._num_timesteps_at_start) / time_elapsed)
        self.logger.record("time/episodes", self._episode_num, exclude="tensorboard")
        if self.ep_info_buffer:
            self.logger.record("rollout/ep_rew_mean", safe_mean([info["r"] for info in self.ep_info_buffer]))
            self.logger.record("rollout/ep_len_mean", safe_mean([info["l"] for info in self.ep_info_buffer]))
        self.safety_stats.record(self.logger)
        self.logger.record("time/fps", fps)
        self.logger.record("time/time_elapsed", int(time_elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

    def learn(
        self: SelfShootingAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int | None = 1,
        tb_log_name: str = "run",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfShootingAlgorithm:
        """Iterated batch training: play an episode, refit the model on all data, repeat.

        :param total_timesteps: real env steps to play
        :param callback: SB3 callback(s), called at every env step
        :param log_interval: dump the logs every this many episodes (None: never)
        :param tb_log_name: tensorboard run name
        :param reset_num_timesteps: restart the step counter
        :param progress_bar: show a progress bar
        :return: the trained agent
        """
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        while self.num_timesteps < total_timesteps:
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            continue_training, finished = self._collect_episode(callback, total_timesteps)
            if finished:  # refit even when a callback stops training here, so the agent plans with all its data
                self._episode_num += 1
                self.train()
                if log_interval is not None and self._episode_num % log_interval == 0:
                    self._dump_logs()
            if not continue_training:
                break
        callback.on_training_end()
        return self

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []


class RS(ShootingAlgorithm):
    """Random shooting (RS): MPC with the best-return random action sequence (costs ignored).

    Reference: GuSS paper (Paolo et al., 2022), baselines; table 5.1: horizon 10, 100 sequences
    on the classic envs.

    :param policy: "MlpPolicy" (:class:`~sb3_safe.guss.policies.PlanningPolicy`) or a subclass
    :param env: the env (one env; a VecEnv must have ``num_envs == 1``)
    :param n_sequences: random sequences evaluated per control step
    :param learning_rate: Adam learning rate of the model (1e-3 in the paper)
    :param horizon: planning horizon (10 for the classic envs)
    :param model_epochs: model epochs per refit (300 in the paper)
    :param batch_size: model minibatch size
    :param holdout_fraction: fraction of the data held out to report (and early-stop on) the NLL
    :param early_stopping_patience: stop a refit after this many epochs without held-out
        improvement (None: always ``model_epochs``)
    :param n_random_episodes: episodes played with uniformly random actions before planning
    :param model_threads: torch threads while fitting the model (None: torch's setting). The
        per-dimension networks are tiny, so extra intra-op threads only add synchronisation
        stalls (measured 10x slower fits with 2 threads on a busy 2-core machine)
    :param cost_source: "env" (predicate from the env or ``cost_fn``) or "learned" (cost head)
    :param cost_fn: batched predicate/cost on observations, overriding the env's ``is_unsafe``
    :param stats_window_size: episodes averaged in the ``rollout/`` statistics
    :param tensorboard_log: tensorboard log folder
    :param policy_kwargs: model options (``net_arch``, ``n_components``, ``autoregressive``,
        ``optimizer_class``, ``optimizer_kwargs``)
    :param verbose: 0 silent, 1 info
    :param seed: random seed (env, action sampling, model data split, planner)
    :param device: must resolve to the CPU: the planners' tiny batched passes are faster there
    :param _init_setup_model: build the model at construction (False when loading)
    """

    safe_ranking: ClassVar[bool] = False

    def __init__(
        self,
        policy: str | type[PlanningPolicy],
        env: GymEnv | str | None,
        n_sequences: int = 100,
        learning_rate: float | Schedule = 1e-3,
        horizon: int = 10,
        model_epochs: int = 300,
        batch_size: int = 256,
        holdout_fraction: float = 0.1,
        early_stopping_patience: int | None = 30,
        n_random_episodes: int = 1,
        model_threads: int | None = 1,
        cost_source: str = "env",
        cost_fn: CostFunction | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        self.n_sequences = int(n_sequences)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            horizon=horizon,
            model_epochs=model_epochs,
            batch_size=batch_size,
            holdout_fraction=holdout_fraction,
            early_stopping_patience=early_stopping_patience,
            n_random_episodes=n_random_episodes,
            model_threads=model_threads,
            cost_source=cost_source,
            cost_fn=cost_fn,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _make_planner(self, evaluator: RolloutEvaluator) -> ShootingPlanner:
        return RandomShootingPlanner(
            evaluator, self.action_space, self.n_sequences, safe=self.safe_ranking, seed=self.seed
        )


class SRS(RS):
    """Safe random shooting (S-RS): random sequences ranked by predicted cost, then by return.

    Reference: GuSS paper (Paolo et al., 2022), baselines; table 5.1: horizon 10, 100 sequences.

    :param policy: "MlpPolicy" (:class:`~sb3_safe.guss.policies.PlanningPolicy`) or a subclass
    :param env: the env (one env; a VecEnv must have ``num_envs == 1``)
    :param n_sequences: random sequences evaluated per control step
    :param learning_rate: Adam learning rate of the model (1e-3 in the paper)
    :param horizon: planning horizon (10 for the classic envs)
    :param model_epochs: model epochs per refit (300 in the paper)
    :param batch_size: model minibatch size
    :param holdout_fraction: fraction of the data held out to report (and early-stop on) the NLL
    :param early_stopping_patience: stop a refit after this many epochs without held-out
        improvement (None: always ``model_epochs``)
    :param n_random_episodes: episodes played with uniformly random actions before planning
    :param model_threads: torch threads while fitting the model (None: torch's setting). The
        per-dimension networks are tiny, so extra intra-op threads only add synchronisation
        stalls (measured 10x slower fits with 2 threads on a busy 2-core machine)
    :param cost_source: "env" (predicate from the env or ``cost_fn``) or "learned" (cost head)
    :param cost_fn: batched predicate/cost on observations, overriding the env's ``is_unsafe``
    :param stats_window_size: episodes averaged in the ``rollout/`` statistics
    :param tensorboard_log: tensorboard log folder
    :param policy_kwargs: model options (``net_arch``, ``n_components``, ``autoregressive``,
        ``optimizer_class``, ``optimizer_kwargs``)
    :param verbose: 0 silent, 1 info
    :param seed: random seed (env, action sampling, model data split, planner)
    :param device: must resolve to the CPU: the planners' tiny batched passes are faster there
    :param _init_setup_model: build the model at construction (False when loading)
    """

    safe_ranking: ClassVar[bool] = True


class CEM(ShootingAlgorithm):
    """Cross-entropy method MPC (CEM): iteratively refits a sequence distribution to the best returns.

    Reference: GuSS paper (Paolo et al., 2022), baselines; table 5.1: horizon 10, 20 sequences,
    10 elites. See :class:`~sb3_safe.guss.planners.CEMPlanner` for the update.

    :param policy: "MlpPolicy" (:class:`~sb3_safe.guss.policies.PlanningPolicy`) or a subclass
    :param env: the env (one env; a VecEnv must have ``num_envs == 1``)
    :param n_sequences: sequences per iteration
    :param n_elites: elites per iteration
    :param n_iterations: iterations per control step (not given by the paper; 5 = 100 evaluations)
    :param alpha: smoothing of the distribution update
    :param learning_rate: Adam learning rate of the model (1e-3 in the paper)
    :param horizon: planning horizon (10 for the classic envs)
    :param model_epochs: model epochs per refit (300 in the paper)
    :param batch_size: model minibatch size
    :param holdout_fraction: fraction of the data held out to report (and early-stop on) the NLL
    :param early_stopping_patience: stop a refit after this many epochs without held-out
        improvement (None: always ``model_epochs``)
    :param n_random_episodes: episodes played with uniformly random actions before planning
    :param model_threads: torch threads while fitting the model (None: torch's setting). The
        per-dimension networks are tiny, so extra intra-op threads only add synchronisation
        stalls (measured 10x slower fits with 2 threads on a busy 2-core machine)
    :param cost_source: "env" (predicate from the env or ``cost_fn``) or "learned" (cost head)
    :param cost_fn: batched predicate/cost on observations, overriding the env's ``is_unsafe``
    :param stats_window_size: episodes averaged in the ``rollout/`` statistics
    :param tensorboard_log: tensorboard log folder
    :param policy_kwargs: model options (``net_arch``, ``n_components``, ``autoregressive``,
        ``optimizer_class``, ``optimizer_kwargs``)
    :param verbose: 0 silent, 1 info
    :param seed: random seed (env, action sampling, model data split, planner)
    :param device: must resolve to the CPU: the planners' tiny batched passes are faster there
    :param _init_setup_model: build the model at construction (False when loading)
    """

    robust: ClassVar[bool] = False

    def __init__(
        self,
        policy: str | type[PlanningPolicy],
        env: GymEnv | str | None,
        n_sequences: int = 20,
        n_elites: int = 10,
        n_iterations: int = 5,
        alpha: float = 0.1,
        learning_rate: float | Schedule = 1e-3,
        horizon: int = 10,
        model_epochs: int = 300,
        batch_size: int = 256,
        holdout_fraction: float = 0.1,
        early_stopping_patience: int | None = 30,
        n_random_episodes: int = 1,
        model_threads: int | None = 1,
        cost_source: str = "env",
        cost_fn: CostFunction | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        self.n_sequences, self.n_elites, self.n_iterations = int(n_sequences), int(n_elites), int(n_iterations)
        self.alpha = float(alpha)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            horizon=horizon,
            model_epochs=model_epochs,
            batch_size=batch_size,
            holdout_fraction=holdout_fraction,
            early_stopping_patience=early_stopping_patience,
            n_random_episodes=n_random_episodes,
            model_threads=model_threads,
            cost_source=cost_source,
            cost_fn=cost_fn,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _make_planner(self, evaluator: RolloutEvaluator) -> ShootingPlanner:
        return CEMPlanner(
            evaluator,
            self.action_space,
            self.n_sequences,
            self.n_elites,
            self.n_iterations,
            self.alpha,
            robust=self.robust,
            seed=self.seed,
        )


class RCEM(CEM):
    """Robust/safe CEM (RCEM): elites are the best zero-cost sequences, topped up by lowest cost.

    Reference: Liu et al., "Constrained model-based RL with robust cross-entropy method" (2021),
    as a GuSS baseline; table 5.1: horizon 10, 20 sequences, 10 elites.

    :param policy: "MlpPolicy" (:class:`~sb3_safe.guss.policies.PlanningPolicy`) or a subclass
    :param env: the env (one env; a VecEnv must have ``num_envs == 1``)
    :param n_sequences: sequences per iteration
    :param n_elites: elites per iteration
    :param n_iterations: iterations per control step
    :param alpha: smoothing of the distribution update
    :param learning_rate: Adam learning rate of the model (1e-3 in the paper)
    :param horizon: planning horizon (10 for the classic envs)
    :param model_epochs: model epochs per refit (300 in the paper)
    :param batch_size: model minibatch size
    :param holdout_fraction: fraction of the data held out to report (and early-stop on) the NLL
    :param early_stopping_patience: stop a refit after this many epochs without held-out
        improvement (None: always ``model_epochs``)
    :param n_random_episodes: episodes played with uniformly random actions before planning
    :param model_threads: torch threads while fitting the model (None: torch's setting). The
        per-dimension networks are tiny, so extra intra-op threads only add synchronisation
        stalls (measured 10x slower fits with 2 threads on a busy 2-core machine)
    :param cost_source: "env" (predicate from the env or ``cost_fn``) or "learned" (cost head)
    :param cost_fn: batched predicate/cost on observations, overriding the env's ``is_unsafe``
    :param stats_window_size: episodes averaged in the ``rollout/`` statistics
    :param tensorboard_log: tensorboard log folder
    :param policy_kwargs: model options (``net_arch``, ``n_components``, ``autoregressive``,
        ``optimizer_class``, ``optimizer_kwargs``)
    :param verbose: 0 silent, 1 info
    :param seed: random seed (env, action sampling, model data split, planner)
    :param device: must resolve to the CPU: the planners' tiny batched passes are faster there
    :param _init_setup_model: build the model at construction (False when loading)
    """

    robust: ClassVar[bool] = True


class GuSS(ShootingAlgorithm):
    """Guided Safe Shooting: MAP-Elites over tiny policies in a learned model, safest-best first action.

    Reference: Paolo et al., "Guided Safe Shooting: model based reinforcement learning with
    safety constraints" (2022); table 5.1 values are the defaults (Safe Pendulum). See
    :class:`~sb3_safe.guss.planners.GuSSPlanner` for the search.

    :param policy: "MlpPolicy" (:class:`~sb3_safe.guss.policies.PlanningPolicy`) or a subclass
    :param env: the env (one env; a VecEnv must have ``num_envs == 1``)
    :param n_policies: policies evaluated per control step (100)
    :param n_initial_policies: random policies of the first generation (25)
    :param n_policies_per_generation: offspring per generation (5)
    :param mutation_sigma: std of the Gaussian mutation (0.05)
    :param grid_size: archive cells per descriptor dimension (50)
    :param planning_policy_arch: hidden sizes of the searched policies (None: the paper's for the env,
        [5] SafePendulum-v0, [5, 5] SafeAcrobot-v0, else [5])
    :param descriptor: a name from ``sb3_safe.guss.rollout.DESCRIPTORS`` ("pendulum_angle",
        "acrobot_tip"), a callable (observations (n, H + 1, obs_dim) -> (n, k)), or None for the
        env's default (SafePendulum-v0, SafeAcrobot-v0)
    :param descriptor_bounds: (lower, upper) descriptor bounds; needed with a callable
    :param cost_tolerance: predicted cost counted as zero (for learned cost heads)
    :param n_warm_start: best elites of a control step that seed the next step's first generation in
        place of as many random policies (beyond the paper, which starts from random policies: 0)
    :param normalize_policy_inputs: the searched policies see observations divided by their finite
        bounds (True) or raw (False); the paper does not say which
    :param learning_rate: Adam learning rate of the model (1e-3 in the paper)
    :param horizon: planning horizon (10 for the classic envs)
    :param model_epochs: model epochs per refit (300 in the paper)
    :param batch_size: model minibatch size
    :param holdout_fraction: fraction of the data held out to report (and early-stop on) the NLL
    :param early_stopping_patience: stop a refit after this many epochs without held-out
        improvement (None: always ``model_epochs``)
    :param n_random_episodes: episodes played with uniformly random actions before planning
    :param model_threads: torch threads while fitting the model (None: torch's setting). The
        per-dimension networks are tiny, so extra intra-op threads only add synchronisation
        stalls (measured 10x slower fits with 2 threads on a busy 2-core machine)
    :param cost_source: "env" (predicate from the env or ``cost_fn``) or "learned" (cost head)
    :param cost_fn: batched predicate/cost on observations, overriding the env's ``is_unsafe``
    :param stats_window_size: episodes averaged in the ``rollout/`` statistics
    :param tensorboard_log: tensorboard log folder
    :param policy_kwargs: model options (``net_arch``, ``n_components``, ``autoregressive``,
        ``optimizer_class``, ``optimizer_kwargs``)
    :param verbose: 0 silent, 1 info
    :param seed: random seed (env, action sampling, model data split, planner)
    :param device: must resolve to the CPU: the planners' tiny batched passes are faster there
    :param _init_setup_model: build the model at construction (False when loading)
    """

    def __init__(
        self,
        policy: str | type[PlanningPolicy],
        env: GymEnv | str | None,
        n_policies: int = 100,
        n_initial_policies: int = 25,
        n_policies_per_generation: int = 5,
        mutation_sigma: float = 0.05,
        grid_size: int | Sequence[int] = 50,
        planning_policy_arch: Sequence[int] | None = None,
        descriptor: str | DescriptorFunction | None = None,
        descriptor_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
        cost_tolerance: float = 0.0,
        n_warm_start: int = 0,
        normalize_policy_inputs: bool = True,
        learning_rate: float | Schedule = 1e-3,
        horizon: int = 10,
        model_epochs: int = 300,
        batch_size: int = 256,
        holdout_fraction: float = 0.1,
        early_stopping_patience: int | None = 30,
        n_random_episodes: int = 1,
        model_threads: int | None = 1,
        cost_source: str = "env",
        cost_fn: CostFunction | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        self.n_policies = int(n_policies)
        self.n_initial_policies = int(n_initial_policies)
        self.n_policies_per_generation = int(n_policies_per_generation)
        self.mutation_sigma = float(mutation_sigma)
        self.grid_size = grid_size if isinstance(grid_size, int) else [int(g) for g in grid_size]
        self.planning_policy_arch = None if planning_policy_arch is None else [int(h) for h in planning_policy_arch]
        self.descriptor = descriptor
        self.descriptor_bounds = descriptor_bounds
        self.cost_tolerance = float(cost_tolerance)
        self.n_warm_start = int(n_warm_start)
        self.normalize_policy_inputs = bool(normalize_policy_inputs)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            horizon=horizon,
            model_epochs=model_epochs,
            batch_size=batch_size,
            holdout_fraction=holdout_fraction,
            early_stopping_patience=early_stopping_patience,
            n_random_episodes=n_random_episodes,
            model_threads=model_threads,
            cost_source=cost_source,
            cost_fn=cost_fn,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _resolve_descriptor(self) -> tuple[DescriptorFunction, Sequence[float], Sequence[float]]:
        descriptor = self.descriptor
        if descriptor is None:
            if self.env_id not in ENV_DESCRIPTORS:
                raise ValueError(
                    f"GuSS has no default behaviour descriptor for env {self.env_id!r}: pass descriptor= "
                    f"one of {sorted(DESCRIPTORS)} or a callable with descriptor_bounds=(lower, upper)"
                )
            descriptor = ENV_DESCRIPTORS[self.env_id]
        if isinstance(descriptor, str):
            if descriptor not in DESCRIPTORS:
                raise ValueError(f"unknown GuSS descriptor {descriptor!r}; known: {sorted(DESCRIPTORS)}")
            function, low, high = DESCRIPTORS[descriptor]
        elif callable(descriptor):
            if self.descriptor_bounds is None:
                raise ValueError("a callable GuSS descriptor needs descriptor_bounds=(lower, upper)")
            function, (low, high) = descriptor, self.descriptor_bounds
        else:
            raise TypeError(f"descriptor must be a name, a callable or None, got {type(descriptor).__name__}")
        if self.descriptor_bounds is not None:
            low, high = self.descriptor_bounds
        return function, low, high

    def _policy_arch(self) -> list[int]:
        if self.planning_policy_arch is not None:
            return self.planning_policy_arch
        return list(ENV_POLICY_ARCHS.get(self.env_id or "", DEFAULT_POLICY_ARCH))

    def _make_planner(self, evaluator: RolloutEvaluator) -> ShootingPlanner:
        function, low, high = self._resolve_descriptor()
        return GuSSPlanner(
            evaluator,
            self.action_space,
            BatchedMLPPolicies(
                self.observation_space, self.action_space, self._policy_arch(), self.normalize_policy_inputs
            ),
            function,
            low,
            high,
            grid_size=self.grid_size,
            n_policies=self.n_policies,
            n_initial_policies=self.n_initial_policies,
            n_policies_per_generation=self.n_policies_per_generation,
            mutation_sigma=self.mutation_sigma,
            cost_tolerance=self.cost_tolerance,
            n_warm_start=self.n_warm_start,
            seed=self.seed,
        )


__all__ = ["CEM", "RCEM", "RS", "SRS", "GuSS", "ShootingAlgorithm", "TransitionStore", "predicate_from_env"]
