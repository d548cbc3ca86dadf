"""Hand-coded reference controllers on SafePendulum-v0: what return a policy that meets the cost limit can get.

The Lagrangian benchmark (``benchmarks/lagrangian.py``) asks whether PPOLag's return is within the best
achievable under the cost limit. The best achievable is not known in closed form, so this script
measures two energy-based swing-up controllers that know the true dynamics (Gymnasium's
``Pendulum-v1``: theta'' = 15 sin(theta) + 3 u, dt = 0.05, |u| <= 2, theta = 0 upright):

* ``direct``: pumps energy in whichever direction the pendulum moves and catches it at the top,
  the unconstrained swing-up; it crosses the unsafe band [20, 30] degrees whenever it arrives from
  the positive side;
* ``safe``: the same, but whenever theta' < 0 (on either side: the pole will next rise on the
  positive side, where the band is) it only pumps up to the energy of a turning point at 35 degrees,
  so it comes back down and swings up on the negative side; only starts inside or just above the band
  can still cost a few steps.

Both catch the pole with a PD law below 17 degrees. The ``safe`` controller's return is a lower bound
on the best return achievable under a cost limit at or above its own episode cost (a learned
policy can do better, e.g. by pumping harder; it cannot do better than ``direct``-like unconstrained
swing-ups by much, since those ignore the band).

Writes ``<out>/pendulum_reference.json`` (mean return, mean cost and the fraction of episodes with
any cost, over ``--episodes`` episodes whose starts come from ``env.reset(seed=i)``).

Usage::

    python benchmarks/pendulum_reference.py --episodes 1000 --out bench_out/pendulum_reference
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import numpy as np

import sb3_safe  # noqa: F401 - registers the safe envs

GRAVITY_GAIN = 15.0  # 3 g / (2 l) of Pendulum-v1
TORQUE_GAIN = 3.0  # 3 / (m l^2)
MAX_TORQUE = 2.0
CATCH_ANGLE = np.deg2rad(17.0)  # below the band's lower edge (20 degrees)
SAFE_TURNING_ANGLE = np.deg2rad(35.0)  # above the band's upper edge (30 degrees)
TOP_ENERGY_MARGIN = 0.3


def energy(theta: float, theta_dot: float) -> float:
    """Mechanical energy in the units of theta'' = 15 sin(theta) + 3u: 0 at rest upright, -30 hanging."""
    return 0.5 * theta_dot**2 + GRAVITY_GAIN * (np.cos(theta) - 1.0)


def target_energy(theta_dot: float, safe: bool) -> float:
    """The energy to pump to: enough to reach the top, or (``safe``, rising on the band's side) to turn at 35 degrees."""
    # theta' < 0 means the pole will next rise on the positive side, where the band is.
    if safe and theta_dot < 0:
        return GRAVITY_GAIN * (np.cos(SAFE_TURNING_ANGLE) - 1.0)
    return TOP_ENERGY_MARGIN


def reference_action(theta: float, theta_dot: float, safe: bool) -> float:
    """Torque of the swing-up-and-catch controller at one state (theta normalised to [-pi, pi))."""
    if abs(theta) < CATCH_ANGLE:
        # PD catch: closed loop theta'' = (15 - 3 * 8) theta - 3 * 2 theta', stable and damped.
        return float(np.clip(-(8.0 * theta + 2.0 * theta_dot), -MAX_TORQUE, MAX_TORQUE))
    # Bang-bang energy pumping: dE/dt = 3 u theta'.
    return float(MAX_TORQUE * np.sign((target_energy(theta_dot, safe) - energy(theta, theta_dot)) * theta_dot))


def finish_episode(env: gym.Env, obs: np.ndarray, safe: bool) -> tuple[float, float, np.ndarray]:
    """Run the controller from ``obs`` (the env's current observation) to the end of the episode.

    :return: the return and summed cost from there, and the last observation
    """
    total_return, total_cost = 0.0, 0.0
    while True:
        theta = float(np.arctan2(obs[1], obs[0]))
        action = np.array([reference_action(theta, float(obs[2]), safe)], dtype=np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        total_return += float(reward)
        total_cost += float(info["cost"])
        if terminated or truncated:
            return total_return, total_cost, obs


def run_episode(env: gym.Env, seed: int, safe: bool) -> tuple[float, float]:
    """Return and summed cost of one episode of the controller from the start ``env.reset(seed=seed)``."""
    obs, _ = env.reset(seed=seed)
    total_return, total_cost, _ = finish_episode(env, obs, safe)
    return total_return, total_cost


def evaluate_controller(safe: bool, episodes: int) -> dict[str, float]:
    env = gym.make("SafePendulum-v0")
    results = np.array([run_episode(env, seed, safe) for seed in range(episodes)])
    env.close()
    return {
        "mean_return": float(results[:, 0].mean()),
        "std_return": float(results[:, 0].std()),
        "mean_cost": float(results[:, 1].mean()),
        "fraction_of_episodes_with_cost": float((results[:, 1] > 0).mean()),
        "episodes": episodes,
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=1000, help="episodes per controller (starts: reset seeds 0..n-1)")
    parser.add_argument("--out", default="bench_out/pendulum_reference", help="output folder")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    report = {name: evaluate_controller(name == "safe", args.episodes) for name in ("direct", "safe")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pendulum_reference.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
