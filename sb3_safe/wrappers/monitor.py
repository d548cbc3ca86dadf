"""SB3's ``Monitor`` extended with episode cost and violations."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor

from sb3_safe.common.cost import check_gym_env, env_name, read_cost, read_violation

EPISODE_COST_KEY = "c"
EPISODE_VIOLATIONS_KEY = "v"


class _EpisodeCostTotals(gym.Wrapper):
    """Sums cost and violations over an episode and reports them on its last step.

    Monitor copies ``info_keywords`` from the last step's info into ``info["episode"]`` and
    into its CSV row; this inner wrapper supplies the two totals there so that
    :class:`CostMonitor` reuses all of Monitor's bookkeeping instead of re-implementing it.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._cost = 0.0
        self._violations = 0
        self._step_index = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._cost, self._violations, self._step_index = 0.0, 0, 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        cost = read_cost(info, env_name(self.env), self._step_index)
        self._step_index += 1
        self._cost += cost
        self._violations += int(read_violation(info, cost))
        if terminated or truncated:
            info[EPISODE_COST_KEY] = round(self._cost, 6)
            info[EPISODE_VIOLATIONS_KEY] = self._violations
        return obs, reward, terminated, truncated, info


class CostMonitor(Monitor):
    """SB3 ``Monitor`` that also records each episode's summed cost ``c`` and violations ``v``.

    Both appear in ``info["episode"]`` next to SB3's ``r``, ``l``, ``t`` (SPEC.md section 0)
    and as columns of the monitor CSV, so ``stable_baselines3.common.monitor.load_results``
    reads them. The env must follow the cost protocol.

    :param env: the environment
    :param filename: the location to save a log file, can be None for no log
    :param allow_early_resets: allows the reset of the environment before it is done
    :param reset_keywords: extra keywords for the reset call, if extra parameters are needed at reset
    :param info_keywords: extra information to log, from the information return of env.step()
    :param override_existing: appends to file if ``filename`` exists, otherwise override existing files
    """

    def __init__(
        self,
        env: gym.Env,
        filename: str | None = None,
        allow_early_resets: bool = True,
        reset_keywords: tuple[str, ...] = (),
        info_keywords: tuple[str, ...] = (),
        override_existing: bool = True,
    ) -> None:
        check_gym_env(env, "CostMonitor")
        super().__init__(
            _EpisodeCostTotals(env),
            filename=filename,
            allow_early_resets=allow_early_resets,
            reset_keywords=reset_keywords,
            info_keywords=(EPISODE_COST_KEY, EPISODE_VIOLATIONS_KEY, *info_keywords),
            override_existing=override_existing,
        )
        self.episode_costs: list[float] = []
        self.episode_violations: list[int] = []

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        if terminated or truncated:
            # The totals now live in info["episode"]; the top-level copies were only for Monitor.
            self.episode_costs.append(info.pop(EPISODE_COST_KEY))
            self.episode_violations.append(info.pop(EPISODE_VIOLATIONS_KEY))
        return obs, reward, terminated, truncated, info

    def get_episode_costs(self) -> list[float]:
        """The summed cost of every finished episode."""
        return self.episode_costs

    def get_episode_violations(self) -> list[int]:
        """The number of violating steps of every finished episode."""
        return self.episode_violations
