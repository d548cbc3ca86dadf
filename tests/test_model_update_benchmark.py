"""benchmarks/model_update.py fits with the denormal setting it names, and profiles the fit."""

from __future__ import annotations

import argparse

import pytest
import torch as th
from benchmark_modules import load_benchmark

from sb3_safe.common.float_modes import flushes_denormals

micro = load_benchmark("model_update")


def _args() -> argparse.Namespace:
    return argparse.Namespace(seed=0, transitions=64, obs_dim=3, action_dim=1, precision="float32", batch_size=8)


def test_each_variant_fits_with_its_denormal_setting_and_restores_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[bool] = []
    fit_ensemble = micro.fit_ensemble

    def recording_fit_ensemble(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(flushes_denormals())
        return fit_ensemble(*args, **kwargs)

    monkeypatch.setattr(micro, "fit_ensemble", recording_fit_ensemble)
    for flush in (False, True):
        fit = micro.EnsembleFit(_args(), flush)
        before = [p.detach().clone() for p in fit.model.parameters()]

        assert fit.ms_per_update(2) > 0.0

        assert seen[-1] == flush and not flushes_denormals()
        assert any(not th.equal(b, p) for b, p in zip(before, fit.model.parameters()))


def test_the_profile_lists_the_ensembles_matmuls() -> None:
    top = micro.EnsembleFit(_args(), True).profile_top_ops(2, n_ops=30)
    assert any(name in top for name in ("aten::baddbmm", "aten::bmm"))
    assert all(ms >= 0.0 for ms in top.values())
