"""SACLag: SAC with a twin cost critic and a Lagrange multiplier (SPEC.md 2.3)."""

from sb3_safe.sac_lag.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, SACLagPolicy
from sb3_safe.sac_lag.sac_lag import SACLag

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy", "SACLag", "SACLagPolicy"]
