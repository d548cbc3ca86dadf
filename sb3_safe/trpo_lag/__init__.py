"""TRPO-Lagrangian (SPEC.md 2.3)."""

from sb3_safe.ppo_lag.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_safe.trpo_lag.trpo_lag import TRPOLag

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy", "TRPOLag"]
