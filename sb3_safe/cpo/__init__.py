"""Constrained Policy Optimization (SPEC.md 2.3)."""

from sb3_safe.cpo.cpo import CPO, CPOCase, solve_cpo_subproblem
from sb3_safe.ppo_lag.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["CPO", "CPOCase", "CnnPolicy", "MlpPolicy", "MultiInputPolicy", "solve_cpo_subproblem"]
