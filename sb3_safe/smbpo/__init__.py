"""SMBPO: Safe Model-Based Policy Optimization (Thomas, Luo and Ma, NeurIPS 2021)."""

from stable_baselines3.sac.policies import MlpPolicy

from sb3_safe.smbpo.buffers import ModelReplayBuffer, SMBPOReplayBuffer
from sb3_safe.smbpo.penalty import deterministic_penalty, stochastic_penalty
from sb3_safe.smbpo.smbpo import SMBPO

__all__ = [
    "SMBPO",
    "ModelReplayBuffer",
    "SMBPOReplayBuffer",
    "MlpPolicy",
    "deterministic_penalty",
    "stochastic_penalty",
]
