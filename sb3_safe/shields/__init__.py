"""Shields: components that vet an agent's actions and substitute safe ones."""

from sb3_safe.shields.base import Shield, ShieldDecision
from sb3_safe.shields.function import FunctionShield
from sb3_safe.shields.simulator import SimulatorShield

__all__ = ["FunctionShield", "Shield", "ShieldDecision", "SimulatorShield"]
