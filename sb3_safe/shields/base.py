"""The shield protocol used by :class:`sb3_safe.wrappers.SafetyShield`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from sb3_safe.common.cost import env_name


@dataclass(frozen=True)
class ShieldDecision:
    """A shield's verdict on one proposed action.

    :param intervene: whether to replace the proposed action
    :param action: the action to execute instead (``None`` when not intervening)
    :param risk: the shield's estimate of the proposed action's violation probability
        (NaN when the shield has no estimate)
    """

    intervene: bool
    action: Any = None
    risk: float = float("nan")


class Shield(ABC):
    """A safety shield: it vets each proposed action and may substitute a safe one.

    :class:`~sb3_safe.wrappers.SafetyShield` calls :meth:`bind` once with the env it wraps,
    :meth:`reset` after every env reset, :meth:`decide` before every step, and :meth:`observe`
    after every step with the executed transition (so that learned shields can train online).
    """

    env: gym.Env | None = None

    def bind(self, env: gym.Env) -> None:
        """Attach the shield to the env it protects; subclasses check here that they support it.

        :param env: the env below the :class:`~sb3_safe.wrappers.SafetyShield` wrapper
        :raises ValueError: if the shield already protects another env
        """
        if self.env is not None and self.env is not env:
            raise ValueError(
                f"{type(self).__name__} already protects an env ('{env_name(self.env)}'): a shield serves one env; "
                "build one per sub-env, e.g. inside the function given to make_vec_env"
            )
        self.env = env

    def reset(self, obs: Any, info: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Called after every env reset.

        :param obs: the first observation of the episode
        :param info: the reset info
        """

    @abstractmethod
    def decide(self, obs: Any, action: Any) -> ShieldDecision:
        """Vet ``action`` proposed in the state that produced ``obs``.

        :param obs: the current observation
        :param action: the agent's proposed action
        :return: the decision
        """

    def observe(  # noqa: B027 - optional hook
        self,
        obs: Any,
        action: Any,
        reward: float,
        next_obs: Any,
        terminated: bool,
        truncated: bool,
        info: dict[str, Any],
    ) -> None:
        """Called after every step with the executed transition.

        :param obs: observation before the step
        :param action: the executed action (the shield's when it intervened)
        :param reward: the step's reward
        :param next_obs: observation after the step
        :param terminated: whether the episode terminated
        :param truncated: whether the episode was truncated
        :param info: the step's info dict
        """
