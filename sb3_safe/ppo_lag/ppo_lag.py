"""PPO-Lagrangian (PPOLag): PPO with a cost critic and a Lagrange multiplier (SPEC.md 2.3)."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

from sb3_safe.common.lagrange import UpdateRule
from sb3_safe.common.on_policy_lagrangian import LagrangianMixin, lagrangian_clipped_loss, normalise_advantages
from sb3_safe.ppo_lag.policies import CnnPolicy, CostActorCriticPolicy, MlpPolicy, MultiInputPolicy

SelfPPOLag = TypeVar("SelfPPOLag", bound="PPOLag")


class PPOLag(LagrangianMixin, PPO):
    """PPO-Lagrangian: PPO on the Lagrangian ``A_r - lambda A_c`` with a learned multiplier lambda >= 0.

    Paper: Ray, Achiam and Amodei, *Benchmarking Safe Exploration in Deep Reinforcement Learning*
    (2019), the PPO-Lagrangian baseline; defaults of OmniSafe's PPOLag (Ji et al., *OmniSafe*, JMLR 2024).
    PID multiplier: Stooke, Achiam and Abbeel, *Responsive Safety in RL by PID Lagrangian Methods* (ICML 2020).

    What changes with respect to SB3's PPO:

    * the policy has a cost value function V_c (``policy_kwargs=dict(cost_value_head="separate"|"shared")``,
      see :class:`~sb3_safe.ppo_lag.policies.CostActorCriticPolicy`), trained with the value function in the
      same loss: ``loss = policy_loss + ent_coef * entropy_loss + vf_coef * value_loss``
      ``+ cost_vf_coef * cost_value_loss``;
    * the rollout buffer also holds the step costs (``info["cost"]``, read through ``read_vec_costs``) and runs
      GAE on them with ``cost_gamma`` / ``cost_gae_lambda``;
    * once per rollout, before the policy update, the multiplier is updated from the episode cost J_c
      (the mean cost of the episodes that ended in the rollout; see
      :class:`~sb3_safe.common.on_policy_lagrangian.CostOnPolicyMixin` when none ended);
    * the policy loss is ``-(S_r - lambda S_c) / (1 + lambda)`` with both surrogates clipped pessimistically:
      ``S_r = min(ratio A_r, clip(ratio) A_r)`` (SB3's) and ``S_c = max(ratio A_c, clip(ratio) A_c)``
      (the cost is to be minimised, so its pessimistic bound is the max). OmniSafe instead clips the
      combined advantage; both keep the step inside PPO's clip range. Per minibatch, A_r is standardised as
      in SB3 (``normalize_advantage``) and A_c is centred (``normalize_cost_advantage``) and divided by the same
      standard deviation, so lambda trades off reward and cost on their raw scales (see
      :func:`~sb3_safe.common.on_policy_lagrangian.normalise_advantages`).

    :param policy: the policy model (``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a subclass of
        :class:`~sb3_safe.ppo_lag.policies.CostActorCriticPolicy`)
    :param env: the environment to learn from (if registered in Gym, can be str); its step infos must carry
        ``info["cost"]``
    :param learning_rate: the learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: the number of steps to run for each environment per update
    :param batch_size: minibatch size
    :param n_epochs: number of epochs when optimizing the surrogate loss
    :param gamma: discount factor
    :param gae_lambda: GAE lambda of the rewards
    :param clip_range: clipping parameter, it can be a function of the current progress remaining (from 1 to 0)
    :param clip_range_vf: clipping parameter for the value and cost value functions (``None``: no clipping)
    :param normalize_advantage: whether to normalize the reward advantage
    :param ent_coef: entropy coefficient for the loss calculation
    :param vf_coef: value function coefficient for the loss calculation
    :param max_grad_norm: the maximum value for the gradient clipping
    :param use_sde: whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: sample a new noise matrix every n steps when using gSDE
    :param rollout_buffer_class: rollout buffer class (``None``: :class:`~sb3_safe.common.buffers.CostRolloutBuffer`
        or its Dict twin); must store costs
    :param rollout_buffer_kwargs: keyword arguments to pass to the rollout buffer on creation
    :param target_kl: limit the KL divergence between updates (``None``: no limit)
    :param cost_limit: the per-episode cost budget d (>= 0; default 25.0, OmniSafe's)
    :param cost_gamma: discount factor of the costs (``None``: same as ``gamma``)
    :param cost_gae_lambda: GAE lambda of the costs (``None``: same as ``gae_lambda``)
    :param cost_vf_coef: cost value function coefficient for the loss calculation (``None``: same as ``vf_coef``)
    :param normalize_cost_advantage: whether to centre the cost advantage (subtract its minibatch mean)
    :param lagrangian_update: ``"plain"`` (dual ascent) or ``"pid"`` (PID Lagrangian)
    :param lagrangian_kwargs: other arguments of :class:`~sb3_safe.common.lagrange.LagrangeMultiplier`
        (``initial_value`` 0.001, ``lr`` 0.035, ``optimizer``, ``kp``, ``ki``, ``kd``, ``d_delay``, ``ema_alpha``,
        ``lambda_max``)
    :param stats_window_size: window size for the rollout logging (episodes averaged for the ``rollout/`` keys)
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation (e.g. ``cost_value_head``)
    :param verbose: verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
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
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
        cost_limit: float = 25.0,
        cost_gamma: float | None = None,
        cost_gae_lambda: float | None = None,
        cost_vf_coef: float | None = None,
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
        self.cost_vf_coef = vf_coef if cost_vf_coef is None else float(cost_vf_coef)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
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

    def train(self) -> None:
        """Update the multiplier, then the policy, value and cost value on the rollout.

        SB3's PPO ``train()`` has no hook for extra loss terms, so this is its loop with three
        additions (marked "cost"): the Lagrangian surrogate, the cost value loss and the logs.
        """
        # cost: lambda is fixed for the whole update, from this rollout's episode cost
        lam = self._update_lagrange_multiplier()

        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]

        entropy_losses = []
        pg_losses, value_losses, cost_value_losses = [], [], []
        clip_fractions = []

        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                actions = rollout_data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = rollout_data.actions.long().flatten()

                values, cost_values, log_prob, entropy = self.policy.evaluate_actions_with_cost(
                    rollout_data.observations, actions
                )
                values, cost_values = values.flatten(), cost_values.flatten()
                # cost: normalised together so that the reward/cost trade-off is the raw Lagrangian's
                advantages, cost_advantages = normalise_advantages(
                    rollout_data.advantages,
                    rollout_data.cost_advantages,
                    self.normalize_advantage,
                    self.normalize_cost_advantage,
                )

                ratio = th.exp(log_prob - rollout_data.old_log_prob)

                # cost: both surrogates clipped pessimistically, then the normalised Lagrangian
                policy_loss = lagrangian_clipped_loss(ratio, advantages, cost_advantages, lam, clip_range)

                pg_losses.append(policy_loss.item())
                clip_fraction = th.mean((th.abs(ratio - 1) > clip_range).float()).item()
                clip_fractions.append(clip_fraction)

                if self.clip_range_vf is None:
                    values_pred = values
                    cost_values_pred = cost_values
                else:
                    values_pred = rollout_data.old_values + th.clamp(
                        values - rollout_data.old_values, -clip_range_vf, clip_range_vf
                    )
                    cost_values_pred = rollout_data.old_cost_values + th.clamp(
                        cost_values - rollout_data.old_cost_values, -clip_range_vf, clip_range_vf
                    )
                value_loss = F.mse_loss(rollout_data.returns, values_pred)
                value_losses.append(value_loss.item())
                cost_value_loss = F.mse_loss(rollout_data.cost_returns, cost_values_pred)
                cost_value_losses.append(cost_value_loss.item())

                if entropy is None:
                    entropy_loss = -th.mean(-log_prob)
                else:
                    entropy_loss = -th.mean(entropy)
                entropy_losses.append(entropy_loss.item())

                loss = (
                    policy_loss
                    + self.ent_coef * entropy_loss
                    + self.vf_coef * value_loss
                    + self.cost_vf_coef * cost_value_loss
                )

                # Approximate reverse KL for early stopping (SB3 issue #417)
                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        buffer = self.rollout_buffer
        explained_var = explained_variance(buffer.values.flatten(), buffer.returns.flatten())
        cost_explained_var = explained_variance(
            buffer.cost_values.flatten(), buffer.cost_returns.flatten()  # type: ignore[attr-defined]
        )

        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/cost_value_loss", np.mean(cost_value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/cost_explained_variance", cost_explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def learn(
        self: SelfPPOLag,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "PPOLag",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPPOLag:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
