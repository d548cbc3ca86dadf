"""The calling thread's handling of denormal floats, read and set for a block of code.

Adam's moment estimates of weights whose gradient is zero (weights fed by ReLU units that are dead
on the whole minibatch) decay geometrically into denormal floats (below 1.2e-38 in float32), which
x86 CPUs process many times slower than normal ones; rounding stops their decay a few hundred units
of the last place above zero, so they stay. After 600,000 SAC updates on SafeHopper-v0 a fifth of
the actor's and critics' Adam moments were denormal and SMBPO's SAC step took a quarter more time
than with them flushed to zero (docs/benchmarks.md). Flushing is a per-thread CPU setting that torch
can set (``torch.set_flush_denormal``) but not read back, hence :func:`flushes_denormals`. It covers
the calling thread only: with ``torch.set_num_threads(n > 1)`` torch's intra-op worker threads keep
their own setting, the one of the thread that created them (new threads inherit it on Linux).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch as th


def flushes_denormals() -> bool:
    """Whether torch flushes denormal floats to zero in the calling thread (1e-39 is one in float32)."""
    return float((th.tensor([1e-39], dtype=th.float32, device="cpu") * 1.0)[0]) == 0.0


@contextmanager
def denormals_flushed(flush: bool = True) -> Iterator[None]:
    """Flush denormal floats to zero (``flush``) or keep them in the calling thread (not in torch's
    intra-op worker threads) for the block, then restore the thread's previous setting, also when the
    block raises.

    :param flush: the setting inside the block
    """
    previous = flushes_denormals()
    th.set_flush_denormal(flush)
    try:
        yield
    finally:
        th.set_flush_denormal(previous)
