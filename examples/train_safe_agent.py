"""Train an agent on a safe env for a short budget and print its return, cost and violations.

    python examples/train_safe_agent.py --algo ppo_lag --env SafePendulum-v0 --timesteps 20000

The default is PPO-Lagrangian with a per-episode cost budget (``--cost-limit``); ``--algo ppo``
trains the unconstrained parent for comparison. Any SB3 algorithm works with the safety
metrics, which come from ``SafetyMetricsCallback`` and ``evaluate_safe_policy`` reading the
env's ``info["cost"]``.
"""

from __future__ import annotations

import argparse
import importlib

from stable_baselines3.common.env_util import make_vec_env

import sb3_safe
from sb3_safe import SafetyMetricsCallback, evaluate_safe_policy

ALGORITHMS = {
    "ppo": "stable_baselines3:PPO",
    "ppo_lag": "sb3_safe.ppo_lag:PPOLag",
    "sac": "stable_baselines3:SAC",
    "sac_lag": "sb3_safe.sac_lag:SACLag",
}
CONSTRAINED = {"ppo_lag", "sac_lag"}


def load_algorithm(name: str) -> type:
    module, cls = ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=sorted(ALGORITHMS), default="ppo_lag")
    parser.add_argument("--cost-limit", type=float, default=1.0, help="per-episode cost budget of the constrained algorithms")
    parser.add_argument("--env", default="SafePendulum-v0", choices=sorted(sb3_safe.envs.SAFE_ENVS))
    parser.add_argument("--timesteps", type=int, default=20_000)
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    env = make_vec_env(args.env, n_envs=args.n_envs, seed=args.seed)
    kwargs = {"cost_limit": args.cost_limit} if args.algo in CONSTRAINED else {}
    model = load_algorithm(args.algo)("MlpPolicy", env, seed=args.seed, verbose=0, **kwargs)
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
