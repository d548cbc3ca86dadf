"""What PPOLag, TRPOLag and CPO share on top of SB3's ``OnPolicyAlgorithm`` (SPEC.md 2.3).

:class:`CostOnPolicyMixin` is mixed in *before* the SB3 / sb3-contrib algorithm
(``class PPOLag(CostOnPolicyMixin, PPO)``). It

* swaps the rollout buffer for :class:`~sb3_safe.common.buffers.CostRolloutBuffer`
  (or its Dict twin) and checks that the policy has a cost value function;
* overrides ``collect_rollouts`` (SB3's loop, plus: read the step costs from the VecEnv infos
  through :class:`~sb3_safe.common.safety_stats.SafetyStats` / ``read_vec_costs``, store the costs
  and cost values, bootstrap the cost of time-outs like SB3 bootstraps the reward, run cost GAE);
* keeps the episode-cost estimate J_c used by the multiplier / CPO;
* writes the safety statistics next to SB3's ``rollout/`` keys in ``dump_logs``;
* offers the joint value / cost-value regression used by the trust-region algorithms.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch import nn
from torch.nn import functional as F

from sb3_safe.common.buffers import CostDictRolloutBuffer, CostRolloutBuffer
from sb3_safe.common.lagrange import (
    LagrangeMultiplier,
    UpdateRule,
    make_lagrange_multiplier,
    multiplier_for_settings,
    validate_cost_limit,
)
from sb3_safe.common.safety_stats import SafetyStats, SafetyStatsMixin


def normalise_advantages(
    advantages: th.Tensor,
    cost_advantages: th.Tensor,
    normalize_advantage: bool,
    normalize_cost_advantage: bool,
    rescale_cost: bool = True,
) -> tuple[th.Tensor, th.Tensor]:
    """Normalise the reward and cost advantages of a batch without changing the trade-off lambda sets.

    The reward advantage is standardised as in SB3 (``normalize_advantage``). The cost advantage is
    centred (``normalize_cost_advantage``, as OmniSafe) and, with ``rescale_cost``, divided by the
    *reward* advantage's standard deviation, so ``A_r - lambda A_c`` stays proportional to the raw
    Lagrangian. (Standardising A_r alone would inflate it whenever the reward advantage has a small
    spread, e.g. once the policy is nearly deterministic, and lambda would have to grow without bound to
    keep the constraint.) CPO passes ``rescale_cost=False``: its cost gradient b is compared with
    c = J_c - d, which is in cost units. A batch of one value is left as it is (SB3 issue #325).

    :param advantages: reward advantages A_r
    :param cost_advantages: cost advantages A_c
    :param normalize_advantage: standardise A_r
    :param normalize_cost_advantage: centre A_c
    :param rescale_cost: with ``normalize_advantage``, divide A_c by A_r's standard deviation too
    :return: the normalised (A_r, A_c)
    """
    if advantages.numel() < 2:
        return advantages, cost_advantages
    if normalize_cost_advantage:
        cost_advantages = cost_advantages - cost_advantages.mean()
    if normalize_advantage:
        scale = advantages.std() + 1e-8
        advantages = (advantages - advantages.mean()) / scale
        if rescale_cost:
            cost_advantages = cost_advantages / scale
    return advantages, cost_advantages


def lagrangian_clipped_loss(
    ratio: th.Tensor, advantages: th.Tensor, cost_advantages: th.Tensor, lam: float, clip_range: float
) -> th.Tensor:
    """PPO-Lagrangian's policy loss ``-(S_r - lambda S_c) / (1 + lambda)``, both surrogates clipped pessimistically.

    ``S_r = mean(min(ratio A_r, clip(ratio) A_r))`` (SB3's PPO surrogate) and
    ``S_c = mean(max(ratio A_c, clip(ratio) A_c))`` (the cost is minimised, so its pessimistic bound is the max).
    Since ``max(x, y) = -min(-x, -y)`` and ``lambda >= 0``, the two are evaluated as one clipped surrogate
    over the stacked weights ``[A_r, -lambda A_c] / (1 + lambda)``, which needs half the autograd nodes
    (on small minibatches each node costs more than its arithmetic).

    :param ratio: probability ratios pi_new / pi_old (with gradient)
    :param advantages: reward advantages A_r (already normalised)
    :param cost_advantages: cost advantages A_c (already normalised)
    :param lam: the multiplier lambda >= 0
    :param clip_range: PPO's clipping parameter
    :return: the scalar loss
    """
    weights = th.stack([advantages, -lam * cost_advantages]) / (1.0 + lam)
    clipped_ratio = th.clamp(ratio, 1 - clip_range, 1 + clip_range)
    return -th.min(weights * ratio, weights * clipped_ratio).sum(dim=0).mean()


def rollout_or_recent_mean(rollout_values: Sequence[float], recent_values: Sequence[float]) -> float | None:
    """The per-episode estimate after a rollout (J_c, the episode length): the mean over the episodes that
    finished in the rollout, else over the recent ones, else None (no episode has ended yet).

    :param rollout_values: one value per episode finished during the rollout
    :param recent_values: one value per recent finished episode (``stats_window_size`` of them)
    :return: the estimate
    """
    if rollout_values:
        return float(np.mean(rollout_values))
    if recent_values:
        return float(np.mean(recent_values))
    return None


class CostOnPolicyMixin(SafetyStatsMixin):
    """Cost handling for on-policy SB3 algorithms; mix it in before the SB3 class.

    The subclass's ``__init__`` must call :meth:`_init_cost_settings` *before* the SB3
    ``__init__`` and build the model itself (SB3's ``_init_setup_model`` pattern).

    Episode-cost estimate J_c (used once per rollout): the mean summed cost of the episodes that
    finished during the last rollout; when none finished (episodes longer than a rollout), the mean
    of the last ``stats_window_size`` finished episodes; before the first episode ever ends there is
    no estimate, and the multiplier / CPO constraint is left as it is for that rollout. The
    Lagrange multiplier is only updated after rollouts in which an episode finished: the fallback
    mean brings no new evidence, and integrating it again at every rollout would wind lambda up
    from old episodes (with 1000-step episodes and 512-step rollouts, a policy that has stopped
    violating would keep raising lambda from the violations of its past).
    """

    # Provided by the SB3 base classes.
    policy: Any
    rollout_buffer: RolloutBuffer
    rollout_buffer_class: type[RolloutBuffer] | None
    rollout_buffer_kwargs: dict[str, Any]
    observation_space: spaces.Space
    action_space: spaces.Space
    n_envs: int
    env: VecEnv | None
    device: th.device
    gamma: float
    gae_lambda: float
    logger: Any
    num_timesteps: int
    use_sde: bool
    sde_sample_freq: int
    _stats_window_size: int
    _last_obs: Any
    _last_episode_starts: Any

    def _init_cost_settings(
        self,
        cost_limit: float,
        gamma: float,
        gae_lambda: float,
        cost_gamma: float | None,
        cost_gae_lambda: float | None,
        normalize_cost_advantage: bool,
    ) -> None:
        self.cost_limit = validate_cost_limit(cost_limit)
        self.cost_gamma = gamma if cost_gamma is None else float(cost_gamma)
        self.cost_gae_lambda = gae_lambda if cost_gae_lambda is None else float(cost_gae_lambda)
        self.normalize_cost_advantage = normalize_cost_advantage
        self.safety_stats: SafetyStats | None = None
        self.ep_cost_estimate: float | None = None
        self.ep_length_estimate: float | None = None
        self._rollout_episode_costs: list[float] = []
        self._rollout_episode_lengths: list[int] = []

    def _setup_model(self) -> None:
        if self.rollout_buffer_class is None:
            is_dict = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = CostDictRolloutBuffer if is_dict else CostRolloutBuffer
        if not issubclass(self.rollout_buffer_class, (CostRolloutBuffer, CostDictRolloutBuffer)):
            raise TypeError(
                f"{type(self).__name__} needs a rollout buffer that stores costs (a subclass of "
                "sb3_safe.common.buffers.CostRolloutBuffer or CostDictRolloutBuffer), "
                f"got {self.rollout_buffer_class.__name__}"
            )
        self.rollout_buffer_kwargs = {
            **self.rollout_buffer_kwargs,
            "cost_gamma": self.cost_gamma,
            "cost_gae_lambda": self.cost_gae_lambda,
        }
        super()._setup_model()  # type: ignore[misc]
        if not all(callable(getattr(self.policy, name, None)) for name in ("act", "predict_critics")):
            raise TypeError(
                f"{type(self).__name__} needs a policy with a cost value function (act, predict_critics), such as "
                f"sb3_safe.ppo_lag.policies.CostActorCriticPolicy ('MlpPolicy'); got {type(self.policy).__name__}"
            )

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """SB3's ``OnPolicyAlgorithm.collect_rollouts`` plus costs (the additions are marked "cost").

        One change to SB3's loop: the steps run the actor alone, and the value and cost-value estimates of
        the stored observations come from one batched pass of the critics after the last step (the
        parameters do not change during a rollout, so they are the same numbers). Evaluated step by step,
        the two critics cost a third of the policy's per-step time at batch size ``n_envs``; batched, they
        cost a few milliseconds per rollout. The ``values`` of the callbacks' ``locals`` are therefore not
        available during the rollout.

        :param env: the training environment
        :param callback: callback called at each step
        :param rollout_buffer: the cost rollout buffer to fill
        :param n_rollout_steps: number of steps to collect per env
        :return: False if a callback stopped training early
        """
        assert self._last_obs is not None, "No previous observation was provided"
        assert self.safety_stats is not None, "_setup_learn() must run before collecting rollouts"
        self.policy.set_training_mode(False)

        n_steps = 0
        rollout_buffer.reset()
        self._rollout_episode_costs, self._rollout_episode_lengths = [], []
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)

        callback.on_rollout_start()
        # Stored as the (cost) values of each step; fill_critic_values overwrites them after the loop.
        not_yet_evaluated = th.zeros(env.num_envs, 1)

        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)

            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)
                actions, log_probs = self.policy.act(obs_tensor)
            actions = actions.cpu().numpy()

            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)

            # cost: read (and validate) before the callbacks so a missing cost fails at the step that lacks it
            costs = self._record_step_costs(infos, dones)

            self.num_timesteps += env.num_envs

            callback.update_locals(locals())
            if not callback.on_step():
                return False

            self._update_info_buffer(infos, dones)  # type: ignore[attr-defined]
            n_steps += 1

            if isinstance(self.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)

            # Handle timeout by bootstrapping with value function (SB3 issue #633), for the cost too
            for idx, done in enumerate(dones):
                if (
                    done
                    and infos[idx].get("terminal_observation") is not None
                    and infos[idx].get("TimeLimit.truncated", False)
                ):
                    terminal_obs = self.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                    with th.no_grad():
                        terminal_values, terminal_cost_values = self.policy.predict_critics(terminal_obs)
                    terminal_value, terminal_cost_value = terminal_values[0], terminal_cost_values[0]
                    rewards[idx] += self.gamma * terminal_value
                    costs[idx] += self.cost_gamma * float(terminal_cost_value)

            rollout_buffer.add(
                self._last_obs,
                actions,
                rewards,
                self._last_episode_starts,
                not_yet_evaluated,
                log_probs,
                cost=costs,
                cost_value=not_yet_evaluated,
            )
            self._last_obs = new_obs
            self._last_episode_starts = dones

        with th.no_grad():
            rollout_buffer.fill_critic_values(self.policy.predict_critics)  # type: ignore[attr-defined]
            new_obs_tensor = obs_as_tensor(new_obs, self.device)
            values, last_cost_values = self.policy.predict_critics(new_obs_tensor)

        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        rollout_buffer.compute_cost_returns_and_advantage(  # type: ignore[attr-defined]
            last_cost_values=last_cost_values, dones=dones
        )
        assert self.safety_stats is not None
        self.ep_cost_estimate = rollout_or_recent_mean(self._rollout_episode_costs, self.safety_stats.episode_costs)
        self.ep_length_estimate = rollout_or_recent_mean(
            self._rollout_episode_lengths, self.safety_stats.episode_lengths
        )

        callback.update_locals(locals())

        callback.on_rollout_end()

        return True

    def _record_step_costs(self, infos: list[dict[str, Any]], dones: np.ndarray) -> np.ndarray:
        """Read one VecEnv step's costs into the safety statistics; keep the costs of episodes that end.

        :return: the step costs as float32, a copy the caller may modify (time-out bootstrap)
        """
        assert self.safety_stats is not None
        costs = self.safety_stats.update(infos, dones)
        self._rollout_episode_costs.extend(self.safety_stats.finished_costs)
        self._rollout_episode_lengths.extend(self.safety_stats.finished_lengths)
        return costs.astype(np.float32)

    def dump_logs(self, iteration: int = 0) -> None:
        """SB3's ``dump_logs`` with ``rollout/ep_cost_mean`` and the ``safety/`` keys added."""
        if self.safety_stats is not None:
            self.safety_stats.record(self.logger)
        super().dump_logs(iteration)  # type: ignore[misc]

    def _fit_critics(self, actor_params: Iterable[nn.Parameter]) -> tuple[list[float], list[float]]:
        """Regress V and V_c on the returns and cost returns together (trust-region algorithms).

        sb3-contrib TRPO's critic update (Adam on the policy optimiser, ``n_critic_updates`` passes, the actor's
        gradients removed so the critic step cannot move the policy outside the trust region), on one loss
        for both critics. Fitted one after the other, each critic would keep moving on Adam's momentum while
        the other is fitted: the twin layout holds both in the same tensors, so the idle one gets a zero
        gradient rather than none.

        :param actor_params: parameters that must not move (the actor's)
        :return: the minibatch value losses and cost value losses
        """
        frozen = list(actor_params)
        value_losses, cost_value_losses = [], []
        for _ in range(self.n_critic_updates):
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                values_pred, cost_values_pred = self.policy.predict_critics(rollout_data.observations)
                value_loss = F.mse_loss(rollout_data.returns, values_pred.flatten())
                cost_value_loss = F.mse_loss(rollout_data.cost_returns, cost_values_pred.flatten())
                value_losses.append(value_loss.item())
                cost_value_losses.append(cost_value_loss.item())
                self.policy.optimizer.zero_grad()
                (value_loss + cost_value_loss).backward()
                for param in frozen:
                    param.grad = None
                self.policy.optimizer.step()
        return value_losses, cost_value_losses

    def _actor_parameters(self) -> list[nn.Parameter]:
        """The policy's actor parameters, by sb3-contrib TRPO's rule: those the action distribution depends on.

        TRPO finds them as the parameters not named ``*value*`` with a KL gradient; without a KL at hand, the
        critic-only features extractor (``share_features_extractor=False``) is the one such parameter group
        to leave out by hand.
        """
        critic_only: set[int] = set()
        if not self.policy.share_features_extractor:
            critic_only = {id(param) for param in self.policy.vf_features_extractor.parameters()}
        return [
            param
            for name, param in self.policy.named_parameters()
            if "value" not in name and id(param) not in critic_only
        ]

    def _record_cost_estimate(self) -> None:
        if self.ep_cost_estimate is not None:
            self.logger.record("train/ep_cost_estimate", self.ep_cost_estimate)


class LagrangianMixin(CostOnPolicyMixin):
    """:class:`CostOnPolicyMixin` plus one :class:`~sb3_safe.common.lagrange.LagrangeMultiplier`.

    The multiplier is built in ``__init__`` (not in ``_setup_model``) so that SB3's ``load``,
    which restores the pickled attributes and then calls ``_setup_model``, keeps the saved lambda.
    ``load(..., lagrangian_update=..., lagrangian_kwargs=...)`` with other settings than the saved ones
    replaces it by a multiplier of those settings that starts at the saved lambda, or at a new
    ``initial_value`` given there (:func:`~sb3_safe.common.lagrange.multiplier_for_settings`).
    """

    lagrange_multiplier: LagrangeMultiplier

    def _init_lagrangian(self, lagrangian_update: UpdateRule, lagrangian_kwargs: dict[str, Any] | None) -> None:
        self.lagrangian_update = lagrangian_update
        self.lagrangian_kwargs = dict(lagrangian_kwargs or {})
        self.lagrange_multiplier = make_lagrange_multiplier(self.cost_limit, lagrangian_update, self.lagrangian_kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        self.lagrangian_kwargs = dict(self.lagrangian_kwargs or {})
        self.lagrange_multiplier = multiplier_for_settings(
            self.lagrange_multiplier, self.cost_limit, self.lagrangian_update, self.lagrangian_kwargs
        )

    @property
    def lagrange_value(self) -> float:
        """The current multiplier lambda."""
        return self.lagrange_multiplier.value

    def _update_lagrange_multiplier(self) -> float:
        """One multiplier update from the rollout's J_c (skipped when no episode finished in it)."""
        if self._rollout_episode_costs:  # the rollout just collected; J_c is then their mean
            assert self.ep_cost_estimate is not None
            self.lagrange_multiplier.update(self.ep_cost_estimate, self.cost_limit)
        self._record_cost_estimate()
        self.logger.record("train/lagrange_multiplier", self.lagrange_value)
        return self.lagrange_value

    def _penalised_advantages(self, advantages: th.Tensor, cost_advantages: th.Tensor, lam: float) -> th.Tensor:
        """(A_r - lambda A_c) / (1 + lambda), the Lagrangian advantage of SPEC.md 2.3."""
        return (advantages - lam * cost_advantages) / (1.0 + lam)
