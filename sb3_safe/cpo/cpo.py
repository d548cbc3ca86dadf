"""Constrained Policy Optimization (CPO) on sb3-contrib TRPO's machinery (SPEC.md 2.3)."""

from __future__ import annotations

import copy
import math
from enum import IntEnum
from functools import partial
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib import TRPO
from sb3_contrib.common.utils import conjugate_gradient_solver, flat_grad
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.distributions import kl_divergence
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import explained_variance
from torch import nn

from sb3_safe.common.on_policy_lagrangian import CostOnPolicyMixin, normalise_advantages
from sb3_safe.ppo_lag.policies import CnnPolicy, CostActorCriticPolicy, MlpPolicy, MultiInputPolicy

SelfCPO = TypeVar("SelfCPO", bound="CPO")

_EPS = 1e-8


class CPOCase(IntEnum):
    """Which CPO update was taken (logged as ``train/cpo_case``); the numbering of Achiam's reference code."""

    INFEASIBLE = 0
    """c >= 0 and the trust region misses the feasible set: pure cost descent ``-sqrt(2 delta / s) w``."""
    BOUNDARY_INFEASIBLE = 1
    """c >= 0 but part of the trust region is feasible: dual solution."""
    BOUNDARY_FEASIBLE = 2
    """c < 0 and the constraint boundary cuts the trust region: dual solution."""
    TRUST_REGION_FEASIBLE = 3
    """c < 0 and the whole trust region is feasible: plain TRPO step."""
    NO_COST_GRADIENT = 4
    """b ~ 0 and c < 0 (or no episode cost estimate yet): plain TRPO step. (b ~ 0 with c > 0 has no cost-lowering
    direction and lands in INFEASIBLE with a step of about zero, as in Achiam's reference code; c = 0 lands in
    BOUNDARY_INFEASIBLE with a plain TRPO step.)"""


class CPOStep(NamedTuple):
    """The outcome of the CPO sub-problem: the parameter step and the dual variables."""

    direction: th.Tensor
    case: CPOCase
    lam: float
    nu: float


def solve_cpo_subproblem(
    g: th.Tensor,
    b: th.Tensor,
    v: th.Tensor,
    w: th.Tensor,
    c: float,
    target_kl: float,
    hessian_vector_product: Callable[[th.Tensor], th.Tensor] | None = None,
) -> CPOStep:
    """Solve ``max_x g^T x`` s.t. ``c + b^T x <= 0`` and ``x^T H x / 2 <= delta`` through its dual (Achiam et al. 2017).

    :param g: gradient of the reward surrogate
    :param b: gradient of the cost surrogate
    :param v: ``H^-1 g`` (conjugate gradient)
    :param w: ``H^-1 b`` (conjugate gradient)
    :param c: constraint value ``J_c - d`` (negative when feasible)
    :param target_kl: the trust-region size delta
    :param hessian_vector_product: ``x -> H x``. Given, ``q = v^T H v``, ``r = w^T H v``, ``s = w^T H w``, as in
        Achiam's reference code: with an inexact conjugate-gradient solve, ``g^T v``, ``g^T w`` and ``b^T w``
        are not inner products of one pair of vectors, and ``A = q - r^2 / s`` can turn negative (a step of
        unbounded size); the H-inner products of (v, w) keep ``A >= 0``. None: ``g^T v``, ``g^T w``, ``b^T w``
        (the same numbers when v and w are exact)
    :return: the step (to add to the actor parameters), the case and the dual variables (lambda, nu)
    """
    delta = target_kl
    if hessian_vector_product is None:
        q, r, s = float(th.dot(g, v)), float(th.dot(g, w)), float(th.dot(b, w))
    else:
        hv, hw = hessian_vector_product(v), hessian_vector_product(w)
        q, r, s = float(th.dot(v, hv)), float(th.dot(w, hv)), float(th.dot(w, hw))
    if float(th.dot(b, b)) <= _EPS and c < 0:
        case = CPOCase.NO_COST_GRADIENT
        # A and B are meaningless without a cost gradient; the plain TRPO step follows.
        A, B = 0.0, 0.0
    else:
        A = q - r**2 / (s + _EPS)
        B = 2 * delta - c**2 / (s + _EPS)
        if c < 0 and B < 0:
            case = CPOCase.TRUST_REGION_FEASIBLE
        elif c < 0 <= B:
            case = CPOCase.BOUNDARY_FEASIBLE
        elif c >= 0 and B >= 0:
            case = CPOCase.BOUNDARY_INFEASIBLE
        else:
            case = CPOCase.INFEASIBLE

    if case in (CPOCase.TRUST_REGION_FEASIBLE, CPOCase.NO_COST_GRADIENT):
        lam, nu = math.sqrt(max(q, 0.0) / (2 * delta)), 0.0
    elif case == CPOCase.INFEASIBLE:
        lam, nu = 0.0, math.sqrt(2 * delta / (s + _EPS))
    else:
        lam = _dual_lambda(q, r, s, c, A, B, delta)
        nu = max(0.0, lam * c + r) / (s + _EPS)

    if case == CPOCase.INFEASIBLE:
        direction = -nu * w
    else:
        direction = (v - nu * w) / (lam + _EPS)
    return CPOStep(direction, case, lam, nu)


