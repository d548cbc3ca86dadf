"""A cost-aware Optuna trial evaluation for ``python -m rl_zoo3.train -optimize``."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import optuna
from rl_zoo3.callbacks import TrialEvalCallback
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.vec_env import VecEnv

from sb3_safe.common.cost import env_name, read_cost

PENALTY_VARIABLE = "SB3_SAFE_ZOO_COST_PENALTY"


def cost_penalty_coefficient() -> float:
    """The coefficient ``k`` of the cost penalty, from ``SB3_SAFE_ZOO_COST_PENALTY`` (default 1).

    :raises ValueError: if the variable is not a finite number >= 0
    """
    raw = os.environ.get(PENALTY_VARIABLE, "1")
    try:
        coefficient = float(raw)
    except ValueError as exc:
        raise ValueError(f"{PENALTY_VARIABLE} must be a number >= 0, got {raw!r}") from exc
    if not math.isfinite(coefficient) or coefficient < 0:
        raise ValueError(f"{PENALTY_VARIABLE} must be a finite number >= 0, got {raw!r}")
    return coefficient


def cost_aware_objective(mean_reward: float, mean_cost: float, cost_limit: float, coefficient: float) -> float:
    """The value a trial reports to Optuna: the return, penalised when the cost limit is exceeded.

    ``objective = R - k (|R| + 1) max(0, J_c - d) / max(d, 1e-8)``. The penalty is relative:
    exceeding the limit by 100% (``J_c = 2d``) costs ``k`` times the return's own magnitude
    (plus one), so one coefficient works for envs whose returns differ by orders of
    magnitude, and, with ``k = 1``, a trial that doubles the limit ranks below every
    feasible trial of non-negative return. A feasible trial (``J_c <= d``) reports its
    return unchanged. ``k = 0`` gives the zoo's plain objective.

    :param mean_reward: mean evaluation return R
    :param mean_cost: mean evaluation episode cost J_c
    :param cost_limit: the algorithm's cost limit d
    :param coefficient: the penalty coefficient k >= 0
    """
    relative_excess = max(0.0, mean_cost - cost_limit) / max(cost_limit, 1e-8)
    return mean_reward - coefficient * (abs(mean_reward) + 1.0) * relative_excess


class CostAwareTrialEvalCallback(TrialEvalCallback):
    """rl_zoo3's Optuna trial evaluation, made cost-aware for constrained algorithms.

    For a model with a ``cost_limit`` attribute (PPOLag, TRPOLag, SACLag, CPO) each
    evaluation also sums ``info["cost"]`` per episode (through the cost protocol, so a
    missing cost is an error) and reports :func:`cost_aware_objective` to the trial
    instead of the mean return; the mean cost is logged as ``eval/mean_cost`` and both
    numbers are stored as trial user attributes (``mean_cost_<i>``, ``mean_reward_<i>``).
    For any other model it is exactly rl_zoo3's ``TrialEvalCallback``. Pruning uses the
    reported value; the "best model" saved by ``EvalCallback`` still follows the plain return.

    :param eval_env: the evaluation env
    :param trial: the Optuna trial
    :param n_eval_episodes: episodes per evaluation
    :param eval_freq: evaluate every ``eval_freq`` calls
    :param deterministic: deterministic actions during evaluation
    :param verbose: verbosity
    :param best_model_save_path: where ``EvalCallback`` saves the best model
    :param log_path: where ``EvalCallback`` writes ``evaluations.npz``
    """

    def __init__(
        self,
        eval_env: VecEnv,
        trial: optuna.Trial,
        n_eval_episodes: int = 5,
        eval_freq: int = 10000,
        deterministic: bool = True,
        verbose: int = 0,
        best_model_save_path: str | None = None,
        log_path: str | None = None,
    ) -> None:
        super().__init__(
            eval_env,
            trial,
            n_eval_episodes=n_eval_episodes,
            eval_freq=eval_freq,
            deterministic=deterministic,
            verbose=verbose,
            best_model_save_path=best_model_save_path,
            log_path=log_path,
        )
        self.last_mean_cost = float("nan")
        self._episode_costs: list[float] = []
        self._running_costs = np.zeros(self.eval_env.num_envs)
        self._eval_step = 0

    def _log_success_callback(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        super()._log_success_callback(locals_, globals_)
        index = locals_["i"]
        info = locals_["info"]
        self._eval_step += 1
        self._running_costs[index] += read_cost(info, env_name(self.eval_env), self._eval_step)
        # With a Monitor, a "done" without "episode" is a lost life, not the end of the episode.
        if locals_["done"] and (not locals_["is_monitor_wrapped"] or "episode" in info):
            self._episode_costs.append(float(self._running_costs[index]))
            self._running_costs[index] = 0.0

    def _on_step(self) -> bool:
        cost_limit = getattr(self.model, "cost_limit", None)
        if cost_limit is None:
            return super()._on_step()
        if not (self.eval_freq > 0 and self.n_calls % self.eval_freq == 0):
            return True
        self._episode_costs = []
        self._running_costs[:] = 0.0
        EvalCallback._on_step(self)  # the evaluation itself; sets last_mean_reward
        mean_reward = self.last_mean_reward
        self.last_mean_cost = float(np.mean(self._episode_costs))
        self.last_mean_reward = cost_aware_objective(
            mean_reward, self.last_mean_cost, float(cost_limit), cost_penalty_coefficient()
        )
        self.logger.record("eval/mean_cost", self.last_mean_cost)
        self.eval_idx += 1
        self.trial.set_user_attr(f"mean_reward_{self.eval_idx}", mean_reward)
        self.trial.set_user_attr(f"mean_cost_{self.eval_idx}", self.last_mean_cost)
        self.trial.report(self.last_mean_reward, self.eval_idx)
        if self.trial.should_prune():
            self.is_pruned = True
            return False
        return True
