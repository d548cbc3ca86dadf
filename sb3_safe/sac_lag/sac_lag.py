"""SACLag: Soft Actor-Critic with a learned Lagrange multiplier on the episode cost (SPEC.md 2.3)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import polyak_update

from sb3_safe.common.action_spaces import sac_action_space_checked
from sb3_safe.common.cost import env_name
from sb3_safe.common.lagrange import (
    LagrangeMultiplier,
    UpdateRule,
    make_lagrange_multiplier,
    multiplier_for_settings,
    validate_cost_limit,
)
from sb3_safe.common.replay_buffers import (
    CostDictReplayBuffer,
    CostReplayBuffer,
    CostReplayBufferSamples,
)
from sb3_safe.common.safety_stats import SafetyStats, SafetyStatsMixin
from sb3_safe.sac_lag.policies import (
    CnnPolicy,
    MlpPolicy,
    MultiInputPolicy,
    RewardCostCritic,
    SACLagPolicy,
)

SelfSACLag = TypeVar("SelfSACLag", bound="SACLag")
MultiplierSignal = Literal["episode_cost", "cost_value"]


class SACLag(SafetyStatsMixin, SAC):
    """SAC with a twin cost critic and a Lagrange multiplier (SAC-Lagrangian).

    Constrained problem: maximise the soft return subject to ``E[sum_t c_t] <= cost_limit`` per episode,
    solved on the Lagrangian ``max_pi min_{lambda >= 0} J_r(pi) - lambda (J_c(pi) - d)``.
    References: Ha, Xu, Tan, Levine, Tan, *Learning to Walk in the Real World with Minimal Human
    Effort* (CoRL 2020), Sec. IV (SAC with a Lagrangian constraint); Haarnoja et al., *Soft
    Actor-Critic Algorithms and Applications* (2018) for SAC; the update rules of
    :class:`~sb3_safe.common.lagrange.LagrangeMultiplier` (plain dual ascent or the PID Lagrangian
    of Stooke et al., ICML 2020). OmniSafe's SACLag is the closest public implementation.

    What it adds to SB3's SAC:

    * **Cost critic** -- a twin ``Q_c(s, a)`` with a Polyak target, trained on
      ``y_c = c + cost_gamma (1 - done) max_i Q_c,i'(s', a')``, ``a' ~ pi(s')``. The target
      takes the **max** over the twin cost critics: the pessimistic (over-)estimate of the future
      cost, mirroring SAC's min for the reward, so that estimation errors make the policy more
      cautious rather than less. There is no entropy term in the cost target (entropy is a bonus
      on the reward side only). The reward and cost critics are the members of one ensemble MLP,
      :class:`~sb3_safe.sac_lag.policies.RewardCostCritic` (``critic``, target ``critic_target``, one
      optimiser ``critic.optimizer``): one forward pass and one backward pass evaluate and train all
      four Q-functions, so the cost critic adds little time to SAC's (SB3 runs its Q-networks one by
      one). The losses are SAC's and the cost critic's, unchanged; their sum is minimised in one step,
      which is the same as two separate steps because the two critics share no trainable parameter
      (except a trainable critic features extractor, then trained by both losses) and Adam is per
      parameter. The cost critics therefore use the critic's learning rate.
    * **Actor loss** -- ``(alpha log pi - min_i Q_r,i + lambda max_i Q_c,i) / (1 + lambda)``. The division
      by ``1 + lambda`` (SPEC.md 2.3, as OmniSafe) keeps the gradient scale bounded when lambda
      grows, so the actor's Adam step size keeps its meaning; ``normalize_actor_loss=False`` drops it.
    * **Multiplier** -- updated at the start of each ``train()`` call in which at least one episode
      has finished since the previous update, from ``J_c`` = the mean summed cost of those newly
      finished episodes (one "epoch" = the episodes finished since the last update, as OmniSafe
      updates once per epoch on the epoch's mean episode cost). Updating per gradient step on the
      same ``J_c`` would apply one measurement many times; per episode gives one dual step per new
      cost measurement. Why a step size ``lr=0.035`` (``lagrangian_kwargs["lr"]``, applied when the
      user gives none) and not OmniSafe's SACLag 1e-5: with Adam each update moves lambda by about
      ``lr`` whatever the size of ``J_c - d``; 1e-5 fits an update every gradient step over millions
      of steps, and with one update per episode would need ~1e5 episodes to move lambda by 1.
      0.035 (OmniSafe's per-epoch PPOLag rate) moves lambda by ~1 in ~30 episodes, i.e. within a
      few thousand steps on a short-episode task. The PID rule (``lagrangian_update="pid"``) uses
      the gains ``kp``, ``ki``, ``kd`` of ``lagrangian_kwargs`` instead.

      ``multiplier_signal="cost_value"`` is the other common choice (the SAC-Lagrangian of OpenAI's
      safety-starter-agents): one multiplier step per ``train()`` call, on the cost critic's estimate
      instead of measured episodes. ``J_c`` is then the batch mean of ``max_i Q_c,i(s, pi(s))`` over
      that call's gradient steps, scaled to an episode cost by ``T (1 - cost_gamma) / (1 - cost_gamma^T)``
      (``T`` = ``max_episode_steps``), i.e. compared with the per-state budget
      ``d (1 - cost_gamma^T) / (T (1 - cost_gamma))`` of safety-starter-agents, which treats the episode's
      cost as spread evenly over its steps. Many more, smoother updates (one per env step with
      ``train_freq=1``) at the price of that approximation and of the critic's bias: the pessimistic
      (max) cost target and the replayed (off-policy) states bias the estimate upward, so this signal
      is conservative -- lambda can keep rising after the measured episode cost is within the limit
      (``docs/lagrangian.md``). Its step size is per ``train()`` call: give a small ``lr``.
    * **Replay buffer** -- :class:`~sb3_safe.common.replay_buffers.CostReplayBuffer` (or its dict
      variant), which stores ``info["cost"]`` per transition; an env without a valid cost raises
      :class:`~sb3_safe.common.cost.CostSignalError` naming the env.
    * **Logging** -- ``train/lagrange_multiplier``, ``train/ep_cost_estimate`` (the ``J_c`` of the last
      update), ``train/cost_value_loss``, ``train/cost_q_mean``, plus
      :class:`~sb3_safe.common.safety_stats.SafetyStats`' ``rollout/ep_cost_mean``,
      ``safety/violations_total`` and ``safety/cost_rate``.

    ``save``/``load`` keep the reward and cost critics (part of the policy), their optimiser, the multiplier
    (value and optimiser/PID state) and the safety statistics.
    Limitations: n-step returns (``n_steps > 1``) are not supported (the cost buffer stores 1-step
    costs); discrete actions are not supported (SAC).

    :param policy: the policy model to use (``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"``
        or a :class:`~sb3_safe.sac_lag.policies.SACLagPolicy` subclass)
    :param env: the environment to learn from (a registered id or an env); must put ``info["cost"]``
        in every step's info
    :param learning_rate: learning rate of the actor, reward critic and cost critic (Adam); may be a schedule
    :param buffer_size: size of the replay buffer
    :param learning_starts: how many steps to collect (uniform random actions) before learning starts
    :param batch_size: minibatch size of each gradient update
    :param tau: Polyak coefficient of both target networks
    :param gamma: discount factor of the reward
    :param train_freq: update the model every ``train_freq`` steps (int or ``(n, "step"|"episode")``)
    :param gradient_steps: gradient steps after each rollout (-1: as many as env steps collected)
    :param action_noise: optional action noise (SB3 ``ActionNoise``)
    :param replay_buffer_class: a :class:`CostReplayBuffer` / :class:`CostDictReplayBuffer` (sub)class;
        None picks the right one for the observation space
    :param replay_buffer_kwargs: keyword arguments of the replay buffer
    :param optimize_memory_usage: SB3's memory-efficient replay buffer variant
    :param n_steps: must be 1 (n-step returns are not supported by SACLag)
    :param ent_coef: entropy coefficient, or ``"auto"``/``"auto_<init>"`` to learn it
    :param target_update_interval: update the target networks every this many gradient steps
    :param target_entropy: target entropy when learning ``ent_coef`` (``"auto"``: -dim(A))
    :param cost_limit: the per-episode cost budget ``d`` (>= 0)
    :param cost_gamma: discount factor of the cost critic (None: ``gamma``)
    :param lagrangian_update: ``"plain"`` (dual ascent) or ``"pid"`` (PID Lagrangian), as PPOLag's
    :param lagrangian_kwargs: other arguments of :class:`~sb3_safe.common.lagrange.LagrangeMultiplier`,
        as PPOLag's: ``initial_value`` (lambda_0, 0.001 as OmniSafe), ``lr`` (step size of the plain rule;
        SACLag's default :attr:`DEFAULT_LAGRANGIAN_LR` = 0.035 is filled in when the dict has no ``lr``,
        see above), ``optimizer`` (``"adam"`` as OmniSafe, or ``"sgd"`` for textbook projected dual
        ascent), ``kp`` (0.1), ``ki`` (0.01), ``kd`` (0.01), ``d_delay`` (10: multiplier updates spanned by
        the PID derivative), ``ema_alpha`` (0.95), ``lambda_max`` (100: upper clip of lambda)
    :param multiplier_signal: what the multiplier steps on: ``"episode_cost"`` (once per batch of newly finished
        episodes, on their mean summed cost) or ``"cost_value"`` (once per ``train()`` call, on the cost critic's
        estimate scaled to an episode cost; see above)
    :param max_episode_steps: the episode length ``T`` of ``multiplier_signal="cost_value"`` (None: the env's
        ``spec.max_episode_steps``); unused otherwise
    :param normalize_actor_loss: divide the actor loss by ``1 + lambda``
    :param use_sde: use generalised State-Dependent Exploration
    :param sde_sample_freq: sample a new gSDE noise matrix every n steps (-1: once per rollout)
    :param use_sde_at_warmup: use gSDE instead of uniform sampling during warm-up
    :param stats_window_size: number of episodes averaged for the rollout statistics (return and cost)
    :param tensorboard_log: tensorboard log folder (None: no tensorboard)
    :param policy_kwargs: keyword arguments of the policy
    :param verbose: 0 none, 1 info, 2 debug
    :param seed: seed of the pseudo-random generators
    :param device: PyTorch device (``"auto"``, ``"cpu"``, ``"cuda"``...)
    :param _init_setup_model: whether to build the networks at creation
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    # The plain rule's step size used when lagrangian_kwargs has no "lr" (see the class docstring).
    DEFAULT_LAGRANGIAN_LR: ClassVar[float] = 0.035
    policy: SACLagPolicy
    critic: RewardCostCritic
    critic_target: RewardCostCritic
    lagrange_multiplier: LagrangeMultiplier

    def __init__(
        self,
        policy: str | type[SACLagPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        ent_coef: str | float = "auto",
        target_update_interval: int = 1,
        target_entropy: str | float = "auto",
        cost_limit: float = 25.0,
        cost_gamma: float | None = None,
        lagrangian_update: UpdateRule = "plain",
        lagrangian_kwargs: dict[str, Any] | None = None,
        multiplier_signal: MultiplierSignal = "episode_cost",
        max_episode_steps: int | None = None,
        normalize_actor_loss: bool = True,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        use_sde_at_warmup: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        self._check_safety_arguments(cost_limit, cost_gamma, n_steps, replay_buffer_class, multiplier_signal)
        with sac_action_space_checked(self, "SACLag"):
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
                n_steps=n_steps,
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
        self.cost_limit = validate_cost_limit(cost_limit)
        self.cost_gamma = float(gamma if cost_gamma is None else cost_gamma)
        self.normalize_actor_loss = normalize_actor_loss
        self.lagrangian_update = lagrangian_update
        # SACLag's own default step size (see the class docstring), unless the user chose one.
        self.lagrangian_kwargs = {"lr": self.DEFAULT_LAGRANGIAN_LR, **(lagrangian_kwargs or {})}
        self.lagrange_multiplier = make_lagrange_multiplier(self.cost_limit, lagrangian_update, self.lagrangian_kwargs)
        self.multiplier_signal = multiplier_signal
        self.max_episode_steps = max_episode_steps
        self.safety_stats: SafetyStats | None = None
        # Summed costs of the episodes finished since the last multiplier update.
        self._unused_episode_costs: list[float] = []
        self.ep_cost_estimate = float("nan")
        if _init_setup_model:
            self._setup_model()

    @staticmethod
    def _check_safety_arguments(
        cost_limit: float,
        cost_gamma: float | None,
        n_steps: int,
        replay_buffer_class: type[ReplayBuffer] | None,
        multiplier_signal: str,
    ) -> None:
        validate_cost_limit(cost_limit)
        if multiplier_signal not in ("episode_cost", "cost_value"):
            raise ValueError(f"SACLag: multiplier_signal must be 'episode_cost' or 'cost_value', got {multiplier_signal!r}")
        if cost_gamma is not None and not 0.0 <= cost_gamma <= 1.0:
            raise ValueError(f"SACLag: cost_gamma must be in [0, 1], got {cost_gamma}")
        if n_steps != 1:
            raise ValueError(f"SACLag does not support n-step returns (n_steps={n_steps}); use n_steps=1")
        if replay_buffer_class is not None and not issubclass(replay_buffer_class, (CostReplayBuffer, CostDictReplayBuffer)):
            raise ValueError(
                f"SACLag needs a replay buffer that stores costs (CostReplayBuffer or CostDictReplayBuffer "
                f"from sb3_safe.common.replay_buffers), got {replay_buffer_class.__name__}"
            )

    def _setup_model(self) -> None:
        if self.replay_buffer_class is None:
            dict_obs = isinstance(self.observation_space, spaces.Dict)
            self.replay_buffer_class = CostDictReplayBuffer if dict_obs else CostReplayBuffer
        # No env only when loading without one; the saved buffer kwargs and statistics already name it then.
        env_id = "env" if self.env is None else env_name(self.env)
        self.replay_buffer_kwargs.setdefault("env_id", env_id)
        super()._setup_model()
        self.lagrangian_kwargs = {"lr": self.DEFAULT_LAGRANGIAN_LR, **(self.lagrangian_kwargs or {})}
        self.lagrange_multiplier = multiplier_for_settings(
            self.lagrange_multiplier, self.cost_limit, self.lagrangian_update, self.lagrangian_kwargs
        )
        if not isinstance(self.policy, SACLagPolicy):
            raise TypeError(f"SACLag needs a SACLagPolicy (with a cost critic), got {type(self.policy).__name__}")
        if self.multiplier_signal == "cost_value" and self.max_episode_steps is None:
            self.max_episode_steps = self._env_max_episode_steps(env_id)

    def _env_max_episode_steps(self, env_id: str) -> int:
        """The episode length T of the env's spec, needed to turn a cost value into an episode cost."""
        specs = [] if self.env is None else self.env.get_attr("spec")
        steps = getattr(specs[0], "max_episode_steps", None) if specs else None
        if steps is None:
            raise ValueError(
                f"SACLag with multiplier_signal='cost_value' needs the episode length T to compare the cost "
                f"critic with cost_limit, but {env_id} has no spec.max_episode_steps: pass max_episode_steps"
            )
        return int(steps)

    @property
    def _episode_cost_per_cost_value(self) -> float:
        """``T (1 - cost_gamma) / (1 - cost_gamma^T)``: a state's discounted cost-to-go -> an episode cost."""
        assert self.max_episode_steps is not None
        if self.cost_gamma == 1.0:
            return 1.0
        return self.max_episode_steps * (1.0 - self.cost_gamma) / (1.0 - self.cost_gamma**self.max_episode_steps)

    @property
    def lagrange_value(self) -> float:
        """The current Lagrange multiplier lambda (the same property as PPOLag's)."""
        return self.lagrange_multiplier.value

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        # Read (and validate) the costs before anything is stored: a missing cost raises CostSignalError.
        assert self.safety_stats is not None
        self.safety_stats.update(infos, dones)
        if self.multiplier_signal == "episode_cost":  # the only reader, which also empties the list
            self._unused_episode_costs.extend(self.safety_stats.finished_costs)
        # The parent handles terminal observations and VecNormalize; the cost buffer reads info["cost"] in add().
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    def _update_lagrange_multiplier_from_episodes(self) -> None:
        """One multiplier step on the mean cost of the episodes finished since the last step (if any)."""
        if not self._unused_episode_costs:
            return
        self.ep_cost_estimate = float(np.mean(self._unused_episode_costs))
        self._unused_episode_costs = []
        self.lagrange_multiplier.update(self.ep_cost_estimate, self.cost_limit)

    def _update_lagrange_multiplier_from_cost_value(self, cost_q_mean: float) -> None:
        """One multiplier step on the cost critic's ``max_i Q_c,i(s, pi(s))`` batch mean, as an episode cost."""
        self.ep_cost_estimate = cost_q_mean * self._episode_cost_per_cost_value
        self.lagrange_multiplier.update(self.ep_cost_estimate, self.cost_limit)

    def dump_logs(self) -> None:
        assert self.safety_stats is not None
        self.safety_stats.record(self.logger)
        super().dump_logs()

    def _critic_targets(self, replay_data: CostReplayBufferSamples, ent_coef: th.Tensor, discounts: th.Tensor | float) -> th.Tensor:
        """TD targets of every critic member, from one forward pass of the target critic.

        :param replay_data: the sampled transitions (with their costs)
        :param ent_coef: the entropy coefficient alpha
        :param discounts: the reward discount (per sample or a float)
        :return: shape ``(2 * n_critics, batch, 1)``: SAC's soft target ``r + gamma (1 - done) (min_i Q_r,i' - alpha
            log pi)`` for the reward members, ``c + cost_gamma (1 - done) max_i Q_c,i'`` for the cost members
        """
        n_critics = self.critic.n_critics
        with th.no_grad():
            next_actions, next_log_prob = self.actor.action_log_prob(replay_data.next_observations)
            next_q_all = self.critic_target.all_q_values(replay_data.next_observations, next_actions)
            next_q_values = next_q_all[:n_critics].min(dim=0).values - ent_coef * next_log_prob.reshape(-1, 1)
            target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values
            # Pessimistic cost target: the max over the twin target cost critics, no entropy term.
            next_cost_q = next_q_all[n_critics:].max(dim=0).values
            target_cost_q = replay_data.costs + (1 - replay_data.dones) * self.cost_gamma * next_cost_q
            return th.cat([target_q_values.expand(n_critics, -1, -1), target_cost_q.expand(n_critics, -1, -1)])

    def _critic_losses(self, replay_data: CostReplayBufferSamples, targets: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """SAC's critic loss and the cost critic's: per group, 0.5 * the sum over its members of the MSE to the target.

        :param replay_data: the sampled transitions
        :param targets: the members' targets (:meth:`_critic_targets`)
        :return: ``(reward critic loss, cost critic loss)``
        """
        n_critics = self.critic.n_critics
        member_mse = (self.critic.all_q_values(replay_data.observations, replay_data.actions) - targets).square().mean(dim=(1, 2))
        return 0.5 * member_mse[:n_critics].sum(), 0.5 * member_mse[n_critics:].sum()

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        # SAC.train() has no hook between its critic and actor updates, so it is re-written here with
        # the same structure and order (entropy coefficient, critics, actor, targets); the additions are
        # the cost critic targets and loss, the lambda term of the actor loss and the multiplier update.
        if self.multiplier_signal == "episode_cost":
            self._update_lagrange_multiplier_from_episodes()
        lambda_value = self.lagrange_multiplier.value
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers += [self.ent_coef_optimizer]
        self._update_learning_rate(optimizers)
        n_critics = self.critic.n_critics

        ent_coef_losses, ent_coefs = [], []
        actor_losses, critic_losses, cost_critic_losses, cost_q_means = [], [], [], []

        for gradient_step in range(gradient_steps):
            replay_data: CostReplayBufferSamples = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr,assignment]
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma

            if self.use_sde:
                self.actor.reset_noise()

            actions_pi, log_prob = self.actor.action_log_prob(replay_data.observations)
            log_prob = log_prob.reshape(-1, 1)

            ent_coef_loss = None
            if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
                # Detached so that only the entropy loss changes log_ent_coef (see SB3's SAC).
                ent_coef = th.exp(self.log_ent_coef.detach())
                assert isinstance(self.target_entropy, float)
                ent_coef_loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach()).mean()
                ent_coef_losses.append(ent_coef_loss.item())
            else:
                ent_coef = self.ent_coef_tensor
            ent_coefs.append(ent_coef.item())

            if ent_coef_loss is not None and self.ent_coef_optimizer is not None:
                self.ent_coef_optimizer.zero_grad()
                ent_coef_loss.backward()
                self.ent_coef_optimizer.step()

            targets = self._critic_targets(replay_data, ent_coef, discounts)
            critic_loss, cost_critic_loss = self._critic_losses(replay_data, targets)
            critic_losses.append(critic_loss.item())
            cost_critic_losses.append(cost_critic_loss.item())
            self.critic.optimizer.zero_grad()
            (critic_loss + cost_critic_loss).backward()
            self.critic.optimizer.step()

            # The actor loss needs no gradient w.r.t. the Q-network weights (SAC computes and discards it).
            self.critic.q_networks.requires_grad_(False)
            try:
                q_values_pi = self.critic.all_q_values(replay_data.observations, actions_pi)
            finally:
                self.critic.q_networks.requires_grad_(True)
            min_qf_pi = q_values_pi[:n_critics].min(dim=0).values
            max_cost_q_pi = q_values_pi[n_critics:].max(dim=0).values
            cost_q_means.append(max_cost_q_pi.mean().item())
            actor_loss = (ent_coef * log_prob - min_qf_pi + lambda_value * max_cost_q_pi).mean()
            if self.normalize_actor_loss:
                actor_loss = actor_loss / (1.0 + lambda_value)
            actor_losses.append(actor_loss.item())
            self.actor.optimizer.zero_grad()
            actor_loss.backward()
            self.actor.optimizer.step()

            if gradient_step % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

        self._n_updates += gradient_steps
        if self.multiplier_signal == "cost_value" and cost_q_means:
            self._update_lagrange_multiplier_from_cost_value(float(np.mean(cost_q_means)))

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/ent_coef", np.mean(ent_coefs))
        self.logger.record("train/actor_loss", np.mean(actor_losses))
        self.logger.record("train/critic_loss", np.mean(critic_losses))
        self.logger.record("train/cost_value_loss", np.mean(cost_critic_losses))
        self.logger.record("train/cost_q_mean", np.mean(cost_q_means))
        self.logger.record("train/lagrange_multiplier", lambda_value)
        if np.isfinite(self.ep_cost_estimate):
            self.logger.record("train/ep_cost_estimate", self.ep_cost_estimate)
        if len(ent_coef_losses) > 0:
            self.logger.record("train/ent_coef_loss", np.mean(ent_coef_losses))

    def learn(
        self: SelfSACLag,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "SACLag",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfSACLag:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
