"""The Lagrange multiplier shared by every Lagrangian algorithm (SPEC.md 2.3)."""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Literal

import torch as th

UpdateRule = Literal["plain", "pid"]


class LagrangeMultiplier:
    """A multiplier lambda >= 0 for the constraint ``J_c <= cost_limit``.

    Two update rules, chosen with ``update_rule``:

    * ``"plain"`` -- gradient ascent on the dual, ``lambda <- max(0, lambda + lr (J_c - d))``.
      As in OmniSafe's PPOLag the step is taken by an Adam optimiser (``optimizer="adam"``,
      the default) on the loss ``-lambda (J_c - d)``; ``optimizer="sgd"`` gives the textbook
      update exactly. Defaults: lambda_0 = 0.001, lr = 0.035.
    * ``"pid"`` -- the PID Lagrangian of Stooke, Achiam and Abbeel, *Responsive Safety in
      Reinforcement Learning by PID Lagrangian Methods* (ICML 2020), with OmniSafe's CPPOPID
      defaults: ``Delta = J_c - d``; ``I <- max(0, I + K_i Delta)``;
      ``P <- EMA(Delta)``; ``D <- max(0, EMA(J_c) - EMA(J_c) d_delay updates ago)``;
      ``lambda = clip(K_p P + I + K_d D, 0, lambda_max)``.

    :param cost_limit: the per-episode cost budget d (>= 0)
    :param initial_value: lambda_0 (>= 0); for PID it seeds the integral term
    :param update_rule: ``"plain"`` or ``"pid"``
    :param lr: step size of the plain rule
    :param optimizer: ``"adam"`` or ``"sgd"`` for the plain rule
    :param kp: proportional gain (PID)
    :param ki: integral gain (PID)
    :param kd: derivative gain (PID)
    :param d_delay: number of updates between the two cost EMAs compared by the derivative term (PID)
    :param ema_alpha: smoothing of the proportional and derivative EMAs (PID)
    :param lambda_max: upper clip of lambda (both rules)
    """

    def __init__(
        self,
        cost_limit: float,
        initial_value: float = 0.001,
        update_rule: UpdateRule = "plain",
        lr: float = 0.035,
        optimizer: Literal["adam", "sgd"] = "adam",
        kp: float = 0.1,
        ki: float = 0.01,
        kd: float = 0.01,
        d_delay: int = 10,
        ema_alpha: float = 0.95,
        lambda_max: float = 100.0,
    ) -> None:
        if cost_limit < 0:
            raise ValueError(f"cost_limit must be >= 0, got {cost_limit}")
        if initial_value < 0:
            raise ValueError(f"the initial Lagrange multiplier must be >= 0, got {initial_value}")
        if update_rule not in ("plain", "pid"):
            raise ValueError(f"update_rule must be 'plain' or 'pid', got {update_rule!r}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        if d_delay < 1:
            raise ValueError(f"d_delay must be >= 1, got {d_delay}")
        if not 0.0 <= ema_alpha < 1.0:
            raise ValueError(f"ema_alpha must be in [0, 1), got {ema_alpha}")
        self.cost_limit = float(cost_limit)
        self.update_rule = update_rule
        self.initial_value = float(initial_value)
        self.lambda_max = float(lambda_max)
        self.kp, self.ki, self.kd = float(kp), float(ki), float(kd)
        self.ema_alpha = float(ema_alpha)
        self._value = float(initial_value)
        # The plain rule keeps lambda as a tensor so that a torch optimiser (Adam, as in OmniSafe) steps it.
        self._param = th.nn.Parameter(th.tensor(float(initial_value)))
        optimizer_class = th.optim.Adam if optimizer == "adam" else th.optim.SGD
        self._optimizer = optimizer_class([self._param], lr=lr)
        self._integral = float(initial_value)
        self._delta_ema = 0.0
        self._cost_ema = 0.0
        self._cost_ema_history: deque[float] = deque([0.0] * d_delay, maxlen=d_delay)

    @property
    def value(self) -> float:
        """The current multiplier lambda (>= 0)."""
        return self._value

    def _saved_initial_value(self) -> float | None:
        """The initial value of a multiplier saved before it was kept: the plain rule never moves the PID
        integral, which starts there; a PID multiplier has moved it, so its initial value is unknown."""
        return self._integral if self.update_rule == "plain" else None

    def configuration(self) -> tuple[str, dict[str, Any]]:
        """The update rule and every constructor argument but ``cost_limit``, as this multiplier runs them (read
        from its state, so that one saved by an earlier version can be compared; ``initial_value`` is None for
        a PID multiplier saved before it was kept)."""
        return self.update_rule, {
            "initial_value": getattr(self, "initial_value", self._saved_initial_value()),
            "lr": float(self._optimizer.param_groups[0]["lr"]),
            "optimizer": "adam" if isinstance(self._optimizer, th.optim.Adam) else "sgd",
            "kp": self.kp,
            "ki": self.ki,
            "kd": self.kd,
            "d_delay": self._cost_ema_history.maxlen,
            "ema_alpha": self.ema_alpha,
            "lambda_max": self.lambda_max,
        }

    def update(self, episode_cost: float, cost_limit: float | None = None) -> float:
        """Update lambda from the mean episode cost J_c of the last rollout/epoch.

        :param episode_cost: J_c, the mean summed cost per episode
        :param cost_limit: the budget d to use from now on (the algorithms pass their own ``cost_limit``, so
            that one changed after construction, e.g. by ``load(..., cost_limit=x)``, is the one applied);
            None keeps :attr:`cost_limit`
        :return: the new lambda
        """
        if cost_limit is not None:
            self.cost_limit = validate_cost_limit(cost_limit)
        episode_cost = float(episode_cost)
        if not math.isfinite(episode_cost):
            raise ValueError(f"the episode cost given to the Lagrange multiplier must be finite, got {episode_cost}")
        if self.update_rule == "plain":
            self._value = self._plain_update(episode_cost)
        else:
            self._value = self._pid_update(episode_cost)
        return self._value

    def _plain_update(self, episode_cost: float) -> float:
        self._optimizer.zero_grad()
        loss = -self._param * (episode_cost - self.cost_limit)
        loss.backward()
        self._optimizer.step()
        with th.no_grad():
            self._param.clamp_(0.0, self.lambda_max)
        return float(self._param.item())

    def _pid_update(self, episode_cost: float) -> float:
        delta = episode_cost - self.cost_limit
        self._integral = max(0.0, self._integral + self.ki * delta)
        self._delta_ema = self.ema_alpha * self._delta_ema + (1.0 - self.ema_alpha) * delta
        self._cost_ema = self.ema_alpha * self._cost_ema + (1.0 - self.ema_alpha) * episode_cost
        derivative = max(0.0, self._cost_ema - self._cost_ema_history[0])
        self._cost_ema_history.append(self._cost_ema)
        raw = self.kp * self._delta_ema + self._integral + self.kd * derivative
        return min(max(raw, 0.0), self.lambda_max)


def validate_cost_limit(cost_limit: float) -> float:
    """Return ``cost_limit`` as a float, or raise a ``ValueError`` if it is negative or not finite.

    :param cost_limit: the per-episode cost budget d
    :return: the budget as a float
    """
    value = float(cost_limit)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"cost_limit (the per-episode cost budget) must be a finite number >= 0, got {cost_limit}")
    return value


