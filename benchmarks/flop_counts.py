"""Floating-point work of the benchmarked networks and the machine's matmul peak, for utilisation figures.

FLOPs are counted from layer sizes (2 per multiply-accumulate of every linear layer, backward = 2 x forward),
the rule of every utilisation figure in docs/benchmarks.md since the first. It overcounts a little against
torch's ``FlopCounterMode``, which sees that no gradient is computed for a network's inputs when they need
none (a test bounds the difference), and it needs no instrumented run of the code being timed.
"""

from __future__ import annotations

import time

import torch as th
from stable_baselines3 import SAC
from torch import nn

from sb3_safe.common.dynamics import EnsembleLinear


def matmul_peak_flops(device: th.device, size: int, repeats: int, dtype: th.dtype = th.float32) -> float:
    """Measured matmul throughput (FLOP/s) of ``device`` in ``dtype``: best of ``repeats`` timings."""
    a = th.randn(size, size, device=device, dtype=dtype)
    b = th.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up
        if device.type == "cuda":
            th.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            th.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def linear_macs(module: nn.Module) -> int:
    """Multiply-accumulates of one forward pass of one input row through every linear layer."""
    macs = 0
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            macs += layer.in_features * layer.out_features
        elif isinstance(layer, EnsembleLinear):
            macs += layer.n_members * layer.in_features * layer.out_features
    return macs


def sac_update_flops(model: SAC, batch_size: int, fused_update: bool) -> float:
    """FLOPs of one SAC update: forward = 2 x MACs per row, backward = 2 x forward.

    Actor: forward on s (with grad), on s' (no grad), backward once. Critics (all Q nets):
    target forward on s', forward on (s, a) with backward, forward on (s, pi(s)) with backward:
    with SB3's ``SAC.train`` that backward computes the critics' weight gradients too (2 x forward),
    with ``fused_sac_train`` (SMBPO's ``fused_sac_update``) only the input gradients (1 x forward).
    """
    actor = 2.0 * linear_macs(model.actor)
    critics = 2.0 * linear_macs(model.critic)  # every Q network, without the shared extractor cost
    actor_pass_backward = 1 if fused_update else 2
    per_row = (actor + actor + 2 * actor) + (critics + 3 * critics + (1 + actor_pass_backward) * critics)
    return per_row * batch_size
