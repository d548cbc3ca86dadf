"""A shield from a user-written rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sb3_safe.shields.base import Shield, ShieldDecision

SafetyRule = Callable[[Any, Any], Any]


class FunctionShield(Shield):
    """A shield defined by a rule ``rule(obs, action) -> safe_action | None``.

    The rule returns ``None`` when the proposed action is acceptable, else the action to
    execute instead. Since a rule gives a verdict rather than a probability, the reported
    risk is 1.0 when the rule objects and 0.0 otherwise.

    :param rule: the safety rule
    """

    def __init__(self, rule: SafetyRule) -> None:
        if not callable(rule):
            raise TypeError(f"FunctionShield needs a callable rule(obs, action) -> safe_action | None, got {rule!r}")
        self.rule = rule

    def decide(self, obs: Any, action: Any) -> ShieldDecision:
        safe_action = self.rule(obs, action)
        if safe_action is None:
            return ShieldDecision(intervene=False, risk=0.0)
        return ShieldDecision(intervene=True, action=safe_action, risk=1.0)