def make_lagrange_multiplier(
    cost_limit: float, lagrangian_update: UpdateRule, lagrangian_kwargs: dict[str, Any] | None
) -> LagrangeMultiplier:
    """Build the multiplier of a Lagrangian algorithm (PPOLag, TRPOLag, SACLag) from its constructor arguments.

    :param cost_limit: the per-episode cost budget d
    :param lagrangian_update: ``"plain"`` or ``"pid"``
    :param lagrangian_kwargs: other arguments of :class:`LagrangeMultiplier`
        (``initial_value``, ``lr``, ``optimizer``, ``kp``, ``ki``, ``kd``, ``d_delay``, ``ema_alpha``, ``lambda_max``)
    :return: the multiplier
    """
    kwargs = dict(lagrangian_kwargs or {})
    for reserved in ("cost_limit", "update_rule"):
        if reserved in kwargs:
            raise ValueError(
                f"lagrangian_kwargs must not contain {reserved!r}: pass it as the algorithm's "
                f"{'cost_limit' if reserved == 'cost_limit' else 'lagrangian_update'} argument"
            )
    return LagrangeMultiplier(cost_limit, update_rule=lagrangian_update, **kwargs)


def multiplier_for_settings(
    multiplier: LagrangeMultiplier,
    cost_limit: float,
    lagrangian_update: UpdateRule,
    lagrangian_kwargs: dict[str, Any],
) -> LagrangeMultiplier:
    """The multiplier a model goes on with once its settings may have changed (SB3's ``load(..., **kwargs)``
    sets ``lagrangian_update`` / ``lagrangian_kwargs`` on the loaded model before ``_setup_model``).

    :param multiplier: the model's multiplier (the saved one after ``load``)
    :param cost_limit: the per-episode cost budget d
    :param lagrangian_update: the model's ``lagrangian_update`` now
    :param lagrangian_kwargs: the model's ``lagrangian_kwargs`` now
    :return: ``multiplier`` itself when it runs these settings; otherwise a new multiplier built from them,
        starting at the current lambda, or at their ``initial_value`` when they give one that differs from
        the saved multiplier's
    """
    as_requested = make_lagrange_multiplier(cost_limit, lagrangian_update, lagrangian_kwargs)
    rule, saved = multiplier.configuration()
    requested_rule, requested = as_requested.configuration()
    if saved["initial_value"] is None or "initial_value" not in lagrangian_kwargs:
        # Not known for what was saved, or not asked for: not compared.
        requested["initial_value"] = saved["initial_value"]
    if (rule, saved) == (requested_rule, requested):
        return multiplier
    restart = requested["initial_value"] != saved["initial_value"]
    start = as_requested.initial_value if restart else multiplier.value
    rebuilt = make_lagrange_multiplier(cost_limit, lagrangian_update, {**lagrangian_kwargs, "initial_value": start})
    # The configured initial value, not the lambda it went on from, so that a later load with the same
    # settings keeps this multiplier.
    rebuilt.initial_value = as_requested.initial_value
    return rebuilt
