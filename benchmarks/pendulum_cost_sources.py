"""Where a trained SafePendulum-v0 policy's sampled cost comes from (docs/benchmarks.md, twenty-fifth session).

Trains PPOLag with this package's ``hyperparams/ppo_lag.yml`` entry (as ``benchmarks/lagrangian.py`` does)
for each seed, then runs sampled episodes with the training's gSDE noise and classes every entry into the
unsafe band [20, 30] deg by where the pendulum came from:

* ``start_in_band``: the episode started inside it;
* ``rising_from_below``: the previous angle was beyond 30 deg (a swing-up on the band's side);
* ``falling_from_top_after_balance``: it came from the top side after balancing (|theta| < 10 deg for 10
  steps in a row earlier in the episode);
* ``falling_from_top_overshoot``: it came from the top side without having balanced.

It also evaluates the same policy with the gSDE noise resampled every step, every ``sde_sample_freq``
steps and never within an episode, and reports the std of the sampled actions at four states. Usage::

    python benchmarks/pendulum_cost_sources.py --seeds 0 16 --out pendulum_cost_sources.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from lagrangian import RunSpec, build_model
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from sb3_safe.envs.classic import SafePendulumEnv

SOURCES = ("start_in_band", "rising_from_below", "falling_from_top_after_balance", "falling_from_top_overshoot")
BALANCED_ANGLE = np.deg2rad(10.0)
BALANCED_STEPS = 10
STD_STATES_DEG = (0.0, 11.5, -11.5, 180.0)


def in_band(theta: float) -> bool:
    return bool(SafePendulumEnv.angle_is_unsafe(theta))


def band_entry_sources(thetas: list[float]) -> dict[str, list[int]]:
    """Steps spent in the band per entry, by source, for one episode's angles (the start state's first)."""
    high = np.deg2rad(SafePendulumEnv.UNSAFE_ANGLE_RANGE_DEG[1])
    sources: dict[str, list[int]] = {name: [] for name in SOURCES}
    t, balanced_run, balanced = 1, 0, False
    if in_band(thetas[0]):
        start = t
        while t < len(thetas) and in_band(thetas[t]):
            t += 1
        sources["start_in_band"].append(t - start)
    while t < len(thetas):
        balanced_run = balanced_run + 1 if abs(thetas[t]) < BALANCED_ANGLE else 0
        balanced = balanced or balanced_run >= BALANCED_STEPS
        if in_band(thetas[t]) and not in_band(thetas[t - 1]):
            previous, start = thetas[t - 1], t
            while t < len(thetas) and in_band(thetas[t]):
                t += 1
            if abs(previous) > high:
                source = "rising_from_below"
            else:
                source = "falling_from_top_after_balance" if balanced else "falling_from_top_overshoot"
            sources[source].append(t - start)
            continue
        t += 1
    return sources


def sampled_episode_angles(
    model: OnPolicyAlgorithm, n_episodes: int, first_reset_seed: int, resample_every: int
) -> list[list[float]]:
    """Angles (start state first) of ``n_episodes`` sampled episodes, the gSDE noise resampled at each
    episode's start and then every ``resample_every`` steps (0: never within the episode)."""
    env = gym.make("SafePendulum-v0")
    episodes = []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=first_reset_seed + episode)
        thetas = [float(np.arctan2(obs[1], obs[0]))]
        truncated = False
        step = 0
        while not truncated:
            if step == 0 or (resample_every > 0 and step % resample_every == 0):
                model.policy.reset_noise(1)  # type: ignore[operator]
            action, _ = model.predict(obs[None], deterministic=False)
            obs, _, _, truncated, _ = env.step(action[0])
            thetas.append(float(np.arctan2(obs[1], obs[0])))
            step += 1
        episodes.append(thetas)
    env.close()
    return episodes


def episode_cost(thetas: list[float]) -> int:
    """The episode's cost: its steps in the band after the start state (the env's cost per step)."""
    return sum(in_band(theta) for theta in thetas[1:])


def action_std_at(model: OnPolicyAlgorithm, angles_deg: tuple[float, ...], samples: int) -> list[float]:
    """Std of ``samples`` sampled actions, each with fresh noise, at rest at each of ``angles_deg``."""
    angles = np.deg2rad(np.asarray(angles_deg))
    obs = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1).astype(np.float32)
    actions = []
    for _ in range(samples):
        model.policy.reset_noise(1)  # type: ignore[operator]
        actions.append(model.predict(obs, deterministic=False)[0][:, 0])
    return [float(std) for std in np.std(actions, axis=0)]


def seed_report(model: OnPolicyAlgorithm, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The cost sources, the noise-resampling evaluations and the action stds of one trained policy."""
    th.manual_seed(seed)
    episodes = sampled_episode_angles(model, args.episodes, args.first_reset_seed, model.sde_sample_freq)
    by_source: dict[str, list[int]] = {name: [] for name in SOURCES}
    for thetas in episodes:
        for name, entries in band_entry_sources(thetas).items():
            by_source[name].extend(entries)
    n = len(episodes)
    resampling = {}
    for label, every in (("every_step", 1), ("every_sde_sample_freq", model.sde_sample_freq), ("never", 0)):
        th.manual_seed(seed)
        runs = sampled_episode_angles(model, args.resampling_episodes, args.resampling_first_reset_seed, every)
        resampling[label] = float(np.mean([episode_cost(thetas) for thetas in runs]))
    return {
        "seed": seed,
        "final_lambda": float(model.lagrange_value),  # type: ignore[attr-defined]
        "sde_sample_freq": model.sde_sample_freq,
        "episodes": n,
        "sampled_cost_per_episode": float(np.mean([episode_cost(thetas) for thetas in episodes])),
        "by_band_entry": {
            name: {"entries": len(v), "cost_steps": int(sum(v)), "cost_per_episode": sum(v) / n}
            for name, v in by_source.items()
        },
        "cost_per_episode_by_noise_resampling": resampling,
        "action_std_at_rest": dict(zip((f"{a:g} deg" for a in STD_STATES_DEG),
                                       action_std_at(model, STD_STATES_DEG, args.std_samples))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 16])
    parser.add_argument("--timesteps", type=int, default=200_000, help="the YAML entry's n_timesteps")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--first-reset-seed", type=int, default=50_000)
    parser.add_argument("--resampling-episodes", type=int, default=100)
    parser.add_argument("--resampling-first-reset-seed", type=int, default=70_000)
    parser.add_argument("--std-samples", type=int, default=400)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args()
    th.set_num_threads(1)
    reports = []
    for seed in args.seeds:
        spec = RunSpec("SafePendulum-v0", "ppo_lag", seed, args.timesteps, 0, None)
        model, _, callbacks = build_model(spec)
        model.learn(args.timesteps, callback=callbacks)
        reports.append(seed_report(model, seed, args))  # type: ignore[arg-type]
        print(json.dumps(reports[-1]), flush=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": reports}, indent=1))


if __name__ == "__main__":
    main()
