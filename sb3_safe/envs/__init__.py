"""The safe environments of the three papers, registered with Gymnasium on ``import sb3_safe``."""

from __future__ import annotations

import gymnasium as gym

# id -> (entry point, episode length); SPEC.md sections 1.1 and 1.2.
SAFE_ENVS: dict[str, tuple[str, int]] = {
    "SafeHopper-v0": ("sb3_safe.envs.mujoco_suite:SafeHopperEnv", 1000),
    "SafeHalfCheetah-v0": ("sb3_safe.envs.mujoco_suite:SafeHalfCheetahEnv", 1000),
    "SafeAnt-v0": ("sb3_safe.envs.mujoco_suite:SafeAntEnv", 1000),
    "SafeHumanoid-v0": ("sb3_safe.envs.mujoco_suite:SafeHumanoidEnv", 1000),
    "SafePendulum-v0": ("sb3_safe.envs.classic:SafePendulumEnv", 200),
    "SafeAcrobot-v0": ("sb3_safe.envs.classic:SafeAcrobotEnv", 200),
}


def register_envs() -> None:
    """Register every sb3-safe env id with Gymnasium (idempotent)."""
    for env_id, (entry_point, max_episode_steps) in SAFE_ENVS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_episode_steps)
