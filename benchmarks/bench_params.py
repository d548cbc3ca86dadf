"""``--params KEY=VALUE`` overrides shared by the benchmark scripts."""

from __future__ import annotations

import re
from typing import Any

import yaml

# A number in exponent notation without a dot, which YAML 1.1 reads as a string.
EXPONENT_NUMBER = re.compile(r"[-+]?\d+[eE][-+]?\d+")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict, each value read as YAML (``n_warm_start=1`` gives an int,
    ``lagrangian_kwargs={kp: 1.0, ki: 0.4}`` a mapping).

    :raises ValueError: on a pair without ``=``
    """
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--params takes KEY=VALUE pairs, got {pair!r}")
        overrides[key] = with_exponent_floats(yaml.safe_load(value))
    return overrides


def with_exponent_floats(value: Any) -> Any:
    """``value`` with the strings that are numbers in exponent notation without a dot (``3e-4``, ``1e5``,
    which YAML 1.1 reads as strings) turned into floats, also inside mappings and lists, as
    ``rl_zoo3.train -params`` (which evaluates its values) would have them; other strings stay strings."""
    if isinstance(value, dict):
        return {key: with_exponent_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_exponent_floats(item) for item in value]
    if isinstance(value, str) and EXPONENT_NUMBER.fullmatch(value):
        return float(value)
    return value
