"""The evaluation core shared by every shooting planner: batched rollouts in a dynamics model.

A candidate (an open-loop action sequence or a closed-loop tiny policy) is scored by its summed
predicted reward and summed predicted cost over the planning horizon. All the candidates of one
generation are rolled out together: each model step is one batched forward pass over them.

Planning works on NumPy arrays, not torch tensors: the batches are tiny (5 to 100 candidates,
50 hidden units) so the cost is per-operation overhead, and NumPy's is several times lower than
torch's on CPU (measured on this project's machine: one D(AR)MDN step for 5 candidates, 4 output
dimensions, 223 us in NumPy vs 637 us in torch with one thread). The model is trained in torch
and planned with through a NumPy snapshot of its weights
(:meth:`~sb3_safe.common.mdn.MDNDynamicsModel.numpy_step`); for the GuSS architecture whole
rollouts run as compiled kernels on that snapshot (:mod:`sb3_safe.guss.compiled`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from gymnasium import spaces

CostFunction = Callable[[np.ndarray], np.ndarray]
"""A batched safety predicate or cost on observations: (batch, obs_dim) -> (batch,) bool or float."""

DescriptorFunction = Callable[[np.ndarray], np.ndarray]
"""Maps predicted observations (n, horizon + 1, obs_dim) to behaviour descriptors (n, n_descriptors)."""


class DynamicsModel(Protocol):
    """What a planner needs from a model: one batched step (a learned MDN or an exact simulator)."""

    def step(self, observations: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Return next observations (n, obs_dim), rewards (n,) and costs (n,) or None."""
        ...


@dataclass
class RolloutResult:
    """Scores of a batch of candidates rolled out in the model.

    :param returns: summed predicted rewards, shape (n,)
    :param costs: summed predicted costs, shape (n,)
    :param observations: predicted observations including the start, shape (n, horizon + 1, obs_dim)
    :param first_actions: the action each candidate takes at the start state, shape (n, *action_shape)
    """

    returns: np.ndarray
    costs: np.ndarray
    observations: np.ndarray
    first_actions: np.ndarray


class BatchedMLPPolicies:
    """A population of tiny MLP policies evaluated in one batched pass (GuSS's policy search space).

    Reference: Paolo et al., GuSS (2022), supplementary table 5.1: fully connected policies with
    sigmoid hidden activations (1 x 5 hidden units, 26 parameters for Safe Pendulum; 2 x 5, 83
    parameters for Safe Acrobot). With ``normalize_inputs`` observations are divided by the
    observation-space bound where it is finite; otherwise the policies see them raw (the paper does
    not say which; the controllers of the authors' earlier code, SERENE, take raw inputs).
    Continuous outputs go through tanh and are mapped to the action bounds; discrete
    policies output one logit per action and act with the arg-max (a deterministic categorical
    policy). Parameters are flat vectors, so mutation is vector noise.

    :param observation_space: flat Box observation space
    :param action_space: Box (bounded) or Discrete action space
    :param hidden_sizes: hidden layer sizes
    :param normalize_inputs: divide observations by their finite bounds before the first layer
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        hidden_sizes: Sequence[int],
        normalize_inputs: bool = True,
    ) -> None:
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(f"GuSS policies need a flat Box observation space, got {observation_space}")
        self.discrete = isinstance(action_space, spaces.Discrete)
        if self.discrete:
            output_dim = int(action_space.n)
            self.low = self.high = None
        elif isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
            if not (np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
                raise ValueError(f"GuSS policies need a bounded Box action space, got {action_space}")
            output_dim = int(action_space.shape[0])
            self.low = np.asarray(action_space.low, dtype=np.float32)
            self.high = np.asarray(action_space.high, dtype=np.float32)
        else:
            raise ValueError(f"GuSS policies need a Discrete or flat Box action space, got {action_space}")
        high = np.asarray(observation_space.high, dtype=np.float64)
        scale = np.ones_like(high)
        bounded = np.isfinite(high) & (np.abs(high) > 0) & bool(normalize_inputs)
        scale[bounded] = 1.0 / np.abs(high[bounded])
        self.obs_scale = scale.astype(np.float32)
        self.sizes = [int(observation_space.shape[0]), *[int(h) for h in hidden_sizes], output_dim]
        if any(size < 1 for size in self.sizes):
            raise ValueError(f"policy hidden sizes must be positive, got {list(hidden_sizes)}")
        self.n_params = sum(self.sizes[i] * self.sizes[i + 1] + self.sizes[i + 1] for i in range(len(self.sizes) - 1))

    def unpack(self, params: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Views of the flat parameters as per-layer (weight (n, in, out), bias (n, 1, out)) pairs.

        :param params: flat parameters, shape (n, n_params)
        :return: one (weight, bias) pair per layer
        """
        if params.ndim != 2 or params.shape[1] != self.n_params:
            raise ValueError(f"policy parameters must have shape (n, {self.n_params}), got {tuple(params.shape)}")
        layers, offset = [], 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            weight = params[:, offset : offset + fan_in * fan_out].reshape(-1, fan_in, fan_out)
            offset += fan_in * fan_out
            layers.append((weight, params[:, None, offset : offset + fan_out]))
            offset += fan_out
        return layers

    def act_unpacked(self, layers: list[tuple[np.ndarray, np.ndarray]], observations: np.ndarray) -> np.ndarray:
        """Actions of ``n`` policies given by :meth:`unpack`, each on its own observation (n, obs_dim)."""
        hidden = (observations * self.obs_scale)[:, None, :]
        last = len(layers) - 1
        for index, (weight, bias) in enumerate(layers):
            hidden = np.matmul(hidden, weight) + bias
            if index < last:
                hidden = 0.5 * (np.tanh(0.5 * hidden) + 1.0)  # sigmoid, without overflow warnings
        out = hidden[:, 0, :]
        if self.discrete:
            return out.argmax(axis=-1)
        return self.low + (self.high - self.low) * 0.5 * (np.tanh(out) + 1.0)

    def act(self, params: np.ndarray, observations: np.ndarray) -> np.ndarray:
        """Actions of ``n`` policies, each on its own observation.

        :param params: flat parameters, shape (n, n_params)
        :param observations: shape (n, obs_dim)
        :return: (n, action_dim) float actions in the bounds, or (n,) long indices
        """
        return self.act_unpacked(self.unpack(params), observations)


