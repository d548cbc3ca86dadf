"""Callbacks that bring safety metrics to any SB3 algorithm."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from sb3_safe.common.cost import env_name
from sb3_safe.common.safety_stats import SafetyStats, safety_stats_for_learn


class SafetyMetricsCallback(BaseCallback):
    """Log cost and violation statistics of training to SB3's logger (and so to TensorBoard).

    Works with any SB3 or sb3-contrib algorithm on an env that follows the cost protocol.
    Keys: ``rollout/ep_cost_mean`` (mean summed cost of the last ``stats_window_size``
    episodes), ``rollout/ep_violations_mean``, ``safety/violations_total`` (violating steps
    since the start of training, the cumulative-violations curve of all three papers),
    ``safety/cost_rate`` (cost per env step since the start) and, when the env is wrapped in a
    :class:`~sb3_safe.wrappers.SafetyShield`, ``safety/shield_interventions`` and
    ``safety/shield_intervention_rate``. The statistics are kept in ``self.stats``; passed to
    another ``learn(..., reset_num_timesteps=False)`` the callback goes on counting, as the model
    goes on counting its steps (a new run, at step 0, starts fresh statistics).

    :param stats_window_size: number of episodes averaged for the episode means (SB3's default 100)
    :param verbose: verbosity level
    """

    def __init__(self, stats_window_size: int = 100, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.stats_window_size = stats_window_size
        self.stats: SafetyStats | None = None
        # The model's last observation when the last rollout or learn() ended (None before the first one).
        self._last_obs_at_end: Any = None

    def _init_callback(self) -> None:
        # SB3 calls this at every learn(), after _setup_learn, which resets the env for a new run or when the
        # model has no last observation (after load / set_env); the costs summed over the cut episodes must
        # then be dropped.
        self.stats = safety_stats_for_learn(
            self.stats,
            self.training_env.num_envs,
            self.stats_window_size,
            env_name(self.training_env),
            reset_num_timesteps=self.model.num_timesteps == 0,
            env_will_reset=self._env_was_reset(),
        )

    def _env_was_reset(self) -> bool:
        """Whether SB3 reset the env since the last rollout or ``learn()`` ended.

        A reset replaces the model's ``_last_obs``; an env that goes on keeps the very object the previous
        call left. (``_last_episode_starts`` cannot tell: off-policy algorithms never update it, so it
        stays all ones, as after a reset.)
        """
        return self._last_obs_at_end is None or self.model._last_obs is not self._last_obs_at_end

    def _on_rollout_end(self) -> None:
        # Also remembered here, so that a learn() stopped by an exception in train() still finds it.
        self._last_obs_at_end = self.model._last_obs

    def _on_training_end(self) -> None:
        self._last_obs_at_end = self.model._last_obs

    def _on_step(self) -> bool:
        assert self.stats is not None
        self.stats.update(self.locals["infos"], self.locals["dones"])
        self.stats.record(self.logger)
        return True
