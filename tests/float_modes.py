"""A probe of the calling thread's floating-point mode, for tests of the denormal handling."""

from __future__ import annotations

import torch as th


def flushes_denormals() -> bool:
    """Whether torch flushes denormal floats to zero in the calling thread (1e-39 is one in float32)."""
    return float((th.tensor([1e-39]) * 1.0)[0]) == 0.0