def _dual_lambda(q: float, r: float, s: float, c: float, A: float, B: float, delta: float) -> float:
    """The optimal lambda of CPO's dual when the constraint boundary cuts the trust region.

    With g the gradient of the objective to *maximise*, the step ``x = H^-1 (g - nu b) / lambda`` and the dual
    ``min_{lambda, nu >= 0} (q - 2 nu r + nu^2 s) / (2 lambda) - nu c + lambda delta`` give
    ``nu* = max(0, (lambda c + r) / s)``. (Achiam's reference code writes ``lambda c - r`` because its g is the
    gradient of the loss, i.e. its r has the opposite sign.) Eliminating nu leaves two one-dimensional
    candidates, one on each side of ``lambda = -r / c`` (where nu* becomes positive); each is its
    unconstrained optimum projected on its interval, and the one with the better dual value wins.
    """
    # c = 0 is treated as 0+ (the boundary just reached): the sign of -r / c is then that of -r.
    ratio = -r / c if c != 0 else -math.copysign(math.inf, r)
    interval_a, interval_b = (0.0, ratio), (ratio, math.inf)
    if c >= 0:
        interval_a, interval_b = interval_b, interval_a

    def project(x: float, interval: tuple[float, float]) -> float:
        return max(interval[0], min(interval[1], x))

    lam_a = project(math.sqrt(max(A, 0.0) / (B + _EPS)), interval_a)
    lam_b = project(math.sqrt(max(q, 0.0) / (2 * delta)), interval_b)

    def dual_a(lam: float) -> float:
        return -0.5 * (A / (lam + _EPS) + B * lam) + r * c / (s + _EPS)

    def dual_b(lam: float) -> float:
        return -0.5 * (q / (lam + _EPS) + 2 * delta * lam)

    return lam_a if dual_a(lam_a) >= dual_b(lam_b) else lam_b


