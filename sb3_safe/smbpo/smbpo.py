"""SMBPO: Safe Model-Based Policy Optimization (SPEC.md section 2.1).

Garrett Thomas, Yuping Luo and Tengyu Ma, *Safe Reinforcement Learning by Imagining the Near
Future*, NeurIPS 2021 (seed 000). MBPO with a penalty that makes every unsafe state an
absorbing state worth ``-C`` per step, so that short model rollouts teach the critic to avoid
states from which a violation cannot be prevented.
"""

from __future__ import annotations

import copy
import io
import math
import pathlib
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, update_learning_rate
from stable_baselines3.sac import SAC
from stable_baselines3.sac.policies import SACPolicy

from sb3_safe.common.action_spaces import sac_action_space_checked
from sb3_safe.common.cost import env_name, read_vec_costs
from sb3_safe.common.dynamics import (
    EnsembleFitResult,
    GaussianEnsemble,
    fit_ensemble,
    precision_dtype,
    warn_if_bfloat16_is_slow,
)
from sb3_safe.common.float_modes import denormals_flushed
from sb3_safe.common.sac_update import fused_sac_train, mlp_step_unsupported
from sb3_safe.common.safety_stats import SafetyStats, SafetyStatsMixin
from sb3_safe.smbpo.buffers import SMBPOReplayBuffer
from sb3_safe.smbpo.penalty import deterministic_penalty, stochastic_penalty

SelfSMBPO = TypeVar("SelfSMBPO", bound="SMBPO")

# A batched predicate on observations, ``f(obs (n, obs_dim)) -> bool (n,)``: unsafe states, terminal states.
ObsPredicate = Callable[[np.ndarray], np.ndarray]
PENALTY_MODES = ("auto", "auto-stochastic")
PREDICATE_MODES = ("env", "learned")
# The fewest real transitions :func:`fit_ensemble` fits a model on.
MIN_FIT_TRANSITIONS = 2


