"""``--params KEY=VALUE`` overrides shared by the benchmark scripts."""

from __future__ import annotations

from typing import Any

import yaml


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
        overrides[key] = yaml.safe_load(value)
    return overrides
