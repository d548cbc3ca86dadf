"""Train an agent on a safe env and print its return, cost and violations.

    python examples/train_safe_agent.py --algo ppo_lag --env SafePendulum-v0

The default is PPO-Lagrangian with the settings of ``hyperparams/ppo_lag.yml`` (rl_zoo3's tuned
Pendulum settings plus the per-episode cost budget) for the entry's own budget (``n_timesteps``,
2e5 steps on SafePendulum-v0: one to three minutes on two CPU cores); ``--timesteps`` trains for
fewer, following the start of the same learning-rate decay. Shorter runs stop before the
multiplier has bought the constraint: at 30,000 steps the policy still swings up through the
unsafe band. ``--algo ppo`` trains the unconstrained parent with the same settings minus the
constraint, for comparison. The safety metrics come from ``SafetyMetricsCallback`` and
``evaluate_safe_policy``, which work with any SB3 algorithm.
For other envs and algorithms use the RL Zoo: ``python -m rl_zoo3.train --algo ppo_lag --env ...``.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

import torch as th
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import LinearSchedule

from sb3_safe import SafetyMetricsCallback, evaluate_safe_policy
from sb3_safe.ppo_lag import PPOLag

HYPERPARAMS = Path(__file__).resolve().parents[1] / "hyperparams" / "ppo_lag.yml"
ZOO_ONLY_KEYS = ("n_envs", "n_timesteps", "policy")


def constraint_keys() -> set[str]:
    """PPOLag's constructor arguments that PPO lacks (``cost_limit``, ``cost_gamma``, ...)."""
    return set(inspect.signature(PPOLag.__init__).parameters) - set(inspect.signature(PPO.__init__).parameters)


def ppo_lag_settings(env_id: str) -> dict[str, Any]:
    """The constructor arguments of ``hyperparams/ppo_lag.yml``'s entry for ``env_id``."""
    entries = yaml.safe_load(HYPERPARAMS.read_text())
    if env_id not in entries:
        raise SystemExit(f"{HYPERPARAMS.name} has no entry for {env_id}; choose one of {sorted(entries)}")
    settings = dict(entries[env_id])
    zoo_features = sorted(set(settings) & {"normalize", "frame_stack", "env_wrapper", "callback", "policy_kwargs"})
    if zoo_features:
        raise SystemExit(f"{env_id}'s entry uses {zoo_features}: train it with python -m rl_zoo3.train --algo ppo_lag")
    return settings


def linear_schedules(settings: dict[str, Any], timesteps: int, yaml_timesteps: int) -> dict[str, Any]:
    """``settings`` with rl_zoo3's ``"lin_<x>"`` strings turned into schedules.

    The zoo decays ``x`` linearly to 0 over the whole run; a demo shorter than the YAML's
    ``n_timesteps`` follows the first ``timesteps`` steps of that decay instead of compressing it,
    so it learns as the start of the full run does.
    """
    fraction = timesteps / yaml_timesteps
    parsed = dict(settings)
    for key, value in settings.items():
        if isinstance(value, str) and value.startswith("lin_"):
            start = float(value[len("lin_") :])
            parsed[key] = LinearSchedule(start, start * max(0.0, 1.0 - fraction), min(1.0, 1.0 / fraction))
    return parsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=["ppo_lag", "ppo"], default="ppo_lag")
    parser.add_argument("--env", default="SafePendulum-v0")
    parser.add_argument("--timesteps", type=int, default=None, help="default: the YAML entry's n_timesteps")
    parser.add_argument(
        "--eval-episodes", type=int, default=20, help="Pendulum costs are heavy-tailed: ~3%% of starts lie in the band"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads (small MLPs run fastest on one)")
    args = parser.parse_args()
    th.set_num_threads(args.num_threads)

    settings = ppo_lag_settings(args.env)
    yaml_timesteps = int(settings["n_timesteps"])
    timesteps = yaml_timesteps if args.timesteps is None else args.timesteps
    settings = linear_schedules(settings, timesteps, yaml_timesteps)
    n_envs = settings.pop("n_envs", 1)
    for key in ZOO_ONLY_KEYS:
        settings.pop(key, None)
    if args.algo == "ppo":
        for key in constraint_keys():
            settings.pop(key, None)
    algorithm = PPOLag if args.algo == "ppo_lag" else PPO

    env = make_vec_env(args.env, n_envs=n_envs, seed=args.seed)
    model = algorithm("MlpPolicy", env, seed=args.seed, **settings)
    callback = SafetyMetricsCallback()
    model.learn(timesteps, callback=callback)
    eval_env = make_vec_env(args.env, n_envs=1, seed=args.seed + 1000)
    returns, _, costs, violations = evaluate_safe_policy(model, eval_env, args.eval_episodes, return_episode_rewards=True)

    n = len(returns)
    budget = f", cost limit {settings['cost_limit']} per episode" if "cost_limit" in settings else ""
    print(f"{args.algo} on {args.env}, {model.num_timesteps} steps, seed {args.seed}{budget}")
    print(f"training: {callback.stats.violations_total} violations, cost rate {callback.stats.cost_rate:.4f} per step")
    print(
        f"evaluation over {n} episodes: return {sum(returns) / n:.1f}, cost {sum(costs) / n:.2f}, "
        f"violations {sum(violations) / n:.2f} per episode"
    )


if __name__ == "__main__":
    main()
