"""Evaluation of a policy's return and cost, in the manner of SB3's ``evaluate_policy``."""

from __future__ import annotations

from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from sb3_safe.common.cost import check_gym_env, env_name, read_vec_costs


class _Predictor(Protocol):
    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]: ...


def evaluate_safe_policy(
    model: _Predictor,
    env: gym.Env | VecEnv,
    n_eval_episodes: int = 10,
    deterministic: bool = True,
    return_episode_rewards: bool = False,
) -> tuple[float, float, float, float] | tuple[list[float], list[int], list[float], list[int]]:
    """Run a policy for ``n_eval_episodes`` episodes and return its return and cost statistics.

    The counterpart of ``stable_baselines3.common.evaluation.evaluate_policy`` for the cost
    protocol. Episodes are spread evenly over the sub-envs of a VecEnv, as SB3 does, so that
    short episodes do not bias the estimate. Returns and costs are summed from the raw step
    signals (so an ``EarlyTerminationPenalty`` reward is what is reported for such an env).

    :param model: anything with SB3's ``predict`` (an algorithm or a policy)
    :param env: a Gymnasium env or an SB3 VecEnv that sets ``info["cost"]``
    :param n_eval_episodes: number of episodes to evaluate
    :param deterministic: whether to use deterministic actions
    :param return_episode_rewards: if True, return per-episode lists
        ``(returns, lengths, costs, violations)`` instead of means and standard deviations
    :return: ``(mean_return, std_return, mean_cost, std_cost)``, or the per-episode lists
    """
    if n_eval_episodes < 1:
        raise ValueError(f"n_eval_episodes must be >= 1, got {n_eval_episodes}")
    if not isinstance(env, VecEnv):
        check_gym_env(env, "evaluate_safe_policy")
        single_env = env
        env = DummyVecEnv([lambda: single_env])
    name = env_name(env)
    n_envs = env.num_envs
    targets = np.array([(n_eval_episodes + i) // n_envs for i in range(n_envs)], dtype=int)
    counts = np.zeros(n_envs, dtype=int)
    current = {key: np.zeros(n_envs) for key in ("return", "length", "cost", "violations")}
    episodes: dict[str, list[Any]] = {key: [] for key in current}
    observations = env.reset()
    states = None
    episode_starts = np.ones(n_envs, dtype=bool)
    step = 0
    while (counts < targets).any():
        actions, states = model.predict(observations, state=states, episode_start=episode_starts, deterministic=deterministic)
        observations, rewards, dones, infos = env.step(actions)
        costs, violations = read_vec_costs(infos, name, step)
        step += 1
        current["return"] += rewards
        current["length"] += 1
        current["cost"] += costs
        current["violations"] += violations
        for idx in np.flatnonzero(dones & (counts < targets)):
            for key in current:
                episodes[key].append(current[key][idx])
            counts[idx] += 1
        for key in current:
            current[key][dones] = 0.0
        episode_starts = dones
    returns = [float(x) for x in episodes["return"]]
    lengths = [int(x) for x in episodes["length"]]
    ep_costs = [float(x) for x in episodes["cost"]]
    ep_violations = [int(x) for x in episodes["violations"]]
    if return_episode_rewards:
        return returns, lengths, ep_costs, ep_violations
    return float(np.mean(returns)), float(np.std(returns)), float(np.mean(ep_costs)), float(np.std(ep_costs))
