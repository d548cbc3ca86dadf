"""Running safety statistics over a vectorised rollout, shared by the callback and the algorithms."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.type_aliases import MaybeCallback

from sb3_safe.common.cost import env_name, read_vec_costs


class SafetyStats:
    """Accumulates per-episode cost and training-wide violation counts from VecEnv infos.

    Episode costs are summed here from the per-step ``info["cost"]`` rather than read
    from a monitor, so the statistics are right whatever wrappers the env has.

    :param n_envs: number of sub-environments of the VecEnv
    :param stats_window_size: number of recent episodes averaged for ``rollout/ep_cost_mean``
        (SB3's ``stats_window_size``)
    :param env_id: env name used in cost error messages
    """

    def __init__(self, n_envs: int, stats_window_size: int = 100, env_id: str = "env") -> None:
        self.env_id = env_id
        self.current_costs = np.zeros(n_envs, dtype=np.float64)
        self.current_violations = np.zeros(n_envs, dtype=np.int64)
        self.current_lengths = np.zeros(n_envs, dtype=np.int64)
        self.episode_costs: deque[float] = deque(maxlen=stats_window_size)
        self.episode_lengths: deque[int] = deque(maxlen=stats_window_size)
        self.episode_violations: deque[int] = deque(maxlen=stats_window_size)
        self.total_steps = 0
        self.total_cost = 0.0
        self.violations_total = 0
        self.shield_interventions = 0
        self.shielded_steps = 0
        # The summed costs and the lengths of the episodes that ended at the last update (in sub-env order).
        self.finished_costs: list[float] = []
        self.finished_lengths: list[int] = []

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Statistics saved before the episode lengths were kept (e.g. in a benchmark checkpoint) go on
        # with lengths counted from the load.
        self.__dict__.update(state)
        if "episode_lengths" not in state:
            self.current_lengths = np.zeros(len(self.current_costs), dtype=np.int64)
            self.episode_lengths = deque(maxlen=self.episode_costs.maxlen)
            self.finished_lengths = []

    def update(self, infos: Sequence[Mapping[str, Any]], dones: np.ndarray) -> np.ndarray:
        """Record one VecEnv step.

        :param infos: the step's info dicts, one per sub-env
        :param dones: the step's done flags
        :return: the step's costs, shape (n_envs,)
        """
        costs, violations = read_vec_costs(infos, self.env_id, self.total_steps)
        self.current_costs += costs
        self.current_violations += violations
        self.current_lengths += 1
        self.total_steps += len(infos)
        # Python sums: numpy's reductions cost more than the whole step on a few sub-envs.
        self.total_cost += sum(costs.tolist())
        self.violations_total += sum(violations.tolist())
        for info in infos:
            shield = info.get("shield")
            if shield is not None:
                self.shielded_steps += 1
                self.shield_interventions += int(bool(shield["intervened"]))
        self.finished_costs, self.finished_lengths = [], []
        if np.any(dones):
            for idx in np.flatnonzero(dones):
                self.finished_costs.append(float(self.current_costs[idx]))
                self.finished_lengths.append(int(self.current_lengths[idx]))
                self.episode_costs.append(self.finished_costs[-1])
                self.episode_lengths.append(self.finished_lengths[-1])
                self.episode_violations.append(int(self.current_violations[idx]))
                self.current_costs[idx] = 0.0
                self.current_violations[idx] = 0
                self.current_lengths[idx] = 0
        return costs

    @property
    def cost_rate(self) -> float:
        """Average cost per env step since the start of training (Safety Gym's 'cost rate')."""
        return self.total_cost / max(self.total_steps, 1)

    @property
    def ep_cost_mean(self) -> float:
        """Mean summed cost of the recent finished episodes (NaN before the first one ends)."""
        return float(np.mean(self.episode_costs)) if self.episode_costs else float("nan")

    def record(self, logger: Logger) -> None:
        """Write the statistics to an SB3 logger under the ``rollout/`` and ``safety/`` keys."""
        if self.episode_costs:
            logger.record("rollout/ep_cost_mean", self.ep_cost_mean)
            logger.record("rollout/ep_violations_mean", float(np.mean(self.episode_violations)))
        logger.record("safety/violations_total", self.violations_total)
        logger.record("safety/cost_rate", self.cost_rate)
        if self.shielded_steps:
            logger.record("safety/shield_interventions", self.shield_interventions)
            logger.record("safety/shield_intervention_rate", self.shield_interventions / self.shielded_steps)


def safety_stats_for_learn(
    stats: SafetyStats | None,
    n_envs: int,
    stats_window_size: int,
    env_id: str,
    reset_num_timesteps: bool,
    env_will_reset: bool,
) -> SafetyStats:
    """The statistics a new ``learn()`` call goes on with, treated as SB3 treats its ``ep_info_buffer``.

    Fresh statistics when the step count restarts (``reset_num_timesteps``) or the number of sub-envs
    changed; otherwise the same ones, with the costs summed over unfinished episodes dropped when SB3 is
    about to reset the env (after ``load`` or ``set_env``), since those episodes never finish and their
    partial costs would be added to the next episodes.

    :param stats: the statistics so far (None before the first ``learn()``)
    :param n_envs: number of sub-environments of the VecEnv
    :param stats_window_size: number of recent episodes averaged for ``rollout/ep_cost_mean``
    :param env_id: env name used in cost error messages
    :param reset_num_timesteps: the ``learn()`` argument
    :param env_will_reset: whether SB3's ``_setup_learn`` resets the env (``reset_num_timesteps`` or no last
        observation), read before it runs
    :return: the statistics to use
    """
    if stats is None or reset_num_timesteps or len(stats.current_costs) != n_envs:
        return SafetyStats(n_envs, stats_window_size, env_id)
    if env_will_reset:
        stats.current_costs = np.zeros(n_envs, dtype=np.float64)
        stats.current_violations = np.zeros(n_envs, dtype=np.int64)
        stats.current_lengths = np.zeros(n_envs, dtype=np.int64)
    return stats


class SafetyStatsMixin:
    """Keeps an SB3 algorithm's :attr:`safety_stats` across ``learn()`` calls as SB3 keeps its episode
    statistics (:func:`safety_stats_for_learn`); mix it in before the SB3 class. The statistics are made
    by the first ``learn()`` (None before it; a loaded model brings its saved ones). Subclasses that keep
    more per-run state override :meth:`_after_learn_setup`."""

    safety_stats: SafetyStats | None = None

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        # Read before SB3's set-up, which resets the env in these two cases.
        env_will_reset = reset_num_timesteps or self._last_obs is None  # type: ignore[attr-defined]
        steps_before = self.num_timesteps  # type: ignore[attr-defined]
        result = super()._setup_learn(  # type: ignore[misc]
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        self.safety_stats = safety_stats_for_learn(
            self.safety_stats,
            self.n_envs,  # type: ignore[attr-defined]
            self._stats_window_size,  # type: ignore[attr-defined]
            env_name(self.env),  # type: ignore[attr-defined]
            reset_num_timesteps,
            env_will_reset,
        )
        self._after_learn_setup(self.num_timesteps - steps_before, env_will_reset)  # type: ignore[attr-defined]
        return result

    def _after_learn_setup(self, step_shift: int, env_was_reset: bool) -> None:
        """Called at the end of ``_setup_learn``.

        :param step_shift: how much SB3 moved ``num_timesteps`` (``-num_timesteps`` when it restarted the count)
        :param env_was_reset: whether SB3 reset the env (the episodes being played were cut)
        """
