"""The exact-model shield: estimate an action's violation probability by simulating it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.mujoco import MujocoEnv
from stable_baselines3.common.base_class import BaseAlgorithm

from sb3_safe.common.cost import env_name, read_cost, read_violation
from sb3_safe.shields.base import Shield, ShieldDecision

RolloutPolicy = BaseAlgorithm | Callable[[np.ndarray], np.ndarray] | None
GetState = Callable[[gym.Env], Any]
SetState = Callable[[gym.Env, Any], None]


def _mujoco_get_state(env: gym.Env) -> np.ndarray:
    model, data = env.unwrapped.model, env.unwrapped.data
    state = np.empty(mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_INTEGRATION))
    mujoco.mj_getState(model, data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
    return state


def _mujoco_set_state(env: gym.Env, state: np.ndarray) -> None:
    mujoco.mj_setState(env.unwrapped.model, env.unwrapped.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)


def _attribute_get_state(env: gym.Env) -> Any:
    return copy.deepcopy(env.unwrapped.state)


def _attribute_set_state(env: gym.Env, state: Any) -> None:
    env.unwrapped.state = copy.deepcopy(state)


def _state_functions(env: gym.Env, get_state: GetState | None, set_state: SetState | None) -> tuple[GetState, SetState]:
    if (get_state is None) != (set_state is None):
        raise ValueError("SimulatorShield needs both get_state and set_state, or neither")
    if get_state is not None and set_state is not None:
        return get_state, set_state
    if isinstance(env.unwrapped, MujocoEnv):
        return _mujoco_get_state, _mujoco_set_state
    if hasattr(env.unwrapped, "state"):
        return _attribute_get_state, _attribute_set_state
    raise TypeError(
        f"SimulatorShield cannot copy the simulator state of env '{env_name(env)}': it supports Gymnasium "
        "MuJoCo envs and envs keeping their state in a `state` attribute (classic control). "
        "Pass get_state(env) and set_state(env, state) for other simulators."
    )


class SimulatorShield(Shield):
    """The exact-model shield of AMBS Theorem 1, using a copy of the simulator as the model.

    Goodall and Belardinelli, *Approximate Model-Based Shielding for Safe Reinforcement
    Learning* (ECAI 2023), Theorem 1: with access to the true transition model, the
    probability that an action leads to a violation within ``horizon`` steps under a policy
    can be estimated to any precision by sampling ``n_traces`` traces. Before each real step
    this shield copies the simulator state into ``n_traces`` private copies of the env stack
    below the :class:`~sb3_safe.wrappers.SafetyShield`, plays the proposed action followed by
    ``horizon - 1`` actions of the rollout policy in each, and counts the traces that reach a
    violation (``info["violation"]``, or a positive ``info["cost"]``). If the violating
    fraction exceeds ``threshold`` it estimates the risk of candidate actions the same way
    (all actions of a Discrete space; ``n_candidates`` uniform samples of a Box) and
    substitutes the least risky one, if it is less risky than the proposal.

    The AMBS paper shields a learned world model with m = 512 traces, T = 30 and a threshold of
    0.01; the defaults here are smaller because the exact simulator is stepped in Python.
    The env stack below the SafetyShield is deep-copied at every reset; before each estimate the
    simulator state and the state of every wrapper below the shield (e.g. ``CostWrapper``'s last
    observation, ``TimeLimit``'s step count) are copied into the copies, so each trace starts
    where the real env stands, and each copy gets its own random stream drawn from the shield's
    generator, so that the traces of a stochastic env sample different outcomes. The copies never
    render. Wrappers that hold files (``Monitor``, ``CostMonitor``) must sit outside the SafetyShield.

    The shield's randomness follows the env's seed: after a reset that gives the env a new random
    generator (``reset(seed=...)``) the shield's generator is reseeded from that seed and ``seed``,
    so a seeded episode is reproducible, shield decisions included.

    :param policy: the policy that continues each trace: ``None`` for uniform random actions,
        an SB3 model (its stochastic ``predict``), or a function from a batch of observations
        to a batch of actions
    :param n_traces: number of sampled traces m per estimate
    :param horizon: trace length T, the proposed action included
    :param threshold: the largest acceptable violation probability
    :param n_candidates: number of random candidate actions considered for a Box action space
    :param get_state: ``get_state(env) -> state`` for simulators other than MuJoCo and classic control
    :param set_state: ``set_state(env, state)``, the inverse of ``get_state``
    :param seed: seed of the rollout policy's, the candidates' and the traces' randomness
    """

    def __init__(
        self,
        policy: RolloutPolicy = None,
        n_traces: int = 32,
        horizon: int = 10,
        threshold: float = 0.05,
        n_candidates: int = 16,
        get_state: GetState | None = None,
        set_state: SetState | None = None,
        seed: int | None = None,
    ) -> None:
        if n_traces < 1 or horizon < 1 or n_candidates < 1:
            raise ValueError(
                f"SimulatorShield needs n_traces, horizon and n_candidates >= 1, got {n_traces}, {horizon}, {n_candidates}"
            )
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"SimulatorShield needs a threshold in [0, 1), got {threshold}")
        if policy is not None and not (isinstance(policy, BaseAlgorithm) or callable(policy)):
            raise TypeError(f"SimulatorShield's policy must be None, an SB3 model or a callable, got {policy!r}")
        self.policy = policy
        self.n_traces = n_traces
        self.horizon = horizon
        self.threshold = threshold
        self.n_candidates = n_candidates
        self.seed = seed
        self._custom_state_functions = (get_state, set_state)
        self._twins: list[gym.Env] = []
        # The env's random generator at the last reset: a different one means the env was reseeded.
        self._env_rng_seen: np.random.Generator | None = None

    def bind(self, env: gym.Env) -> None:
        space = env.action_space
        if not isinstance(space, (gym.spaces.Box, gym.spaces.Discrete)):
            raise TypeError(
                f"SimulatorShield supports Box and Discrete action spaces, env '{env_name(env)}' has {space}"
            )
        super().bind(env)
        self._action_space = copy.deepcopy(space)
        self._seed_generators(self.seed)

    def _seed_generators(self, seed: int | list[int] | None) -> None:
        """Seed the shield's generator and the copy of the action space it samples from."""
        self._rng = np.random.default_rng(seed)
        self._action_space.seed(int(self._rng.integers(2**32)))

    def _reseed_if_env_was_seeded(self) -> None:
        """Reseed the shield from the env's seed when a reset gave the env a new random generator.

        SafetyShield does not pass the reset's seed on, but Gymnasium's ``reset(seed=...)`` replaces
        ``unwrapped._np_random`` and records the seed in ``_np_random_seed``: that seed is what makes a
        seeded episode reproducible. A reset without a seed keeps the generator, and the shield goes on
        with its own stream; so does a shield on an env that never draws random numbers or whose
        generator was assigned without a recorded seed. An unseeded env creates its generator from a
        random seed on first use, and the shield then follows it: that env's episodes are random anyway.
        """
        assert self.env is not None
        env_rng = getattr(self.env.unwrapped, "_np_random", None)
        env_seed = getattr(self.env.unwrapped, "_np_random_seed", None)
        seed_recorded = isinstance(env_seed, (int, np.integer)) and env_seed >= 0
        if env_rng is None or env_rng is self._env_rng_seen or not seed_recorded:
            return
        self._env_rng_seen = env_rng
        # The shield's own seed is mixed in so that shields with different seeds still differ.
        self._seed_generators([int(env_seed)] if self.seed is None else [int(env_seed), self.seed])

    def reset(self, obs: Any, info: dict[str, Any]) -> None:
        # The copies are taken after every reset so that the wrappers below the shield start each
        # episode in the same state as the real ones; between resets only the simulator state is
        # transferred (copying whole env stacks at every step would cost far more).
        assert self.env is not None
        self._reseed_if_env_was_seeded()
        # Chosen here, not in bind(), because classic-control envs create `state` in reset().
        self._get_state, self._set_state = _state_functions(self.env, *self._custom_state_functions)
        try:
            self._twins = [copy.deepcopy(self.env) for _ in range(self.n_traces)]
        except Exception as exc:  # noqa: BLE001 - any copy failure gets the same explanation
            raise TypeError(
                f"SimulatorShield could not copy the env stack of '{env_name(self.env)}' ({exc}). Wrappers that hold "
                "files or processes (Monitor, CostMonitor, video recorders) must wrap the SafetyShield, not sit below it."
            ) from exc
        for twin in self._twins:
            # A copy of a "human" env would open a window of its own and redraw it at every simulated step.
            twin.unwrapped.render_mode = None

    def decide(self, obs: Any, action: Any) -> ShieldDecision:
        if not self._twins:
            raise RuntimeError("SimulatorShield.decide() was called before reset(); wrap the env with SafetyShield")
        state = self._get_state(self.env)
        risk = self.estimate_risk(state, action)
        if risk <= self.threshold:
            return ShieldDecision(intervene=False, risk=risk)
        best_action, best_risk = self._least_risky_candidate(state, action)
        if best_risk >= risk:
            return ShieldDecision(intervene=False, risk=risk)
        return ShieldDecision(intervene=True, action=best_action, risk=risk)

    def _least_risky_candidate(self, state: Any, proposed: Any) -> tuple[Any, float]:
        best_action, best_risk = None, np.inf
        for candidate in self._candidate_actions(proposed):
            risk = self.estimate_risk(state, candidate)
            if risk < best_risk:
                best_action, best_risk = candidate, risk
            if risk == 0.0:  # nothing can beat it: skip the remaining simulations
                break
        return best_action, best_risk

    def estimate_risk(self, state: Any, first_action: Any) -> float:
        """The fraction of sampled traces from ``state`` starting with ``first_action`` that violate.

        :param state: a simulator state from ``get_state``
        :param first_action: the action played first in every trace
        :return: the estimated violation probability
        """
        wrapper_states = _wrapper_states(self.env)
        for twin in self._twins:
            self._set_state(twin, state)
            _restore_wrapper_states(twin, wrapper_states)
        self._give_twins_own_random_streams()
        alive = np.ones(self.n_traces, dtype=bool)
        violated = np.zeros(self.n_traces, dtype=bool)
        observations: list[Any] = [None] * self.n_traces
        actions: list[Any] = [first_action] * self.n_traces
        for step in range(self.horizon):
            for idx in np.flatnonzero(alive):
                observations[idx], _, terminated, _, info = self._twins[idx].step(actions[idx])
                cost = read_cost(info, env_name(self.env), step)
                if read_violation(info, cost):
                    violated[idx] = True
                # A truncation does not end a trace: counters that an env keeps outside the copied
                # state would cut traces short and hide risk; running on past a time limit errs safe.
                if violated[idx] or terminated:
                    alive[idx] = False
            if step + 1 == self.horizon or not alive.any():
                break
            actions = self._rollout_actions(observations, alive)
        return float(violated.mean())

    def _give_twins_own_random_streams(self) -> None:
        """Give every copy a fresh generator drawn from the shield's: the copies were taken with the real
        env's generator, and copies sharing one state would sample the same outcome in every trace."""
        for twin, seed in zip(self._twins, self._rng.integers(2**63, size=len(self._twins))):
            twin.unwrapped.np_random = np.random.default_rng(int(seed))

    def _rollout_actions(self, observations: list[Any], alive: np.ndarray) -> list[Any]:
        if self.policy is None:
            return list(self._uniform_actions(len(alive)))
        live_obs = np.stack([observations[idx] for idx in np.flatnonzero(alive)])
        if isinstance(self.policy, BaseAlgorithm):
            live_actions, _ = self.policy.predict(live_obs, deterministic=False)
        else:
            live_actions = self.policy(live_obs)
        actions: list[Any] = [None] * len(alive)
        for idx, live_action in zip(np.flatnonzero(alive), live_actions):
            actions[idx] = live_action
        return actions

    def _candidate_actions(self, proposed: Any) -> list[Any]:
        if isinstance(self._action_space, gym.spaces.Discrete):
            start, n = int(self._action_space.start), int(self._action_space.n)
            return [np.int64(a) for a in range(start, start + n) if a != int(proposed)]
        return list(self._uniform_actions(self.n_candidates))

    def _uniform_actions(self, n: int) -> np.ndarray:
        """``n`` uniform random actions in one draw (``Space.sample`` one at a time dominated the run time)."""
        space = self._action_space
        if isinstance(space, gym.spaces.Discrete):
            return space.start + self._rng.integers(space.n, size=n)
        if space.is_bounded("both"):
            return self._rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(space.dtype)
        return np.stack([space.sample() for _ in range(n)])


# gym.Wrapper's own bookkeeping: the same in the copies, and the spaces are costly to copy.
_WRAPPER_BASE_ATTRIBUTES = frozenset(
    {"env", "_action_space", "_observation_space", "_reward_range", "_metadata", "_cached_spec", "_saved_kwargs"}
)


def _wrapper_states(env: gym.Env) -> list[dict[str, Any]]:
    """The per-episode state of each wrapper of ``env``'s stack, outermost first (attributes other than
    gym.Wrapper's own, e.g. ``CostWrapper._last_obs``, ``TimeLimit._elapsed_steps``)."""
    states = []
    while isinstance(env, gym.Wrapper):
        states.append({key: value for key, value in vars(env).items() if key not in _WRAPPER_BASE_ATTRIBUTES})
        env = env.env
    return states


def _restore_wrapper_states(twin: gym.Env, states: list[dict[str, Any]]) -> None:
    """Give each wrapper of ``twin`` (a deep copy of the stack the states came from) its own copy of them."""
    for state in states:
        assert isinstance(twin, gym.Wrapper)
        twin.__dict__.update(copy.deepcopy(state))
        twin = twin.env