class RolloutEvaluator:
    """Rolls batches of candidates out in a model and sums their predicted rewards and costs.

    Costs come from the learned cost head when the model returns one and ``cost_fn`` is None;
    otherwise from ``cost_fn`` (the env's batched safety predicate, True counted as cost 1)
    applied to each predicted next observation.

    A model with ``supports_rollouts = True`` (:class:`~sb3_safe.guss.policies.NumpyDynamics` of a
    learned MDN) also provides ``rollout_sequences`` and ``rollout_policies``, compiled whole-horizon
    rollouts, which are used instead of one Python step per time step; costs from ``cost_fn`` are
    then applied to the whole predicted trajectory at once.

    :param model: the dynamics model (see :class:`DynamicsModel`)
    :param horizon: planning horizon in model steps
    :param cost_fn: batched predicate/cost on observations, or None to use the model's cost head
    """

    def __init__(self, model: DynamicsModel, horizon: int, cost_fn: CostFunction | None = None) -> None:
        if horizon < 1:
            raise ValueError(f"the planning horizon must be >= 1, got {horizon}")
        self.model = model
        self.horizon = int(horizon)
        self.cost_fn = cost_fn

    def _step_costs(self, next_obs: np.ndarray, model_costs: np.ndarray | None) -> np.ndarray:
        if self.cost_fn is not None:
            values = np.asarray(self.cost_fn(next_obs), dtype=np.float32).reshape(-1)
            if values.shape[0] != next_obs.shape[0]:
                raise ValueError(
                    f"cost_fn returned {values.shape[0]} values for a batch of {next_obs.shape[0]} observations; "
                    "it must be batched over the leading dimension"
                )
            return values
        if model_costs is None:
            raise ValueError(
                "no cost source: give the planner a cost_fn (the env's is_unsafe predicate) "
                "or use a dynamics model with a cost head (cost_source='learned')"
            )
        return model_costs

    def _rollout(self, start: np.ndarray, n: int, action_at: Callable[[int, np.ndarray], np.ndarray]) -> RolloutResult:
        start = np.asarray(start, dtype=np.float32).reshape(1, -1)
        obs = np.broadcast_to(start, (n, start.shape[1]))
        trajectory = [obs]
        returns = np.zeros(n, dtype=np.float32)
        costs = np.zeros(n, dtype=np.float32)
        first_actions = None
        for t in range(self.horizon):
            actions = action_at(t, obs)
            if first_actions is None:
                first_actions = actions
            obs, rewards, model_costs = self.model.step(obs, actions)
            returns = returns + rewards
            costs = costs + self._step_costs(obs, model_costs)
            trajectory.append(obs)
        assert first_actions is not None
        return RolloutResult(returns, costs, np.stack(trajectory, axis=1), first_actions)

    def _trajectory_costs(self, trajectory: np.ndarray, model_costs: np.ndarray | None) -> np.ndarray:
        """Summed costs of whole predicted trajectories (the cost of each predicted next observation)."""
        n, length, obs_dim = trajectory.shape
        if self.cost_fn is None:
            return self._step_costs(trajectory[:, -1], model_costs)  # the model's own sums, checked
        return self._step_costs(trajectory[:, 1:].reshape(-1, obs_dim), None).reshape(n, length - 1).sum(axis=1)

    def evaluate_sequences(self, start: np.ndarray, action_sequences: np.ndarray) -> RolloutResult:
        """Score open-loop action sequences from one start observation.

        :param start: the current observation, shape (obs_dim,)
        :param action_sequences: (n, horizon, action_dim) floats or (n, horizon) indices
        :return: the candidates' returns, costs and predicted trajectories
        """
        if action_sequences.shape[1] < self.horizon:
            raise ValueError(f"action sequences of length {action_sequences.shape[1]} < horizon {self.horizon}")
        if getattr(self.model, "supports_rollouts", False):
            trajectory, returns, model_costs = self.model.rollout_sequences(start, action_sequences, self.horizon)
            costs = self._trajectory_costs(trajectory, model_costs)
            return RolloutResult(returns, costs, trajectory, action_sequences[:, 0])
        return self._rollout(start, action_sequences.shape[0], lambda t, _obs: action_sequences[:, t])

    def evaluate_policies(self, start: np.ndarray, policies: BatchedMLPPolicies, params: np.ndarray) -> RolloutResult:
        """Score closed-loop policies from one start observation.

        :param start: the current observation, shape (obs_dim,)
        :param policies: the policy architecture
        :param params: flat parameters, shape (n, n_params)
        :return: the candidates' returns, costs and predicted trajectories
        """
        if getattr(self.model, "supports_rollouts", False):
            trajectory, returns, model_costs, first_actions = self.model.rollout_policies(
                start, policies, params, self.horizon
            )
            return RolloutResult(returns, self._trajectory_costs(trajectory, model_costs), trajectory, first_actions)
        layers = policies.unpack(params)
        return self._rollout(start, params.shape[0], lambda _t, obs: policies.act_unpacked(layers, obs))


