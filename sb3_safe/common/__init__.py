"""Pieces shared by every sb3-safe algorithm."""

from sb3_safe.common.cost import (
    CostSignalError,
    check_gym_env,
    env_name,
    read_cost,
    read_vec_costs,
    read_violation,
    validate_cost,
)

__all__ = [
    "CostSignalError",
    "check_gym_env",
    "env_name",
    "read_cost",
    "read_vec_costs",
    "read_violation",
    "validate_cost",
]
