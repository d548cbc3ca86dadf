"""The SafePendulum-v0 cost-source diagnosis: each entry into the band classed by where the pendulum came from."""

from __future__ import annotations

import numpy as np
import pytest
from benchmark_modules import load_benchmark

from sb3_safe.ppo_lag import PPOLag

sources = load_benchmark("pendulum_cost_sources")


def angles(*degrees: float) -> list[float]:
    return [float(np.deg2rad(d)) for d in degrees]


def test_each_band_entry_is_classed_by_where_the_pendulum_came_from() -> None:
    start_inside = angles(25, 27, 29, 35, 60)
    assert sources.band_entry_sources(start_inside)["start_in_band"] == [2]
    rising = angles(90, 40, 28, 24, 33, 50)
    assert sources.band_entry_sources(rising)["rising_from_below"] == [2]
    balanced_then_falls = angles(*([2.0] * 12), 15, 21, 26, 40)
    assert sources.band_entry_sources(balanced_then_falls)["falling_from_top_after_balance"] == [2]
    overshoot = angles(-40, -10, 5, 19, 22, 18, 0)
    found = sources.band_entry_sources(overshoot)
    assert found["falling_from_top_overshoot"] == [1]
    assert sum(len(v) for v in found.values()) == 1
    # the other side of the top is safe
    assert all(v == [] for v in sources.band_entry_sources(angles(-25, -22, -28)).values())


def test_the_episode_cost_is_the_steps_in_the_band_after_the_start() -> None:
    assert sources.episode_cost(angles(25, 26, 10, 22)) == 2


def test_sampled_episodes_and_action_stds_of_a_gsde_policy() -> None:
    model = PPOLag("MlpPolicy", "SafePendulum-v0", use_sde=True, sde_sample_freq=4, n_steps=64, seed=0)
    episodes = sources.sampled_episode_angles(model, 2, first_reset_seed=3, resample_every=4)
    assert [len(e) for e in episodes] == [201, 201]  # the start state and 200 steps
    again = sources.sampled_episode_angles(model, 1, first_reset_seed=3, resample_every=4)
    assert again[0][0] == pytest.approx(episodes[0][0])  # the same start state for the same reset seed
    stds = sources.action_std_at(model, (0.0, 180.0), samples=50)
    assert len(stds) == 2 and all(std > 0 for std in stds)