class SMBPO(SafetyStatsMixin, SAC):
    """Safe Model-Based Policy Optimization (Thomas, Luo and Ma, NeurIPS 2021).

    SB3's :class:`~stable_baselines3.SAC` (its policies, twin critics with min targets and
    min in the actor loss, entropy tuning, target updates, logger, ``save``/``load``) trained on
    model-generated data, MBPO style. Per real env step (SPEC.md 2.1):

    1. act in the real env (uniform random actions for the first ``learning_starts`` steps) and
       store the transition, with its ``info["violation"]`` flag, in the real buffer D;
    2. at the end of the warm-up fit the dynamics ensemble for ``model_initial_gradient_steps``
       updates, then every ``model_train_freq`` env steps for ``model_gradient_steps`` updates;
       each fit also recomputes the penalty ``C`` from the reward range seen so far;
    3. branch ``rollout_batch_size`` model rollouts of ``rollout_horizon`` steps from real states
       with the current policy; a rollout stops at a predicted unsafe state, which is stored in
       the model buffer with its violation flag, or at a state ``termination_fn`` calls terminal;
    4. take ``gradient_steps`` SAC updates on batches of which ``real_ratio`` comes from D and
       the rest from the model buffer.

    **Penalty form.** A transition into an unsafe state (real or model) is terminal and its
    critic target is ``-C / (1 - gamma)``: the value of an absorbing state paying ``-C`` forever,
    as in the authors' code. This is the form the bounds on ``C`` are derived for; it is stored
    as reward ``-C/(1-gamma)`` with ``done = 1`` at sampling time, so a ``C`` recomputed at a
    later fit applies to every stored transition. Envs that do not end episodes on violations
    (e.g. SafePendulum-v0) are still treated as absorbing at violating transitions.

    **Unsafe predicate.** ``unsafe_predicate="env"`` (the paper's setting: a known predicate)
    uses the env's ``is_unsafe(obs)`` found through wrappers (``VecEnv.get_attr``); a callable
    ``f(obs: ndarray (n, obs_dim)) -> bool ndarray (n,)`` is used as given; ``"learned"`` (an
    sb3-safe extension for any env reporting ``info["violation"]``) adds a violation classifier
    head to the ensemble and stops rollouts where the drawn member's probability exceeds
    ``violation_threshold``.

    **Other episode ends.** SPEC.md 2.1 stops a rollout where the predicate "or done" fires. Every
    env of this package ends episodes only on violations (or never), so the unsafe predicate is
    enough; for an env with other terminal states (a goal reached, ...) pass ``termination_fn``,
    MBPO's static termination function: a predicted transition into such a state is stored as
    terminal with its model reward, no penalty. Without it, a real episode that ends
    (``terminated``, not truncated) without a violation triggers a warning, since the model
    rollouts would run past such states.

    Not supported: VecNormalize, Dict observations, ``optimize_memory_usage``, n-step returns.

    :param policy: the policy model to use (``"MlpPolicy"``, ...), as for SAC
    :param env: the environment to learn from (it must report ``info["cost"]``)
    :param learning_rate: learning rate of the critics and the entropy coefficient (paper: 3e-4)
    :param buffer_size: size of the real replay buffer (paper: 1e6)
    :param learning_starts: number of uniform-random warm-up steps before the first model fit
        and the first update (paper: 5000); with 0 the first update waits for the second real
        transition, the fewest a model is fit on
    :param batch_size: minibatch size of each SAC update (paper: 256)
    :param tau: soft target update coefficient (paper: 0.005)
    :param gamma: discount factor (paper: 0.99)
    :param train_freq: update the model every ``train_freq`` steps (SB3 semantics)
    :param gradient_steps: SAC updates per ``train_freq`` (paper: 10 per env step)
    :param action_noise: action noise for the real env (as in SAC)
    :param replay_buffer_class: must be None or a subclass of :class:`SMBPOReplayBuffer`
    :param replay_buffer_kwargs: extra keyword arguments of the replay buffer
    :param optimize_memory_usage: must be False
    :param ent_coef: entropy coefficient, ``"auto"`` to learn it (as in SAC)
    :param target_update_interval: target network update interval in gradient steps
    :param target_entropy: target entropy for ``ent_coef="auto"`` (paper: hopper -1, cheetah -3,
        ant -4, humanoid -2)
    :param use_sde: use generalized State Dependent Exploration (as in SAC)
    :param sde_sample_freq: gSDE noise resampling frequency
    :param use_sde_at_warmup: use gSDE instead of uniform sampling during the warm-up
    :param stats_window_size: episodes averaged for the rollout statistics
    :param tensorboard_log: tensorboard log folder
    :param policy_kwargs: policy keyword arguments (paper: ``net_arch=[256, 256]``, SB3's default)
    :param verbose: verbosity level
    :param seed: random seed
    :param device: torch device
    :param actor_learning_rate: learning rate of the actor (paper: 1e-4); ``None`` uses
        ``learning_rate``
    :param penalty: ``"auto"`` (deterministic bound, recomputed at each model fit),
        ``"auto-stochastic"`` (seed 000 A.2 bound, needs ``penalty_p`` and ``penalty_q``) or a
        fixed number ``C >= 0``; see :mod:`sb3_safe.smbpo.penalty`
    :param penalty_p: irrecoverability threshold ``p`` of ``"auto-stochastic"``
    :param penalty_q: rapid-failure probability ``q`` of ``"auto-stochastic"``
    :param unsafe_predicate: ``"env"``, ``"learned"`` or a callable (see above)
    :param violation_threshold: probability above which the learned classifier calls a model
        state unsafe
    :param termination_fn: ``f(obs: ndarray (n, obs_dim)) -> bool ndarray (n,)``, the env's
        terminal states that are not violations (see above); None: rollouts stop only at unsafe
        states
    :param model_buffer_size: size of the model buffer (paper: 1e6)
    :param real_ratio: fraction of real data in each batch (paper: 0.1)
    :param rollout_batch_size: model rollouts started per real env step (paper: 100)
    :param rollout_horizon: model rollout length H (paper: 10)
    :param rollout_freq: branch the model rollouts every ``rollout_freq`` env steps instead of at
        every step, ``rollout_batch_size`` for each env step since the last ones, so the number of
        rollouts per env step stays the paper's (paper: 1). One batched call amortises per-call
        overhead (on the reference CPU, 100 Hopper starts take 10.8 ms and 1000 take 47 ms,
        docs/benchmarks.md); MBPO's own code batches them in the same way, every 250 steps. The
        rollouts of a batch use the policy of the step they are branched at
    :param model_train_freq: env steps between model fits (paper: 250)
    :param model_gradient_steps: Adam updates per periodic model fit (paper: 2000)
    :param model_initial_gradient_steps: Adam updates of the first fit (paper: 10,000)
    :param model_batch_size: minibatch size per ensemble member (paper: 256)
    :param model_learning_rate: learning rate of the ensemble (paper: 1e-3)
    :param ensemble_size: number of ensemble members (authors' code: 5)
    :param model_hidden_size: hidden width of the ensemble (paper: 200)
    :param model_trunk_layers: trunk depth of each member (paper: 3; authors' code: 2)
    :param model_holdout_fraction: fraction of real data held out at each fit to report
        ``train/model_holdout_mse``
    :param model_precision: ``"float32"`` (the paper) or ``"bfloat16"``: the dtype of the ensemble's
        hidden-to-hidden matmuls (mixed precision, see
        :class:`~sb3_safe.common.dynamics.GaussianEnsemble`); faster model fits on CPUs with bfloat16
        matrix units (AMX) and on GPUs (rollouts compute in float32 either way). On a CPU where
        torch's oneDNN has no bfloat16 support (e.g. AVX2-only x86) torch runs bfloat16 matmuls hundreds
        of times slower than float32's, and SMBPO warns
    :param background_model_fit: run the periodic model fits in a background thread, beside the SAC
        updates (a second CPU core; give torch one thread per core, ``torch.set_num_threads``). At
        each fit period the fit started one period earlier is waited for and swapped into the model
        that rollouts use, and a new fit on all real data so far is started. Rollouts thus use a
        model one period (``model_train_freq`` steps) older than in the paper, whose fits are
        synchronous (``False``, the default). Results stay reproducible: each fit works on its own
        copy of the data with its own random generator, and is applied at a fixed step whatever the
        threads' timing. The initial fit is synchronous in both modes.
    :param fused_sac_update: run SAC's gradient steps with one backward pass for the entropy, critic
        and actor losses (:func:`~sb3_safe.common.sac_update.fused_sac_train`, written out by hand for
        ReLU MLP policies, autograd's otherwise) instead of SB3's three: a fifth to a quarter less time
        per step on a CPU. The actor loss then reads the critics before this
        step's critic update (SB3 reads them after it). Off by default (SB3's ``SAC.train``)
    :param sac_hidden_precision: ``"float32"`` (default) or ``"bfloat16"``: with ``fused_sac_update``, the
        dtype of the SAC networks' hidden-to-hidden matmuls (mixed precision: parameters, optimiser state
        and the input and output layers stay float32; see
        :func:`~sb3_safe.common.sac_update.mlp_fused_sac_train`). Needs a policy that step supports (SB3's
        ``MlpPolicy`` with ReLU activations and its default optimisers; see
        :func:`~sb3_safe.common.sac_update.mlp_step_unsupported`). Not in the paper. Warns where bfloat16
        is slow, as ``model_precision``
    :param _init_setup_model: whether to build the networks at creation
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = SAC.policy_aliases
    replay_buffer: SMBPOReplayBuffer
    dynamics: GaussianEnsemble

    def __init__(
        self,
        policy: str | type[SACPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 5000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 10,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        ent_coef: str | float = "auto",
        target_update_interval: int = 1,
        target_entropy: str | float = "auto",
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        use_sde_at_warmup: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        actor_learning_rate: float | Schedule | None = 1e-4,
        penalty: str | float = "auto",
        penalty_p: float | None = None,
        penalty_q: float | None = None,
        unsafe_predicate: str | ObsPredicate = "env",
        violation_threshold: float = 0.5,
        termination_fn: ObsPredicate | None = None,
        model_buffer_size: int = 1_000_000,
        real_ratio: float = 0.1,
        rollout_batch_size: int = 100,
        rollout_horizon: int = 10,
        rollout_freq: int = 1,
        model_train_freq: int = 250,
        model_gradient_steps: int = 2000,
        model_initial_gradient_steps: int = 10_000,
        model_batch_size: int = 256,
        model_learning_rate: float = 1e-3,
        ensemble_size: int = 5,
        model_hidden_size: int = 200,
        model_trunk_layers: int = 3,
        model_holdout_fraction: float = 0.1,
        model_precision: str = "float32",
        background_model_fit: bool = False,
        fused_sac_update: bool = False,
        sac_hidden_precision: str = "float32",
        _init_setup_model: bool = True,
    ) -> None:
        self.actor_learning_rate = actor_learning_rate
        self.penalty = penalty
        self.penalty_p = penalty_p
        self.penalty_q = penalty_q
        self.unsafe_predicate = unsafe_predicate
        self.violation_threshold = violation_threshold
        self.termination_fn = termination_fn
        self.model_buffer_size = model_buffer_size
        self.real_ratio = real_ratio
        self.rollout_batch_size = rollout_batch_size
        self.rollout_horizon = rollout_horizon
        self.rollout_freq = rollout_freq
        self.model_train_freq = model_train_freq
        self.model_gradient_steps = model_gradient_steps
        self.model_initial_gradient_steps = model_initial_gradient_steps
        self.model_batch_size = model_batch_size
        self.model_learning_rate = model_learning_rate
        self.ensemble_size = ensemble_size
        self.model_hidden_size = model_hidden_size
        self.model_trunk_layers = model_trunk_layers
        self.model_holdout_fraction = model_holdout_fraction
        self.model_precision = model_precision
        self.background_model_fit = background_model_fit
        self.fused_sac_update = fused_sac_update
        self.sac_hidden_precision = sac_hidden_precision
        # Training state that save/load must carry (set here, so that load's __dict__ update wins).
        self.penalty_c = float(penalty) if not isinstance(penalty, str) else math.nan
        self.reward_min = math.inf
        self.reward_max = -math.inf
        self.n_model_fits = 0
        self.last_model_fit: EnsembleFitResult | None = None
        self._last_model_fit_timestep: int | None = None
        self._last_rollout_timestep: int | None = None
        # A finished background fit not yet swapped into the rollout model.
        self._unapplied_fit: EnsembleFitResult | None = None
        self._fit_future: Future[EnsembleFitResult] | None = None
        self._fit_executor: ThreadPoolExecutor | None = None
        self._model_transitions_since_dump = 0
        self._model_violations_since_dump = 0
        # Work counters (for FLOP accounting): rows sent through the ensemble in rollouts, fit updates.
        self.model_rows_generated = 0
        self.model_updates_done = 0
        self.safety_stats: SafetyStats | None = None
        self._unsafe_fn: ObsPredicate | None = None
        self._warned_unmodelled_termination = False
        with sac_action_space_checked(self, "SMBPO"):
            super().__init__(
                policy,
                env,
                learning_rate=learning_rate,
                buffer_size=buffer_size,
                learning_starts=learning_starts,
                batch_size=batch_size,
                tau=tau,
                gamma=gamma,
                train_freq=train_freq,
                gradient_steps=gradient_steps,
                action_noise=action_noise,
                replay_buffer_class=replay_buffer_class,
                replay_buffer_kwargs=replay_buffer_kwargs,
                optimize_memory_usage=optimize_memory_usage,
                ent_coef=ent_coef,
                target_update_interval=target_update_interval,
                target_entropy=target_entropy,
                use_sde=use_sde,
                sde_sample_freq=sde_sample_freq,
                use_sde_at_warmup=use_sde_at_warmup,
                stats_window_size=stats_window_size,
                tensorboard_log=tensorboard_log,
                policy_kwargs=policy_kwargs,
                verbose=verbose,
                seed=seed,
                device=device,
                _init_setup_model=False,
            )
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ set-up
    def _check_arguments(self) -> None:
        positive_ints = {
            "rollout_horizon": self.rollout_horizon,
            "rollout_freq": self.rollout_freq,
            "model_train_freq": self.model_train_freq,
            "model_gradient_steps": self.model_gradient_steps,
            "model_initial_gradient_steps": self.model_initial_gradient_steps,
            "model_batch_size": self.model_batch_size,
            "model_buffer_size": self.model_buffer_size,
            "ensemble_size": self.ensemble_size,
            "model_hidden_size": self.model_hidden_size,
            "model_trunk_layers": self.model_trunk_layers,
        }
        for name, value in positive_ints.items():
            if int(value) != value or value < 1:
                raise ValueError(f"SMBPO: {name} must be a positive integer, got {value!r}")
        if int(self.rollout_batch_size) != self.rollout_batch_size or self.rollout_batch_size < 0:
            raise ValueError(f"SMBPO: rollout_batch_size must be an integer >= 0, got {self.rollout_batch_size!r}")
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"SMBPO: real_ratio must be in [0, 1], got {self.real_ratio}")
        if not 0.0 <= self.model_holdout_fraction < 1.0:
            raise ValueError(f"SMBPO: model_holdout_fraction must be in [0, 1), got {self.model_holdout_fraction}")
        if not 0.0 < self.violation_threshold < 1.0:
            raise ValueError(f"SMBPO: violation_threshold must be in (0, 1), got {self.violation_threshold}")
        if not (callable(self.unsafe_predicate) or self.unsafe_predicate in PREDICATE_MODES):
            raise ValueError(
                f"SMBPO: unsafe_predicate must be 'env', 'learned' or a callable obs -> bool array, "
                f"got {self.unsafe_predicate!r}"
            )
        if self.termination_fn is not None and not callable(self.termination_fn):
            raise ValueError(
                f"SMBPO: termination_fn must be None or a callable obs -> bool array, got {self.termination_fn!r}"
            )
        for name in ("model_precision", "sac_hidden_precision"):
            precision_dtype(getattr(self, name), f"SMBPO: {name}")
        precision = self.sac_hidden_precision
        if precision != "float32" and not self.fused_sac_update:
            raise ValueError(f"SMBPO: sac_hidden_precision={precision!r} needs fused_sac_update=True")
        for name in ("model_precision", "sac_hidden_precision"):
            warn_if_bfloat16_is_slow(getattr(self, name), self.device, f"SMBPO: {name}")
        self._check_penalty()
        if self.n_steps != 1:
            raise ValueError("SMBPO does not support n-step returns (n_steps must be 1)")
        if self.optimize_memory_usage:
            raise ValueError("SMBPO does not support optimize_memory_usage=True")
        if self.replay_buffer_class is not None and not issubclass(self.replay_buffer_class, SMBPOReplayBuffer):
            raise ValueError(
                f"SMBPO needs replay_buffer_class=None or a subclass of SMBPOReplayBuffer, got {self.replay_buffer_class}"
            )
        if self._vec_normalize_env is not None:
            raise ValueError(
                "SMBPO does not support VecNormalize: the dynamics model, the unsafe predicate and the penalty "
                "bound work on raw observations and rewards"
            )
        if not isinstance(self.observation_space, spaces.Box) or len(self.observation_space.shape) != 1:
            raise ValueError(f"SMBPO needs a flat Box observation space, got {self.observation_space}")

    def _check_penalty(self) -> None:
        if isinstance(self.penalty, str):
            if self.penalty not in PENALTY_MODES:
                raise ValueError(f"SMBPO: penalty must be 'auto', 'auto-stochastic' or a number, got {self.penalty!r}")
            if self.penalty == "auto-stochastic":
                if self.penalty_p is None or self.penalty_q is None:
                    raise ValueError("SMBPO: penalty='auto-stochastic' needs penalty_p and penalty_q")
                # Fail now rather than at the first model fit if (p, q, gamma, H) admit no bound.
                stochastic_penalty(0.0, 1.0, self.gamma, self.rollout_horizon, self.penalty_p, self.penalty_q)
        elif not (math.isfinite(float(self.penalty)) and float(self.penalty) >= 0.0):
            raise ValueError(f"SMBPO: a fixed penalty must be a finite number >= 0, got {self.penalty!r}")

    def _setup_model(self) -> None:
        self._check_arguments()
        self.replay_buffer_class = self.replay_buffer_class or SMBPOReplayBuffer
        env_id = env_name(self.env) if self.env is not None else "env"
        self.replay_buffer_kwargs = {
            **self.replay_buffer_kwargs,
            "model_buffer_size": self.model_buffer_size,
            "real_ratio": self.real_ratio,
            "env_id": env_id,
        }
        super()._setup_model()
        self._check_sac_update_supported()
        actor_lr = self.learning_rate if self.actor_learning_rate is None else self.actor_learning_rate
        self.actor_lr_schedule = FloatSchedule(actor_lr)
        update_learning_rate(self.actor.optimizer, self.actor_lr_schedule(1.0))

        assert isinstance(self.action_space, spaces.Box)
        self.dynamics = GaussianEnsemble(
            obs_dim=int(self.observation_space.shape[0]),
            action_dim=int(np.prod(self.action_space.shape)),
            n_members=self.ensemble_size,
            hidden_size=self.model_hidden_size,
            n_trunk_layers=self.model_trunk_layers,
            violation_head=self.unsafe_predicate == "learned",
            precision=self.model_precision,
        ).to(self.device)
        # Fused Adam: one kernel for all of the ensemble's parameters instead of a loop over them;
        # measured 8.7 % less time per model update on one CPU core at the paper's sizes.
        self.dynamics_optimizer = th.optim.Adam(
            self.dynamics.parameters(), lr=self.model_learning_rate, fused=self.device.type in ("cpu", "cuda")
        )
        # With background fits, rollouts read a copy that the fitting thread never writes to.
        self.rollout_dynamics = copy.deepcopy(self.dynamics) if self.background_model_fit else self.dynamics
        self._set_buffer_penalty()

    def _check_sac_update_supported(self) -> None:
        reason = mlp_step_unsupported(self) if self.sac_hidden_precision != "float32" else None
        if reason is not None:
            raise ValueError(
                f"SMBPO: sac_hidden_precision={self.sac_hidden_precision!r} needs the hand-written SAC step, but {reason}"
            )

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """SB3's ``set_env``; the unsafe predicate is looked up again on the new env."""
        super().set_env(env, force_reset)
        self._unsafe_fn = None

    # ------------------------------------------------------------------ the unsafe predicate
    def _resolve_unsafe_fn(self) -> ObsPredicate | None:
        if callable(self.unsafe_predicate):
            return self.unsafe_predicate
        if self.unsafe_predicate == "learned":
            return None
        if self.env is None:
            raise ValueError("SMBPO: unsafe_predicate='env' needs an env; call set_env() first")
        try:
            return self.env.get_attr("is_unsafe", indices=[0])[0]
        except AttributeError as exc:
            raise ValueError(
                f"SMBPO: env '{env_name(self.env)}' has no is_unsafe(obs) method (looked up through its wrappers). "
                "Pass unsafe_predicate=<callable obs -> bool array>, or unsafe_predicate='learned' to learn it "
                "from info['violation']."
            ) from exc

    def _predict_unsafe(self, next_obs: th.Tensor, violation_prob: th.Tensor | None) -> th.Tensor:
        """Unsafe flags of a batch of predicted states, evaluated in one call."""
        if self.unsafe_predicate == "learned":
            assert violation_prob is not None
            return violation_prob > self.violation_threshold
        if self._unsafe_fn is None:
            self._unsafe_fn = self._resolve_unsafe_fn()
        assert self._unsafe_fn is not None
        return self._batch_flags(self._unsafe_fn, next_obs, "the unsafe predicate")

    def _predict_terminal(self, next_obs: th.Tensor) -> th.Tensor:
        """``termination_fn``'s flags of a batch of predicted states (all False without one)."""
        if self.termination_fn is None:
            return th.zeros(next_obs.shape[0], dtype=th.bool, device=next_obs.device)
        return self._batch_flags(self.termination_fn, next_obs, "termination_fn")

    @staticmethod
    def _batch_flags(predicate: ObsPredicate, next_obs: th.Tensor, name: str) -> th.Tensor:
        flags = np.asarray(predicate(next_obs.cpu().numpy()))
        if flags.shape != (next_obs.shape[0],):
            raise ValueError(
                f"SMBPO: {name} must return one bool per row, shape ({next_obs.shape[0]},), got shape {flags.shape}"
            )
        return th.as_tensor(flags.astype(bool), device=next_obs.device)

    # ------------------------------------------------------------------ penalty
    def _set_buffer_penalty(self) -> None:
        if math.isfinite(self.penalty_c) and self.replay_buffer is not None:
            self.replay_buffer.unsafe_reward = -self.penalty_c / (1.0 - self.gamma)

    def _update_penalty(self) -> None:
        r_lo, r_hi = self.replay_buffer.reward_range()
        self.reward_min, self.reward_max = min(self.reward_min, r_lo), max(self.reward_max, r_hi)
        if self.penalty == "auto":
            self.penalty_c = deterministic_penalty(self.reward_min, self.reward_max, self.gamma, self.rollout_horizon)
        elif self.penalty == "auto-stochastic":
            assert self.penalty_p is not None and self.penalty_q is not None
            self.penalty_c = stochastic_penalty(
                self.reward_min, self.reward_max, self.gamma, self.rollout_horizon, self.penalty_p, self.penalty_q
            )
        self._set_buffer_penalty()

    # ------------------------------------------------------------------ model fitting and rollouts
    def fit_model(self, n_updates: int) -> EnsembleFitResult:
        """Fit the dynamics ensemble on all real data now and recompute the penalty ``C``.

        The fit runs in SMBPO's model-fit thread (which flushes denormal floats to zero) while the
        caller waits. With ``background_model_fit`` a running background fit is waited for first, and
        the rollout model takes the result at once.

        :param n_updates: number of Adam updates
        :return: the fit summary (also kept in :attr:`last_model_fit`)
        """
        self._apply_background_fit()
        result = self._model_fit_thread().submit(self._fit_dynamics, self._real_data(), n_updates, None).result()
        self.model_updates_done += n_updates
        self._last_model_fit_timestep = self.num_timesteps
        self._apply_model_fit(result)
        return result

    def _real_data(self) -> dict[str, th.Tensor]:
        data = self.replay_buffer.real_transitions()
        if self.background_model_fit:
            # The tensors share memory with the buffer's arrays, which the main thread keeps writing.
            data = {key: value.clone() for key, value in data.items()}
        return data

    def _fit_dynamics(
        self, data: dict[str, th.Tensor], n_updates: int, generator: th.Generator | None
    ) -> EnsembleFitResult:
        return fit_ensemble(
            self.dynamics,
            self.dynamics_optimizer,
            data["observations"],
            data["actions"],
            data["next_observations"],
            data["rewards"],
            n_updates=n_updates,
            batch_size=self.model_batch_size,
            holdout_fraction=self.model_holdout_fraction,
            violations=data["violations"] if self.dynamics.has_violation_head else None,
            generator=generator,
        )

    def _apply_model_fit(self, result: EnsembleFitResult) -> None:
        """Book a finished fit, hand its weights to the rollout model and recompute ``C``."""
        self.last_model_fit = result
        self.n_model_fits += 1
        if self.rollout_dynamics is not self.dynamics:
            self.rollout_dynamics.load_state_dict(self.dynamics.state_dict())
        self._update_penalty()

    def _model_fit_thread(self) -> ThreadPoolExecutor:
        """The thread that runs every model fit: in the background with ``background_model_fit``,
        otherwise while the main thread waits."""
        if self._fit_executor is None:
            # Flush denormal floats to zero in the fitting thread: Adam's moments of weights with
            # zero gradient (fed by dead ReLU units) decay into denormals, which x86 CPUs process many
            # times slower (the fused Adam step took 4.6 instead of 0.9 ms, docs/benchmarks.md). The
            # thread is SMBPO's own, so it keeps the setting; ``train`` sets and restores the caller's.
            self._fit_executor = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="smbpo-model-fit",
                initializer=th.set_flush_denormal,
                initargs=(True,),
            )
        return self._fit_executor

    def _start_background_fit(self, n_updates: int) -> None:
        # Drawn here, in the main thread, so the fit's minibatches follow the seed whatever the timing.
        generator = th.Generator(device=self.device).manual_seed(int(np.random.randint(2**31 - 1)))
        self._fit_future = self._model_fit_thread().submit(self._fit_dynamics, self._real_data(), n_updates, generator)

    def wait_for_model_fit(self) -> None:
        """Block until the running background model fit (if any) ends; it is applied at the next fit
        period. ``learn()`` and ``save()`` call it; a callback that times training can call it too."""
        if self._fit_future is not None:
            self._unapplied_fit = self._fit_future.result()
            self._fit_future = None
            self.model_updates_done += self._unapplied_fit.n_updates

    def _apply_background_fit(self) -> None:
        """Wait for the background fit (if any) and apply it."""
        self.wait_for_model_fit()
        if self._unapplied_fit is not None:
            self._apply_model_fit(self._unapplied_fit)
            self._unapplied_fit = None

    def _maybe_fit_model(self) -> None:
        if self._last_model_fit_timestep is None:
            self.fit_model(self.model_initial_gradient_steps)
        elif self.num_timesteps - self._last_model_fit_timestep >= self.model_train_freq:
            if self.background_model_fit:
                self._apply_background_fit()
                self._last_model_fit_timestep = self.num_timesteps
                self._start_background_fit(self.model_gradient_steps)
            else:
                self.fit_model(self.model_gradient_steps)

    def _sample_start_states(self, n: int) -> th.Tensor:
        buffer = self.replay_buffer
        upper = buffer.buffer_size if buffer.full else buffer.pos
        rows = np.random.randint(0, upper, size=n)
        envs = np.random.randint(0, buffer.n_envs, size=n)
        return th.as_tensor(buffer.observations[rows, envs], device=self.device).float()

    @th.no_grad()
    def model_rollouts(self, n_starts: int) -> tuple[int, int]:
        """Branch ``n_starts`` model rollouts of ``rollout_horizon`` steps from real states with the
        current policy and store them in the model buffer.

        Every step is one batched ensemble pass, one batched policy pass and one batched predicate
        call; rows that reach a predicted unsafe state are stored with the violation flag, rows that
        reach a ``termination_fn`` state with the terminal flag, and both are dropped from the
        batch. Rows whose prediction is not finite are discarded.

        :param n_starts: number of rollouts
        :return: number of model transitions stored and how many of them were unsafe
        """
        if n_starts <= 0:
            return 0, 0
        self.policy.set_training_mode(False)
        obs = self._sample_start_states(n_starts)
        n_stored, n_unsafe = 0, 0
        for _ in range(self.rollout_horizon):
            self.model_rows_generated += obs.shape[0]
            actions = self.actor(obs, deterministic=False)
            next_obs, rewards, violation_prob = self.rollout_dynamics.sample_step(obs, actions)
            finite = th.isfinite(next_obs).all(dim=1) & th.isfinite(rewards)
            obs, actions, next_obs, rewards = obs[finite], actions[finite], next_obs[finite], rewards[finite]
            if violation_prob is not None:
                violation_prob = violation_prob[finite]
            if obs.shape[0] == 0:
                break
            unsafe = self._predict_unsafe(next_obs, violation_prob)
            terminal = self._predict_terminal(next_obs) & ~unsafe
            self.replay_buffer.model_buffer.extend(obs, actions, next_obs, rewards, unsafe, terminal)
            n_stored += obs.shape[0]
            n_unsafe += int(unsafe.sum())
            obs = next_obs[~(unsafe | terminal)]
            if obs.shape[0] == 0:
                break
        return n_stored, n_unsafe

    def _rollouts_due(self) -> int:
        """How many model rollouts to branch now: ``rollout_batch_size`` per env step since the last
        ones once ``rollout_freq`` steps have passed, and always at the first update (the SAC batches
        need model data)."""
        if self._last_rollout_timestep is None:
            new_steps = self.n_envs
        else:
            new_steps = self.num_timesteps - self._last_rollout_timestep
            if new_steps < self.rollout_freq:
                return 0
        self._last_rollout_timestep = self.num_timesteps
        return self.rollout_batch_size * new_steps

    # ------------------------------------------------------------------ SAC hooks
    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """Model fit when due, model rollouts when due (:meth:`_rollouts_due`), then SAC's updates on
        mixed batches, all with denormal floats flushed to zero in the calling thread (its own setting
        is restored afterwards; torch's intra-op worker threads are not touched): the SAC optimisers'
        moments fill with denormals over a long run, as the ensemble's do
        (:mod:`sb3_safe.common.float_modes`). Nothing happens while the real buffer holds fewer than
        ``MIN_FIT_TRANSITIONS`` transitions."""
        if self.replay_buffer.real_size() < MIN_FIT_TRANSITIONS:
            # SB3 calls train() after the first env step when learning_starts=0 (or on a loaded model
            # going on without its buffer): no model can be fit on one transition yet.
            return
        with denormals_flushed():
            self._maybe_fit_model()
            n_stored, n_unsafe = self.model_rollouts(self._rollouts_due())
            self._model_transitions_since_dump += n_stored
            self._model_violations_since_dump += n_unsafe
            self._sac_update(gradient_steps, batch_size)
        self._record_model_logs()

    def _sac_update(self, gradient_steps: int, batch_size: int) -> None:
        """SAC's gradient steps on mixed batches: :func:`fused_sac_train` or SB3's ``SAC.train``."""
        if self.fused_sac_update:
            fused_sac_train(self, gradient_steps, batch_size, self.sac_hidden_precision)
        else:
            super().train(gradient_steps, batch_size)

    def _record_model_logs(self) -> None:
        self.logger.record("train/penalty_c", self.penalty_c)
        if self.last_model_fit is not None:
            self.logger.record("train/model_loss", self.last_model_fit.loss)
            self.logger.record("train/model_holdout_mse", self.last_model_fit.holdout_mse)
        self.logger.record("train/model_buffer_size", self.replay_buffer.model_buffer.size())
        if self._model_transitions_since_dump > 0:
            self.logger.record(
                "rollout/model_violation_rate", self._model_violations_since_dump / self._model_transitions_since_dump
            )

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        """SB3's schedule for the critics and the entropy coefficient; the actor has its own."""
        super()._update_learning_rate(optimizers)
        actor_lr = self.actor_lr_schedule(self._current_progress_remaining)
        update_learning_rate(self.actor.optimizer, actor_lr)
        self.logger.record("train/actor_learning_rate", actor_lr)

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        super()._update_info_buffer(infos, dones)
        assert self.safety_stats is not None
        self.safety_stats.update(infos, dones if dones is not None else np.zeros(len(infos), dtype=bool))
        # Costs are read again only at episode ends, and only until the warning has been given.
        unwarned = self.termination_fn is None and not self._warned_unmodelled_termination
        if unwarned and dones is not None and dones.any():
            self._warn_on_unmodelled_termination(infos, dones)

    def _warn_on_unmodelled_termination(self, infos: list[dict[str, Any]], dones: np.ndarray) -> None:
        _, violations = read_vec_costs(infos, env_name(self.env))
        for info, done, violation in zip(infos, dones, violations):
            if done and not info.get("TimeLimit.truncated", False) and not violation:
                warnings.warn(
                    f"SMBPO: env '{env_name(self.env)}' ended an episode (terminated, not truncated) without a "
                    "violation. The model rollouts only stop at unsafe states and will run past such terminal "
                    "states; pass termination_fn=<callable obs -> bool array> to stop them there.",
                    stacklevel=2,
                )
                self._warned_unmodelled_termination = True
                return

    def dump_logs(self) -> None:
        """SB3's logs plus the safety statistics (``rollout/ep_cost_mean``, ``safety/...``)."""
        assert self.safety_stats is not None
        self.safety_stats.record(self.logger)
        super().dump_logs()
        self._model_transitions_since_dump = 0
        self._model_violations_since_dump = 0

    def learn(
        self: SelfSMBPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "SMBPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfSMBPO:
        super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
        # learn()'s wall time includes all of its model fitting; the result waits for the next period.
        self.wait_for_model_fit()
        return self

    def _after_learn_setup(self, step_shift: int, env_was_reset: bool) -> None:
        """When SB3 restarts the step count (``reset_num_timesteps``), the step of the last model fit moves
        with it, so that a new ``learn()`` (e.g. after ``load``) keeps the fit period instead of waiting for
        the old step count to come round again; the rollouts start over as in a fresh run."""
        if self._last_model_fit_timestep is not None:
            self._last_model_fit_timestep += step_shift
        if step_shift != 0:
            # SB3 now plays ``learning_starts`` random steps again. Counted from the old rollout step, the
            # first update would branch rollouts for all of them at once (``rollout_batch_size`` x
            # ``learning_starts``, enough to overwrite the model buffer); a fresh run branches none for its
            # warm-up, only ``rollout_batch_size`` per env at its first update.
            self._last_rollout_timestep = None

    # ------------------------------------------------------------------ save / load
    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """SB3's ``save``, after any background model fit has finished writing the ensemble."""
        self.wait_for_model_fit()
        super().save(path, exclude, include)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_unsafe_fn", "rollout_dynamics", "_fit_future", "_fit_executor"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        state_dicts = [*state_dicts, "dynamics", "dynamics_optimizer"]
        if self.background_model_fit:
            state_dicts.append("rollout_dynamics")
        return state_dicts, variables

    def load_replay_buffer(
        self, path: str | pathlib.Path | io.BufferedIOBase, truncate_last_traj: bool = True
    ) -> None:
        """Load the real buffer together with its model buffer (both are saved by ``save_replay_buffer``)."""
        super().load_replay_buffer(path, truncate_last_traj)
        if not isinstance(self.replay_buffer, SMBPOReplayBuffer):
            raise TypeError(f"SMBPO needs an SMBPOReplayBuffer, the file holds a {type(self.replay_buffer).__name__}")
        self.replay_buffer.model_buffer.to(self.device)
        self._set_buffer_penalty()
