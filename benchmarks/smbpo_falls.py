"""Where a trained SMBPO agent's late falls come from (issue 4, SafeHopper-v0 and the other MuJoCo envs).

Reads a checkpoint of ``benchmarks/smbpo.py`` (``model.zip`` and ``replay_buffer.pkl``), finds the
real violations among the last ``--window`` real transitions, and for each fall at step ``t`` and
each look-back ``k`` measures, from the real state ``s_(t-k)``:

* ``model_hit_rate``: the fraction of ``--reps`` model rollouts (the agent's ensemble, its
  stochastic policy, its horizon H) that reach a predicted unsafe state within H steps, i.e. how
  often the model rollouts that train the critic would have shown this fall;
* ``q_min``: the agent's min twin-Q of its deterministic action, against the penalty's absorbing
  value ``-C / (1 - gamma)``;
* ``real_fall_rate_deterministic`` / ``real_fall_rate_stochastic``: the fraction of real-simulator
  runs of the *current* policy from ``s_(t-k)`` that fall within ``--recovery-steps`` steps (more
  than the largest ``k``, so that the recorded fall lies inside that window), which
  says how early the fall was unavoidable for the agent as it is now (the fall itself was made by
  an older policy);
* ``replay_check``: replaying the recorded actions from ``s_(t-k)`` must fall at exactly step
  ``k``; this checks that the simulator state rebuilt from the observation is the real one.

The same quantities (except the replay check) on ``--controls`` real states of the window from
which the recorded run stayed up for at least ``--recovery-steps`` steps give the baseline.

The simulator state is rebuilt from the observation: the MuJoCo locomotion envs observe
``qpos[1:]`` and ``qvel`` (the x position does not affect the dynamics). Hopper clips the observed
velocities to [-10, 10], so a state with a faster joint cannot be rebuilt; a start state is used
only if one real step from the rebuilt state with the recorded action reproduces the recorded next
observation (to 1e-9), and ``n_skipped`` counts the others.

Usage::

    python benchmarks/smbpo_falls.py --checkpoint bench_out/smbpo30k/smbpo_checkpoint/step_29500 \\
        --out docs/benchmarks/smbpo_falls_seed0
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from bench_plots import saved_figure

import sb3_safe  # noqa: F401 - registers the safe envs
from sb3_safe.smbpo import SMBPO


@dataclass
class LookBack:
    """The measurements from the states ``k`` steps before the falls (means over the falls; NaN
    when no fall of the window has ``k`` steps of its episode before it)."""

    k: int
    n_falls: int
    n_skipped: int
    model_hit_rate: float
    q_min: float
    real_fall_rate_deterministic: float
    real_fall_rate_stochastic: float
    replay_check: float


@dataclass
class RealTransitions:
    """The filled part of the real replay buffer (first env only), as arrays."""

    observations: np.ndarray
    actions: np.ndarray
    next_observations: np.ndarray
    dones: np.ndarray

    @classmethod
    def from_agent(cls, agent: SMBPO) -> RealTransitions:
        buffer = agent.replay_buffer
        if buffer.full:
            raise ValueError("smbpo_falls: the real buffer has wrapped around; the step order is lost")
        n = buffer.pos
        return cls(
            buffer.observations[:n, 0], buffer.actions[:n, 0], buffer.next_observations[:n, 0], buffer.dones[:n, 0]
        )

    def steps_since_episode_start(self, index: int) -> int:
        earlier_ends = np.flatnonzero(self.dones[:index])
        return index if earlier_ends.size == 0 else index - int(earlier_ends[-1]) - 1


def restore_state(env: gym.Env, obs: np.ndarray) -> None:
    """Put the MuJoCo env into the state of ``obs`` (``qpos[1:]``, ``qvel``; x set to 0)."""
    base = env.unwrapped
    n_qpos = base.model.nq
    if obs.shape[0] != n_qpos - 1 + base.model.nv:
        raise ValueError(
            f"smbpo_falls: {type(base).__name__}'s observation does not hold exactly qpos[1:] and qvel; "
            "its simulator state cannot be rebuilt from it"
        )
    qpos = np.concatenate([[0.0], obs[: n_qpos - 1]])
    base.set_state(qpos, obs[n_qpos - 1 :])


def steps_until_fall(env: gym.Env, obs: np.ndarray, act: Any, max_steps: int) -> int | None:
    """Run ``act(obs) -> action`` in the real simulator from ``obs``; the step of the first
    violation (1-based), or None if none happens within ``max_steps``."""
    env.reset()
    restore_state(env, obs)
    for step in range(1, max_steps + 1):
        obs, _, terminated, truncated, info = env.step(act(obs))
        if info["violation"]:
            return step
        if terminated or truncated:
            return None
    return None


def rebuilds_exactly(env: gym.Env, data: RealTransitions, index: int) -> bool:
    """Whether one real step from the state rebuilt from observation ``index`` with the recorded
    action reproduces the recorded next observation."""
    env.reset()
    restore_state(env, data.observations[index])
    next_obs = env.step(data.actions[index])[0]
    return bool(np.abs(next_obs - data.next_observations[index]).max() <= 1e-9)


def model_hit_rate(agent: SMBPO, states: np.ndarray, reps: int) -> float:
    """Fraction of model rollouts (stochastic policy, the agent's horizon and unsafe predicate) that
    reach a predicted unsafe state, as in SMBPO's own rollouts."""
    obs = th.as_tensor(np.repeat(states, reps, axis=0), device=agent.device).float()
    hit = th.zeros(obs.shape[0], dtype=th.bool, device=agent.device)
    with th.no_grad():
        for _ in range(agent.rollout_horizon):
            next_obs, _, violation_prob = agent.dynamics.sample_step(obs, agent.actor(obs, deterministic=False))
            hit |= agent._predict_unsafe(next_obs, violation_prob)
            obs = next_obs
    return float(hit.float().mean())


def q_min(agent: SMBPO, states: np.ndarray) -> np.ndarray:
    """The agent's min twin-Q of its deterministic action at each state."""
    obs = th.as_tensor(states, device=agent.device).float()
    with th.no_grad():
        q_values = agent.critic(obs, agent.actor(obs, deterministic=True))
    return th.min(*q_values).squeeze(-1).cpu().numpy()


def policy_actor(agent: SMBPO, deterministic: bool) -> Any:
    return lambda obs: agent.predict(obs, deterministic=deterministic)[0]


def recorded_actor(actions: np.ndarray) -> Any:
    remaining = iter(actions)
    return lambda _obs: next(remaining)


def analyse_look_back(
    agent: SMBPO, env: gym.Env, data: RealTransitions, falls: np.ndarray, k: int, args: argparse.Namespace
) -> LookBack:
    """All measurements from ``k`` steps before each fall that has ``k`` steps of its episode and
    whose start state can be rebuilt exactly."""
    falls = np.array([t for t in falls if data.steps_since_episode_start(t) >= k - 1], dtype=int)
    exact = np.array([rebuilds_exactly(env, data, t - (k - 1)) for t in falls], dtype=bool)
    falls = falls[exact]
    starts = falls - (k - 1)
    replayed = [
        steps_until_fall(env, data.observations[start], recorded_actor(data.actions[start : fall + 1]), k) == k
        for start, fall in zip(starts, falls)
    ]
    return LookBack(
        k=k, n_falls=len(falls), n_skipped=int((~exact).sum()), **measure_states(agent, env, data, starts, args),
        replay_check=float(np.mean(replayed)) if replayed else math.nan,
    )


def measure_states(
    agent: SMBPO, env: gym.Env, data: RealTransitions, indices: np.ndarray, args: argparse.Namespace
) -> dict[str, float]:
    """Model hit rate, min Q and the current policy's real fall rates from the given real states
    (all NaN when there is none)."""
    if len(indices) == 0:
        keys = ("model_hit_rate", "q_min", "real_fall_rate_deterministic", "real_fall_rate_stochastic")
        return dict.fromkeys(keys, math.nan)
    deterministic, stochastic = [], []
    for obs in data.observations[indices]:
        deterministic.append(steps_until_fall(env, obs, policy_actor(agent, True), args.recovery_steps) is not None)
        stochastic.extend(
            steps_until_fall(env, obs, policy_actor(agent, False), args.recovery_steps) is not None
            for _ in range(args.real_reps)
        )
    return {
        "model_hit_rate": model_hit_rate(agent, data.observations[indices], args.reps),
        "q_min": float(q_min(agent, data.observations[indices]).mean()),
        "real_fall_rate_deterministic": float(np.mean(deterministic)),
        "real_fall_rate_stochastic": float(np.mean(stochastic)),
    }


def control_states(data: RealTransitions, falls: np.ndarray, first: int, gap: int, n: int, seed: int) -> np.ndarray:
    """Indices of up to ``n`` states after ``first`` that are at least ``gap`` steps before any fall
    (and before the end of the data)."""
    candidates = np.arange(first, len(data.observations) - gap)
    next_fall = np.searchsorted(falls, candidates)
    far = np.ones(len(candidates), dtype=bool)
    has_next = next_fall < len(falls)
    far[has_next] = falls[next_fall[has_next]] - candidates[has_next] >= gap
    pool = candidates[far]
    return np.random.default_rng(seed).choice(pool, size=min(n, len(pool)), replace=False)


def analyse(args: argparse.Namespace) -> dict[str, Any]:
    env = gym.make(args.env)
    agent = SMBPO.load(Path(args.checkpoint) / "model.zip", env=env, device=args.device)
    agent.load_replay_buffer(Path(args.checkpoint) / "replay_buffer.pkl")
    agent.set_random_seed(args.seed)
    env.reset(seed=args.seed)
    data = RealTransitions.from_agent(agent)
    all_falls = np.flatnonzero(env.unwrapped.is_unsafe(data.next_observations))
    first = max(0, len(data.observations) - args.window)
    late_falls = all_falls[all_falls >= first]
    if late_falls.size == 0:
        raise ValueError(f"smbpo_falls: no violation among the last {args.window} real transitions")
    look_backs = [analyse_look_back(agent, env, data, late_falls, k, args) for k in args.look_back]
    controls = control_states(data, all_falls, first, args.recovery_steps, args.controls, args.seed)
    controls = controls[[rebuilds_exactly(env, data, index) for index in controls]]
    return {
        "checkpoint": str(args.checkpoint),
        "env": args.env,
        "real_steps": len(data.observations),
        "window": args.window,
        "falls_in_window": int(late_falls.size),
        "penalty_c": agent.penalty_c,
        "absorbing_value": -agent.penalty_c / (1.0 - agent.gamma),
        "rollout_horizon": agent.rollout_horizon,
        "settings": {k: v for k, v in vars(args).items() if k not in ("checkpoint", "out")},
        "look_back": [asdict(item) for item in look_backs],
        "controls": {"n": int(controls.size), **measure_states(agent, env, data, controls, args)},
    }


def plot(report: dict[str, Any], path: Path) -> None:
    rows = report["look_back"]
    ks = [row["k"] for row in rows]
    with saved_figure(path, 1, 2, figsize=(10, 4)) as (fig, (ax_rates, ax_q)):
        ax_rates.plot(ks, [row["model_hit_rate"] for row in rows], "o-", label="model rollouts hit unsafe within H")
        for key, marker, label in (
            ("real_fall_rate_deterministic", "s-", "real: current policy (mode) falls"),
            ("real_fall_rate_stochastic", "^-", "real: current policy (sampled) falls"),
        ):
            ax_rates.plot(ks, [row[key] for row in rows], marker, label=label)
        ax_rates.axhline(
            report["controls"]["real_fall_rate_deterministic"],
            color="green",
            ls="--",
            label="real: mode falls, from states that stayed up",
        )
        ax_rates.axvline(report["rollout_horizon"], color="grey", ls=":", label="model horizon H")
        ax_rates.set(xlabel="steps before the fall (k)", ylabel="fraction", ylim=(-0.05, 1.05))
        ax_rates.legend(fontsize=7)
        ax_q.plot(ks, [row["q_min"] for row in rows], "o-", label="min Q at s_(t-k)")
        ax_q.axhline(report["controls"]["q_min"], color="green", ls="--", label="min Q far from falls")
        ax_q.axhline(report["absorbing_value"], color="red", ls="--", label="-C / (1 - gamma)")
        ax_q.set(xlabel="steps before the fall (k)", ylabel="min twin Q")
        ax_q.legend(fontsize=7)
        fig.suptitle(f"{report['env']}: {report['falls_in_window']} falls in the last {report['window']} real steps")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="folder with model.zip and replay_buffer.pkl")
    parser.add_argument("--env", default="SafeHopper-v0")
    parser.add_argument("--window", type=int, default=7500, help="last N real steps whose falls are analysed")
    parser.add_argument("--look-back", type=int, nargs="+", default=[1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 75, 100, 150])
    parser.add_argument("--reps", type=int, default=50, help="model rollouts per state")
    parser.add_argument("--real-reps", type=int, default=5, help="real runs of the sampled policy per state")
    parser.add_argument("--recovery-steps", type=int, default=200, help="real steps a run must stay up")
    parser.add_argument("--controls", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True, help="output prefix: writes <out>.json and <out>.png")
    args = parser.parse_args(argv)
    if min(args.look_back) < 1:
        parser.error("--look-back values must be >= 1")
    if max(args.look_back) >= args.recovery_steps:
        parser.error("--recovery-steps must exceed every --look-back value (the recorded fall must lie inside it)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = analyse(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    plot(report, out.with_suffix(".png"))
    print(json.dumps({key: report[key] for key in ("falls_in_window", "penalty_c", "look_back", "controls")}, indent=1))
    return report


if __name__ == "__main__":
    main()
