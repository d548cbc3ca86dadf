"""PPO-Lagrangian (SPEC.md 2.3)."""

from sb3_safe.ppo_lag.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_safe.ppo_lag.ppo_lag import PPOLag

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy", "PPOLag"]
