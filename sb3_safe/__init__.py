"""sb3-safe: safe reinforcement learning for Stable-Baselines3.

Importing the package registers its environments with Gymnasium. Algorithms and
training utilities are imported lazily, so ``gym.make("sb3_safe:SafePendulum-v0")``
does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from sb3_safe.envs import register_envs

__version__ = "0.1.0"

register_envs()

_LAZY_ATTRIBUTES: dict[str, str] = {
    "PPOLag": "sb3_safe.ppo_lag",
    "TRPOLag": "sb3_safe.trpo_lag",
    "CPO": "sb3_safe.cpo",
    "SACLag": "sb3_safe.sac_lag",
    "SMBPO": "sb3_safe.smbpo",
    "GuSS": "sb3_safe.guss",
    "SafetyMetricsCallback": "sb3_safe.common.callbacks",
    "evaluate_safe_policy": "sb3_safe.common.evaluation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY_ATTRIBUTES.get(name)
    if module is None:
        raise AttributeError(f"module 'sb3_safe' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)


__all__ = ["__version__", "register_envs", *_LAZY_ATTRIBUTES]
