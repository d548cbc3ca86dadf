"""GuSS and the safe shooting planners (SPEC.md 2.4): model-based MPC with a learned D(AR)MDN.

``GuSS``, ``RS``, ``SRS``, ``CEM`` and ``RCEM`` are SB3 algorithms (``learn``, ``predict``,
``save``/``load``, callbacks, logger) registered in the RL Zoo as ``guss``, ``rs``, ``srs``,
``cem`` and ``rcem``.
"""

from sb3_safe.guss.algorithms import CEM, RCEM, RS, SRS, GuSS, ShootingAlgorithm
from sb3_safe.guss.planners import CEMPlanner, GridArchive, GuSSPlanner, RandomShootingPlanner, rcem_elites
from sb3_safe.guss.policies import MlpPolicy, PlanningPolicy
from sb3_safe.guss.rollout import BatchedMLPPolicies, DynamicsModel, RolloutEvaluator, lexicographic_order

__all__ = [
    "CEM",
    "RCEM",
    "RS",
    "SRS",
    "BatchedMLPPolicies",
    "CEMPlanner",
    "DynamicsModel",
    "GridArchive",
    "GuSS",
    "GuSSPlanner",
    "MlpPolicy",
    "PlanningPolicy",
    "RandomShootingPlanner",
    "RolloutEvaluator",
    "ShootingAlgorithm",
    "lexicographic_order",
    "rcem_elites",
]
