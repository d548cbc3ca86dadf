"""benchmarks/denormals.py counts the denormal Adam moments of a checkpoint and times each variant from its own copy."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch as th
from benchmark_modules import load_benchmark
from stable_baselines3 import SAC

from sb3_safe.common.float_modes import denormals_flushed, flushes_denormals
from sb3_safe.smbpo import SMBPO

micro = load_benchmark("denormals")

SMBPO_TINY = {
    "learning_starts": 50,
    "model_initial_gradient_steps": 5,
    "model_gradient_steps": 5,
    "rollout_batch_size": 5,
    "rollout_horizon": 2,
    "model_hidden_size": 16,
    "ensemble_size": 2,
    "model_trunk_layers": 1,
}


def _checkpoint(tmp_path: Path, algo_class: type[SAC], **kwargs) -> Path:  # type: ignore[no-untyped-def]
    model = algo_class(
        "MlpPolicy", "SafePendulum-v0", batch_size=16, gradient_steps=1, policy_kwargs={"net_arch": [16]}, seed=0,
        device="cpu", **kwargs,
    )
    model.learn(60)
    folder = tmp_path / algo_class.__name__
    folder.mkdir()
    model.save(folder / "model.zip")
    model.save_replay_buffer(folder / "replay_buffer.pkl")
    return folder


def test_denormal_counts_find_the_denormal_moments_of_actor_and_critics(tmp_path: Path) -> None:
    model = micro.load_checkpoint(SAC, _checkpoint(tmp_path, SAC, learning_starts=50), "SafePendulum-v0")
    actor_state = next(iter(model.actor.optimizer.state.values()))
    critic_state = next(iter(model.critic.optimizer.state.values()))
    for state in (actor_state, critic_state):
        state["exp_avg"].zero_()
        state["exp_avg_sq"].fill_(1.0)
    actor_state["exp_avg"].view(-1)[:3] = 1e-39
    critic_state["exp_avg_sq"].view(-1)[:2] = 5e-40
    critic_state["exp_avg"].view(-1)[:4] = 1e-30  # small but normal

    counts = micro.denormal_counts(model)

    n_entries = sum(p.numel() for p in [*model.actor.parameters(), *model.critic.parameters()]) * 2
    assert counts == {"exp_avg": 3, "exp_avg_sq": 2, "entries": n_entries}


def test_denormals_are_counted_from_the_bits_whatever_the_threads_setting() -> None:
    values = th.tensor([0.0, -0.0, 1e-39, -5e-40, 1e-45, 1.1e-38, 1.2e-38, 1.0, float("inf"), float("nan")])

    counts = [micro.count_denormals(values)]
    with denormals_flushed():
        counts.append(micro.count_denormals(values))

    assert counts == [4, 4]  # the smallest normal float32 is 1.18e-38


@pytest.mark.parametrize(("algo_class", "kwargs"), [(SAC, {"learning_starts": 50}), (SMBPO, SMBPO_TINY)])
def test_each_variant_steps_its_own_copy_with_its_denormal_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, algo_class: type[SAC], kwargs: dict
) -> None:
    folder = _checkpoint(tmp_path, algo_class, **kwargs)
    loaded: list[SAC] = []
    seen: list[tuple[int, bool]] = []
    load_checkpoint = micro.load_checkpoint

    def recording_load(*load_args):  # type: ignore[no-untyped-def]
        loaded.append(load_checkpoint(*load_args))
        return loaded[-1]

    sac_step = micro.sac_step

    def recording_step(model: SAC):  # type: ignore[no-untyped-def]
        step = sac_step(model)

        def step_and_record(updates: int, batch_size: int) -> None:
            seen.append((loaded.index(model), flushes_denormals()))
            step(updates, batch_size)

        return step_and_record

    monkeypatch.setattr(micro, "load_checkpoint", recording_load)
    monkeypatch.setattr(micro, "sac_step", recording_step)
    args = argparse.Namespace(env="SafePendulum-v0", repeats=2, updates=3, batch_size=8)

    result = micro.measure(algo_class, folder, args)

    assert len(loaded) == 2 and loaded[0] is not loaded[1]
    assert seen == [(0, False), (1, True), (1, True), (0, False)]  # the order alternates between repeats
    assert not flushes_denormals()
    updates_before = result["sac_updates_before"]
    assert [model._n_updates for model in loaded] == [updates_before + 6] * 2
    assert set(result["median_ms_per_update"]) == {"kept", "flushed"}
    assert result["flushed_over_kept"] > 0.0
    assert not th.equal(
        next(loaded[0].critic.parameters()), next(load_checkpoint(algo_class, folder, "SafePendulum-v0").critic.parameters())
    )
