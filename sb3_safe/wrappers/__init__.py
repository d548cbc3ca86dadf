"""Gymnasium wrappers of the cost protocol: cost signals, monitors, penalties, shields."""

from sb3_safe.wrappers.cost import CostWrapper, EarlyTerminationPenalty
from sb3_safe.wrappers.monitor import CostMonitor
from sb3_safe.wrappers.safety_gymnasium import SafetyGymnasiumAdapter
from sb3_safe.wrappers.shield import SafetyShield, ShieldError

__all__ = [
    "CostMonitor",
    "CostWrapper",
    "EarlyTerminationPenalty",
    "SafetyGymnasiumAdapter",
    "SafetyShield",
    "ShieldError",
]