class CPO(CostOnPolicyMixin, TRPO):
    """Constrained Policy Optimization: a trust-region step that keeps the linearised cost under the budget.

    Paper: Achiam, Held, Tamar and Abbeel, *Constrained Policy Optimization* (ICML 2017).

    Built on sb3-contrib's TRPO (its ``_compute_actor_grad``, ``hessian_vector_product`` (Fisher-vector product
    with ``cg_damping``) and ``conjugate_gradient_solver``). Per rollout:

    1. g, b = gradients of the reward surrogate ``mean(ratio A_r)`` and of the cost surrogate
       ``L mean(ratio A_c)`` (A_r standardised, A_c only centred, so that b stays in cost units like c below; see
       :func:`~sb3_safe.common.on_policy_lagrangian.normalise_advantages`). L is the mean episode length of the
       episodes behind J_c (``rescale_cost_surrogate``), so that ``b^T x`` estimates the change of the episode
       cost, the units of c: Achiam's reference code divides c by that length instead, which gives the same
       step. Without it (``rescale_cost_surrogate=False``, L = 1, OmniSafe's choice) ``b^T x`` is a change of
       the per-step cost, and the constraint boundary only cuts the trust region when ``|c|`` is about
       ``sqrt(2 delta s)``, a few hundredths of a cost unit per episode, so the step is nearly always
       either plain TRPO or pure cost descent;
    2. v = H^-1 g and w = H^-1 b by conjugate gradient (``cg_max_steps`` iterations); q = v^T H v, r = w^T H v,
       s = w^T H w (Hessian-vector products, as in Achiam's code); c = J_c - d, with J_c the rollout's
       episode-cost estimate (see :class:`~sb3_safe.common.on_policy_lagrangian.CostOnPolicyMixin`; before any
       episode has ended the step is plain TRPO);
    3. the step of :func:`solve_cpo_subproblem` (:class:`CPOCase`: plain TRPO when the trust region is feasible,
       the dual solution when the constraint boundary cuts it, pure cost descent ``-sqrt(2 delta / s) w`` when
       infeasible);
    4. backtracking line search (``line_search_shrinking_factor``, up to ``line_search_max_iter`` tries) that
       accepts the first step with KL <= delta (``target_kl``) whose cost surrogate rises by at most
       ``max(0, -c)``; when none passes the parameters are restored;
    5. the value and cost value functions are regressed as in TRPO (``n_critic_updates`` passes, actor frozen).

    :param policy: the policy model (``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a subclass of
        :class:`~sb3_safe.ppo_lag.policies.CostActorCriticPolicy`)
    :param env: the environment to learn from (if registered in Gym, can be str); its step infos must carry
        ``info["cost"]``
    :param learning_rate: the learning rate of the value and cost value functions, it can be a function of the
        current progress remaining (from 1 to 0)
    :param n_steps: the number of steps to run for each environment per update
    :param batch_size: minibatch size of the value and cost value regressions
    :param gamma: discount factor
    :param cg_max_steps: conjugate-gradient iterations (15)
    :param cg_damping: damping of the Fisher-vector product (0.1)
    :param line_search_shrinking_factor: step-size reduction factor of the backtracking line search (0.8)
    :param line_search_max_iter: maximum number of line-search steps (15)
    :param n_critic_updates: number of value (and cost value) passes per policy update
    :param gae_lambda: GAE lambda of the rewards
    :param use_sde: whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: sample a new noise matrix every n steps when using gSDE
    :param rollout_buffer_class: rollout buffer class (``None``: :class:`~sb3_safe.common.buffers.CostRolloutBuffer`
        or its Dict twin); must store costs
    :param rollout_buffer_kwargs: keyword arguments to pass to the rollout buffer on creation
    :param normalize_advantage: whether to standardise the reward advantage
    :param target_kl: the trust-region size delta (0.01)
    :param sub_sampling_factor: sub-sample the batch for the policy step (TRPO's option)
    :param cost_limit: the per-episode cost budget d (>= 0; default 25.0, OmniSafe's)
    :param cost_gamma: discount factor of the costs (``None``: same as ``gamma``)
    :param cost_gae_lambda: GAE lambda of the costs (``None``: same as ``gae_lambda``)
    :param normalize_cost_advantage: whether to centre the cost advantage (subtract its mean)
    :param rescale_cost_surrogate: multiply the cost surrogate by the mean episode length, so that its change is
        in the per-episode units of ``c = J_c - d`` (see step 1 above)
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
        line_search_max_iter: int = 15,
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
        rescale_cost_surrogate: bool = True,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if target_kl <= 0:
            raise ValueError(f"target_kl (the trust-region size delta) must be > 0, got {target_kl}")
        self._init_cost_settings(cost_limit, gamma, gae_lambda, cost_gamma, cost_gae_lambda, normalize_cost_advantage)
        self.rescale_cost_surrogate = rescale_cost_surrogate
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

    def _cost_surrogate_scale(self) -> float:
        """L of the cost surrogate ``L mean(ratio A_c)``: the mean episode length behind J_c, or 1."""
        if self.rescale_cost_surrogate and self.ep_length_estimate is not None:
            return self.ep_length_estimate
        return 1.0

    def _constraint_value(self) -> float | None:
        """c = J_c - d, or None before any episode has ended."""
        if self.ep_cost_estimate is None:
            return None
        return self.ep_cost_estimate - self.cost_limit

    def _set_actor_params(
        self, actor_params: list[nn.Parameter], originals: list[th.Tensor], step: th.Tensor, coef: float
    ) -> None:
        start = 0
        for param, original in zip(actor_params, originals, strict=True):
            n_params = param.numel()
            param.data = original + coef * step[start : start + n_params].view(param.shape)
            start += n_params

    def train(self) -> None:
        """One CPO policy step, then the value and cost value regressions.

        sb3-contrib's TRPO ``train()`` builds one search direction from one objective; CPO needs two gradients,
        the constrained sub-problem and a different acceptance test, so this follows TRPO's ``train()``
        structure and reuses its helpers (``_compute_actor_grad``, ``hessian_vector_product``, the CG solver).
        """
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        c = self._constraint_value()

        # The policy step uses the whole rollout at once, as TRPO does.
        rollout_data = next(self.rollout_buffer.get(batch_size=None))
        observations = rollout_data.observations
        actions = rollout_data.actions
        old_log_prob = rollout_data.old_log_prob
        advantages, cost_advantages = normalise_advantages(
            rollout_data.advantages,
            rollout_data.cost_advantages,
            self.normalize_advantage,
            self.normalize_cost_advantage,
            rescale_cost=False,
        )
        if self.sub_sampling_factor > 1:
            k = self.sub_sampling_factor
            observations = observations[::k] if not isinstance(observations, dict) else {
                key: obs[::k] for key, obs in observations.items()
            }
            actions, old_log_prob = actions[::k], old_log_prob[::k]
            advantages, cost_advantages = advantages[::k], cost_advantages[::k]
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()

        with th.no_grad():
            old_distribution = copy.copy(self.policy.get_distribution(observations))
        distribution = self.policy.get_distribution(observations)
        ratio = th.exp(distribution.log_prob(actions) - old_log_prob)
        cost_advantages = cost_advantages * self._cost_surrogate_scale()
        reward_objective = (advantages * ratio).mean()
        cost_objective = (cost_advantages * ratio).mean()
        kl_div = kl_divergence(distribution, old_distribution).mean()

        self.policy.optimizer.zero_grad()
        actor_params, g, grad_kl, _ = self._compute_actor_grad(kl_div, reward_objective)
        b = flat_grad(cost_objective, actor_params, retain_graph=True)
        hessian_vector_product_fn = partial(self.hessian_vector_product, actor_params, grad_kl)
        v = conjugate_gradient_solver(hessian_vector_product_fn, g, max_iter=self.cg_max_steps)
        if c is None:
            # No episode cost yet: the constraint is unknown, take TRPO's step.
            step = solve_cpo_subproblem(g, th.zeros_like(b), v, th.zeros_like(b), -1.0, self.target_kl)
        else:
            w = conjugate_gradient_solver(hessian_vector_product_fn, b, max_iter=self.cg_max_steps)
            step = solve_cpo_subproblem(g, b, v, w, c, self.target_kl, hessian_vector_product_fn)

        allowed_cost_increase = max(0.0, -c) if c is not None else math.inf
        original_params = [param.detach().clone() for param in actor_params]
        accepted = False
        new_reward_objective, new_cost_objective, new_kl = reward_objective, cost_objective, th.zeros(())
        with th.no_grad():
            coef = 1.0
            for _ in range(self.line_search_max_iter):
                self._set_actor_params(actor_params, original_params, step.direction, coef)
                distribution = self.policy.get_distribution(observations)
                ratio = th.exp(distribution.log_prob(actions) - old_log_prob)
                new_reward_objective = (advantages * ratio).mean()
                new_cost_objective = (cost_advantages * ratio).mean()
                new_kl = kl_divergence(distribution, old_distribution).mean()
                if new_kl <= self.target_kl and new_cost_objective - cost_objective <= allowed_cost_increase:
                    accepted = True
                    break
                coef *= self.line_search_shrinking_factor
            if not accepted:
                self._set_actor_params(actor_params, original_params, step.direction, 0.0)

        value_losses, cost_value_losses = self._fit_critics(actor_params)
        self._n_updates += 1

        buffer = self.rollout_buffer
        self._record_cost_estimate()
        self.logger.record("train/cpo_case", int(step.case))
        self.logger.record("train/cpo_lambda", step.lam)
        self.logger.record("train/cpo_nu", step.nu)
        self.logger.record("train/policy_objective", (new_reward_objective if accepted else reward_objective).item())
        self.logger.record("train/cost_objective", (new_cost_objective if accepted else cost_objective).item())
        self.logger.record("train/kl_divergence_loss", new_kl.item() if accepted else 0.0)
        self.logger.record("train/is_line_search_success", float(accepted))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/cost_value_loss", np.mean(cost_value_losses))
        explained_var = explained_variance(buffer.values.flatten(), buffer.returns.flatten())
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record(
            "train/cost_explained_variance",
            explained_variance(buffer.cost_values.flatten(), buffer.cost_returns.flatten()),  # type: ignore[attr-defined]
        )
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def learn(
        self: SelfCPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "CPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfCPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
