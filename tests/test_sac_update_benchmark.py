"""benchmarks/sac_update.py times like against like: same replay data, the optimiser and update it names."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from benchmark_modules import load_benchmark

micro = load_benchmark("sac_update")


def _args() -> argparse.Namespace:
    return argparse.Namespace(warmup=64, batch_size=16, seed=3)


def test_variants_share_the_replay_data_and_differ_in_the_optimizer() -> None:
    plain = micro.warmed_up_sac("SafePendulum-v0", False, _args())
    fused_adam = micro.warmed_up_sac("SafePendulum-v0", True, _args())

    assert plain.replay_buffer.size() == fused_adam.replay_buffer.size() == 64
    np.testing.assert_array_equal(plain.replay_buffer.observations, fused_adam.replay_buffer.observations)
    assert plain._n_updates == fused_adam._n_updates == 0
    assert not plain.actor.optimizer.defaults.get("fused")
    assert fused_adam.actor.optimizer.defaults["fused"] and fused_adam.critic.optimizer.defaults["fused"]


@pytest.mark.parametrize("name", list(micro.VARIANTS))
def test_each_timing_runs_the_requested_updates_with_the_named_update(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    precisions: list[str] = []
    mlp_train = micro.mlp_fused_sac_train

    def recording_mlp_train(model, gradient_steps, batch_size, hidden_precision="float32"):  # type: ignore[no-untyped-def]
        precisions.append(hidden_precision)
        mlp_train(model, gradient_steps, batch_size, hidden_precision)

    monkeypatch.setattr(micro, "mlp_fused_sac_train", recording_mlp_train)
    train, fused_adam = micro.VARIANTS[name]
    model = micro.warmed_up_sac("SafePendulum-v0", fused_adam, _args())
    before = [p.detach().clone() for p in model.critic.parameters()]

    seconds = micro.seconds_per_update(model, train, 3, 16)

    assert seconds > 0.0
    assert model._n_updates == 3
    assert any(not np.allclose(b, p.detach()) for b, p in zip(before, model.critic.parameters()))
    assert precisions == (["bfloat16"] if name == "hand_written_bf16_fused_adam" else [])
    assert model.actor.optimizer.defaults.get("fused") == (True if fused_adam else None)


def test_distance_from_peak_counts_the_updates_flops_and_profiles_their_matmuls() -> None:
    model = micro.warmed_up_sac("SafePendulum-v0", False, _args())
    args = argparse.Namespace(batch_size=16, profile_updates=3)
    flops = micro.sac_update_flops(model, 16, fused_update=True)

    report = micro.distance_from_peak(model, micro.autograd_fused_sac_train, median_ms=2.0, peak=1e9, args=args)

    assert report["flops_per_update"] == flops
    assert report["achieved_flops"] == pytest.approx(flops / 2e-3)
    assert report["utilisation"] == pytest.approx(flops / 2e-3 / 1e9)
    assert report["ms_per_update_at_peak"] == pytest.approx(1e3 * flops / 1e9)
    assert 0.0 < report["matmul_time_share"] < 1.0
    assert report["matmul_flops"] > 0.0
    assert model._n_updates == 3  # the profiled updates ran
    assert "matmul_time_share" not in micro.distance_from_peak(
        model, micro.autograd_fused_sac_train, 2.0, 1e9, argparse.Namespace(batch_size=16, profile_updates=0)
    )


@pytest.mark.parametrize("name", ["sb3", "autograd_fused_adam", "hand_written_fused_adam"])
def test_the_layer_size_flop_count_is_within_a_few_percent_of_torchs_counter(name: str) -> None:
    train, _ = micro.VARIANTS[name]
    fused_update = name != "sb3"
    from torch.utils.flop_counter import FlopCounterMode

    model = micro.warmed_up_sac("SafeHopper-v0", False, argparse.Namespace(warmup=300, batch_size=256, seed=0))
    counter = FlopCounterMode(display=False)
    with counter:
        micro.seconds_per_update(model, train, 1, 256)

    counted = micro.sac_update_flops(model, 256, fused_update)
    assert counter.get_total_flops() <= counted <= 1.05 * counter.get_total_flops()
