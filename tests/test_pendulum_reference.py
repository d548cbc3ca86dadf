"""The hand-coded SafePendulum-v0 reference controllers of benchmarks/pendulum_reference.py."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from benchmark_modules import load_benchmark

bench = load_benchmark("pendulum_reference")


def episode_from(theta_deg: float, theta_dot: float, safe: bool) -> tuple[float, float, float]:
    """Return, cost and final |angle| (degrees) of one episode from a chosen start state."""
    env = gym.make("SafePendulum-v0")
    env.reset(seed=0)
    env.unwrapped.state = np.array([np.deg2rad(theta_deg), theta_dot])
    total_return, total_cost, obs = bench.finish_episode(env, env.unwrapped._get_obs(), safe)
    return total_return, total_cost, abs(np.degrees(np.arctan2(obs[1], obs[0])))


def test_safe_controller_swings_up_the_other_way_where_the_direct_one_crosses_the_band() -> None:
    # Near the bottom on the band's side, moving towards the top on that side.
    direct_return, direct_cost, direct_final = episode_from(150.0, -1.0, safe=False)
    safe_return, safe_cost, safe_final = episode_from(150.0, -1.0, safe=True)
    assert direct_cost > 0 and safe_cost == 0
    assert direct_final < 5 and safe_final < 5  # both end balanced at the top
    assert safe_return < direct_return  # the detour costs return


def test_energy_is_zero_at_rest_upright_and_pumping_raises_it() -> None:
    assert bench.energy(0.0, 0.0) == 0.0 and np.isclose(bench.energy(np.pi, 0.0), -30.0)
    assert bench.reference_action(np.pi - 0.1, 1.0, safe=True) == bench.MAX_TORQUE  # dE/dt = 3 u theta' > 0