def lexicographic_order(costs: np.ndarray, returns: np.ndarray) -> np.ndarray:
    """Indices sorting candidates by cost (ascending), ties broken by return (descending).

    Used by S-RS, RCEM and GuSS. Equal (cost, return) pairs keep their input order.

    :param costs: shape (n,)
    :param returns: shape (n,)
    :return: permutation, best first
    """
    # np.lexsort is stable and sorts by its last key first.
    return np.lexsort((-np.asarray(returns), np.asarray(costs)))


def pendulum_angle_descriptor(observations: np.ndarray) -> np.ndarray:
    """GuSS's Safe Pendulum descriptor: the angle θ at half the horizon and at its end.

    :param observations: (n, horizon + 1, 3) with (cos θ, sin θ, θ̇)
    :return: (n, 2) angles in [-π, π]
    """
    horizon = observations.shape[1] - 1
    picked = observations[:, [max(horizon // 2, 1), horizon]]
    return np.arctan2(picked[..., 1], picked[..., 0])


def acrobot_tip_descriptor(observations: np.ndarray) -> np.ndarray:
    """GuSS's Safe Acrobot descriptor: the tip (x, y) at half the horizon and at its end.

    x = sin θ1 + sin(θ1 + θ2), y = −cos θ1 − cos(θ1 + θ2) (link lengths 1, pivot at the origin,
    y up), from the observation (cos θ1, sin θ1, cos θ2, sin θ2, θ̇1, θ̇2).

    :param observations: (n, horizon + 1, 6)
    :return: (n, 4): x and y at H/2, then x and y at H, each in [-2, 2]
    """
    horizon = observations.shape[1] - 1
    picked = observations[:, [max(horizon // 2, 1), horizon]]
    c1, s1, c2, s2 = picked[..., 0], picked[..., 1], picked[..., 2], picked[..., 3]
    x = s1 + (s1 * c2 + c1 * s2)
    y = -c1 - (c1 * c2 - s1 * s2)
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=-1)


# name -> (descriptor, lower bounds, upper bounds)
DESCRIPTORS: dict[str, tuple[DescriptorFunction, tuple[float, ...], tuple[float, ...]]] = {
    "pendulum_angle": (pendulum_angle_descriptor, (-math.pi, -math.pi), (math.pi, math.pi)),
    "acrobot_tip": (acrobot_tip_descriptor, (-2.0, -2.0, -2.0, -2.0), (2.0, 2.0, 2.0, 2.0)),
}

# The descriptors of SPEC.md 2.4 for the GuSS envs; other envs name one or pass a callable.
ENV_DESCRIPTORS: dict[str, str] = {"SafePendulum-v0": "pendulum_angle", "SafeAcrobot-v0": "acrobot_tip"}

# GuSS's searched policies per env (table 5.1: 26 parameters, 1 x 5, and 83 parameters, 2 x 5).
ENV_POLICY_ARCHS: dict[str, tuple[int, ...]] = {"SafePendulum-v0": (5,), "SafeAcrobot-v0": (5, 5)}
DEFAULT_POLICY_ARCH: tuple[int, ...] = (5,)
