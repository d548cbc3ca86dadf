"""Train an agent on a safe env for a short budget and print its return, cost and violations.

    python examples/train_safe_agent.py --algo ppo --env SafePendulum-v0 --timesteps 20000

Any SB3 algorithm works: the safety metrics come from ``SafetyMetricsCallback`` and
``evaluate_safe_policy``, which read the env's ``info["cost"]``.
"""

from __future__ import annotations

import argparse
import importlib

from stable_baselines3.common.env_util import make_vec_env

import sb3_safe
from sb3_safe import SafetyMetricsCallback, evaluate_safe_policy

ALGORITHMS = {
    "ppo": "stable_baselines3:PPO",
    "sac": "stable_baselines3:SAC",
}


def load_algorithm(name: str) -> type:
    module, cls = ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=sorted(ALGORITHMS), default="ppo")
    parser.add_argument("--env", default="SafePendulum-v0", choices=sorted(sb3_safe.envs.SAFE_ENVS))
    parser.add_argument("--timesteps", type=int, default=20_000)
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    env = make_vec_env(args.env, n_envs=args.n_envs, seed=args.seed)
    model = load_algorithm(args.algo)("MlpPolicy", env, seed=args.seed, verbose=0)
    callback = SafetyMetricsCallback()
    model.learn(args.timesteps, callback=callback)
    returns, _, costs, violations = evaluate_safe_policy(
        model, make_vec_env(args.env, n_envs=1, seed=args.seed + 1000), args.eval_episodes, return_episode_rewards=True
    )
    n = len(returns)
    print(f"{args.algo} on {args.env}, {args.timesteps} steps, seed {args.seed}")
    print(f"training: {callback.stats.violations_total} violations, cost rate {callback.stats.cost_rate:.3f} per step")
    print(f"evaluation over {n} episodes: return {sum(returns) / n:.1f}, cost {sum(costs) / n:.1f}, violations {sum(violations) / n:.1f}")


if __name__ == "__main__":
    main()
