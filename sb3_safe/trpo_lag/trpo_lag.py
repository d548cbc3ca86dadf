"""TRPO-Lagrangian (TRPOLag): sb3-contrib TRPO with a cost critic and a Lagrange multiplier (SPEC.md 2.3)."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from sb3_contrib import TRPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import explained_variance

from sb3_safe.common.lagrange import UpdateRule
from sb3_safe.common.on_policy_lagrangian import LagrangianMixin, normalise_advantages
from sb3_safe.ppo_lag.policies import CnnPolicy, CostActorCriticPolicy, MlpPolicy, MultiInputPolicy

SelfTRPOLag = TypeVar("SelfTRPOLag", bound="TRPOLag")


class TRPOLag(LagrangianMixin, TRPO):
    """TRPO-Lagrangian: TRPO's trust-region step on the Lagrangian ``A_r - lambda A_c``.

    Paper: Ray, Achiam and Amodei, *Benchmarking Safe Exploration in Deep Reinforcement Learning*
    (2019), the TRPO-Lagrangian baseline; TRPO: Schulman et al., *Trust Region Policy Optimization* (ICML 2015).
    PID multiplier: Stooke, Achiam and Abbeel (ICML 2020).

    What changes with respect to sb3-contrib's TRPO:

    * the policy has a cost value function (``policy_kwargs=dict(cost_value_head="separate"|"shared")``), fitted
      with TRPO's value function in one loss, with TRPO's settings (``n_critic_updates`` passes, ``batch_size``,
      the actor parameters frozen), in place of TRPO's critic loop;
    * the rollout buffer holds the step costs and runs cost GAE (``cost_gamma`` / ``cost_gae_lambda``);
    * once per rollout the multiplier is updated from the episode cost J_c, then the rollout's advantages are
      replaced by ``(A_r - lambda A_c) / (1 + lambda)`` (normalised by
      :func:`~sb3_safe.common.on_policy_lagrangian.normalise_advantages`) and TRPO's own policy step runs
      unchanged: its conjugate-gradient step, KL line search and improvement test then act on the
      Lagrangian surrogate. TRPO standardises that advantage again,
      which only rescales it; the trust-region step is invariant to that scale.

    :param policy: the policy model (``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a subclass of
        :class:`~sb3_safe.ppo_lag.policies.CostActorCriticPolicy`)
    :param env: the environment to learn from (if registered in Gym, can be str); its step infos must carry
        ``info["cost"]``
    :param learning_rate: the learning rate of the value and cost value functions, it can be a function of the
        current progress remaining (from 1 to 0)
    :param n_steps: the number of steps to run for each environment per update
    :param batch_size: minibatch size of the value and cost value regressions
    :param gamma: discount factor
    :param cg_max_steps: maximum number of conjugate-gradient steps
    :param cg_damping: damping of the Fisher-vector product
    :param line_search_shrinking_factor: step-size reduction factor of the backtracking line search
    :param line_search_max_iter: maximum number of line-search steps
    :param n_critic_updates: number of value (and cost value) passes per policy update
    :param gae_lambda: GAE lambda of the rewards
    :param use_sde: whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: sample a new noise matrix every n steps when using gSDE
    :param rollout_buffer_class: rollout buffer class (``None``: :class:`~sb3_safe.common.buffers.CostRolloutBuffer`
        or its Dict twin); must store costs
    :param rollout_buffer_kwargs: keyword arguments to pass to the rollout buffer on creation
    :param normalize_advantage: whether to standardise the reward advantage
    :param target_kl: the trust-region size (maximum KL divergence between updates)
    :param sub_sampling_factor: sub-sample the batch for the policy step (TRPO's option)
    :param cost_limit: the per-episode cost budget d (>= 0; default 25.0, OmniSafe's)
    :param cost_gamma: discount factor of the costs (``None``: same as ``gamma``)
    :param cost_gae_lambda: GAE lambda of the costs (``None``: same as ``gae_lambda``)
    :param normalize_cost_advantage: whether to centre the cost advantage (subtract its mean)
    :param lagrangian_update: ``"plain"`` (dual ascent) or ``"pid"`` (PID Lagrangian)
    :param lagrangian_kwargs: other arguments of :class:`~sb3_safe.common.lagrange.LagrangeMultiplier`
        (``initial_value`` 0.001, ``lr`` 0.035, ``optimizer``, ``kp``, ``ki``, ``kd``, ``d_delay``, ``ema_alpha``,
        ``lambda_max``)
    :param stats_window_size: window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation (e.g. ``cost_value_head``)
    :param verbose: verbosity level: 0 no output, 1 info, 2 debug
    :param seed: seed for the pseudo random generators
    :param device: device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: CostActorCriticPolicy

    def __init__(
        self,
        policy: str | type[CostActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        n_steps: int = 2048,
        batch_size: int = 128,
        gamma: float = 0.99,
        cg_max_steps: int = 15,
        cg_damping: float = 0.1,
        line_search_shrinking_factor: float = 0.8,
        line_search_max_iter: int = 10,
        n_critic_updates: int = 10,
        gae_lambda: float = 0.95,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        normalize_advantage: bool = True,
        target_kl: float = 0.01,
        sub_sampling_factor: int = 1,
        cost_limit: float = 25.0,
        cost_gamma: float | None = None,
        cost_gae_lambda: float | None = None,
        normalize_cost_advantage: bool = True,
        lagrangian_update: UpdateRule = "plain",
        lagrangian_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        self._init_cost_settings(cost_limit, gamma, gae_lambda, cost_gamma, cost_gae_lambda, normalize_cost_advantage)
        self._init_lagrangian(lagrangian_update, lagrangian_kwargs)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            gamma=gamma,
            cg_max_steps=cg_max_steps,
            cg_damping=cg_damping,
            line_search_shrinking_factor=line_search_shrinking_factor,
            line_search_max_iter=line_search_max_iter,
            n_critic_updates=n_critic_updates,
            gae_lambda=gae_lambda,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            normalize_advantage=normalize_advantage,
            target_kl=target_kl,
            sub_sampling_factor=sub_sampling_factor,
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

    def _write_lagrangian_advantages(self, lam: float) -> None:
        """Overwrite the buffer's reward advantages with the Lagrangian advantage.

        The buffer is refilled at the next rollout, so nothing else reads the reward advantages.
        """
        buffer = self.rollout_buffer
        advantages, cost_advantages = normalise_advantages(
            th.as_tensor(buffer.advantages),
            th.as_tensor(buffer.cost_advantages),  # type: ignore[attr-defined]
            self.normalize_advantage,
            self.normalize_cost_advantage,
        )
        buffer.advantages = self._penalised_advantages(advantages, cost_advantages, lam).numpy().astype(np.float32)

    def train(self) -> None:
        """Update the multiplier, run TRPO's policy step on the Lagrangian advantage, then fit both critics."""
        lam = self._update_lagrange_multiplier()
        self._write_lagrangian_advantages(lam)
        self._trpo_policy_step()
        value_losses, cost_value_losses = self._fit_critics(self._actor_parameters())
        buffer = self.rollout_buffer
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/cost_value_loss", np.mean(cost_value_losses))
        self.logger.record(
            "train/cost_explained_variance",
            explained_variance(buffer.cost_values.flatten(), buffer.cost_returns.flatten()),  # type: ignore[attr-defined]
        )

    def _trpo_policy_step(self) -> None:
        """sb3-contrib TRPO's ``train()`` without its critic loop, which fits V alone.

        The loop is switched off by running it zero times; its log of the (then empty) value losses is
        overwritten by :meth:`train`, so numpy's warnings about that empty mean are silenced here.
        """
        n_critic_updates, self.n_critic_updates = self.n_critic_updates, 0
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
                warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
                super().train()
        finally:
            self.n_critic_updates = n_critic_updates

    def learn(
        self: SelfTRPOLag,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "TRPOLag",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfTRPOLag:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
