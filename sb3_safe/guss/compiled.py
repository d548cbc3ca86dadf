"""Compiled planning rollouts: a whole horizon of a D(AR)MDN model (and of GuSS's tiny policies) in one call.

Why hand-written kernels (numba) rather than NumPy or torch: a planner evaluates ~100 candidates
per control step in small batches (GuSS: 25, then generations of 5), and a NumPy model step costs
about 150 us whatever the batch, since it is a few dozen array operations of per-call overhead
(each output dimension of the auto-regressive network needs its own small matmuls). GuSS's 16
sequential batches per control step thus cost about three times CEM's 5 although both evaluate 100
candidates. Compiled, a candidate's rollout is a loop of scalar arithmetic with no per-operation
overhead: the cost becomes proportional to the number of candidates, about 4 us per candidate and
model step for the Pendulum model on one idle core of the reference machine, for every batch size.
numba compiles exactly such loops; ``torch.compile`` was not tried (the planners work in NumPy).

The kernels compute what :class:`~sb3_safe.common.mdn.NumpyMDNPredictor` and
:class:`~sb3_safe.guss.rollout.BatchedMLPPolicies` compute, in float32 storage with ``fastmath``
(reassociated sums, a float32-accurate rational tanh): they agree with the NumPy path to about
1e-6, not bit for bit. They are used when the model's hidden layers all have the same size (the
GuSS architecture); other models use the NumPy path.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from sb3_safe.common.mdn import MDNDynamicsModel


@njit(cache=True, fastmath=True)
def _tanh(x: float) -> float:
    # Eigen's float32 rational approximation (the one XLA uses for float32 tanh); libm's tanh is a
    # scalar call that dominates these loops. A few float32 ulps from tanh on [-9, 9]; beyond, tanh
    # is +-1 to float32 precision.
    if x > 9.0:
        x = 9.0
    elif x < -9.0:
        x = -9.0
    x2 = x * x
    p = x2 * -2.76076847742355e-16 + 2.00018790482477e-13
    p = x2 * p + -8.60467152213735e-11
    p = x2 * p + 5.12229709037114e-08
    p = x2 * p + 1.48572235717979e-05
    p = x2 * p + 6.37261928875436e-04
    p = x2 * p + 4.89352455891786e-03
    q = x2 * 1.19825839466702e-06 + 1.18534705686654e-04
    q = x2 * q + 2.26843463243900e-03
    q = x2 * q + 4.89352518554385e-03
    return x * p / q


@njit(cache=True, fastmath=True)
def _mdn_predict_row(x, net, k, pre, a, b, o, y):  # type: ignore[no-untyped-def]
    """Deterministic D(AR)MDN output (mean of the most probable component) for one input row ``x``."""
    in_w, in_b, y_w, hid_w, hid_b, out_w, out_b = net
    n_dims, hidden = in_b.shape
    n_out = out_w.shape[2]
    for d in range(n_dims):
        for j in range(hidden):
            pre[d, j] = in_b[d, j]
    for c in range(x.shape[0]):
        xc = x[c]
        for d in range(n_dims):
            for j in range(hidden):
                pre[d, j] += xc * in_w[c, d, j]
    for d in range(n_dims):
        for j in range(hidden):
            a[j] = _tanh(pre[d, j])
        for layer in range(hid_w.shape[0]):
            for j in range(hidden):
                b[j] = hid_b[layer, d, j]
            for c in range(hidden):
                ac = a[c]
                for j in range(hidden):
                    b[j] += ac * hid_w[layer, d, c, j]
            for j in range(hidden):
                a[j] = _tanh(b[j])
        for j in range(n_out):
            o[j] = out_b[d, j]
        for c in range(hidden):
            ac = a[c]
            for j in range(n_out):
                o[j] += ac * out_w[d, c, j]
        best = 0
        for j in range(1, k):
            if o[j] > o[best]:
                best = j
        value = o[k + best]
        y[d] = value
        # Auto-regression: dimension d feeds the first layer of the later ones (y_w is 0 for DMDN).
        for later in range(d + 1, n_dims):
            for j in range(hidden):
                pre[later, j] += y_w[later, d, j] * value


@njit(cache=True, fastmath=True)
def _model_step_row(obs, action, next_obs, stats, net, k, predict_cost, scratch):  # type: ignore[no-untyped-def]
    """One model step of one candidate: writes ``next_obs``, returns (reward, cost)."""
    in_mean, in_std, t_mean, t_std = stats
    x, pre, a, b, o, y = scratch
    obs_dim = obs.shape[0]
    for c in range(obs_dim):
        x[c] = (obs[c] - in_mean[c]) / in_std[c]
    for c in range(action.shape[0]):
        x[obs_dim + c] = (action[c] - in_mean[obs_dim + c]) / in_std[obs_dim + c]
    _mdn_predict_row(x, net, k, pre, a, b, o, y)
    for c in range(obs_dim):
        next_obs[c] = obs[c] + (y[c] * t_std[c] + t_mean[c])
    reward = y[obs_dim] * t_std[obs_dim] + t_mean[obs_dim]
    cost = 0.0
    if predict_cost:
        cost = np.floor(max(y[obs_dim + 1] * t_std[obs_dim + 1] + t_mean[obs_dim + 1], 0.0) + 0.5)
    return reward, cost


@njit(cache=True)
def _scratch(net, n_inputs):  # type: ignore[no-untyped-def]
    in_b, out_w = net[1], net[5]
    n_dims, hidden = in_b.shape
    return (
        np.empty(n_inputs, np.float32),
        np.empty((n_dims, hidden), np.float32),
        np.empty(hidden, np.float32),
        np.empty(hidden, np.float32),
        np.empty(out_w.shape[2], np.float32),
        np.empty(n_dims, np.float32),
    )


@njit(cache=True, fastmath=True)
def _rollout_sequences(start, actions, stats, net, k, predict_cost, trajectory, returns, costs):  # type: ignore[no-untyped-def]
    scratch = _scratch(net, stats[0].shape[0])
    for i in range(actions.shape[0]):
        trajectory[i, 0, :] = start
        total_reward, total_cost = 0.0, 0.0
        for t in range(actions.shape[1]):
            reward, cost = _model_step_row(
                trajectory[i, t], actions[i, t], trajectory[i, t + 1], stats, net, k, predict_cost, scratch
            )
            total_reward += reward
            total_cost += cost
        returns[i] = total_reward
        costs[i] = total_cost


@njit(cache=True, fastmath=True)
def _policy_row(params, sizes, inputs, a, b):  # type: ignore[no-untyped-def]
    """Forward pass of one flat-parameter sigmoid MLP (BatchedMLPPolicies' layout); returns the output slice."""
    width = sizes[0]
    for c in range(width):
        a[c] = inputs[c]
    offset = 0
    n_layers = sizes.shape[0] - 1
    for layer in range(n_layers):
        fan_in, fan_out = sizes[layer], sizes[layer + 1]
        bias = offset + fan_in * fan_out
        for j in range(fan_out):
            b[j] = params[bias + j]
        for c in range(fan_in):
            ac = a[c]
            row = offset + c * fan_out
            for j in range(fan_out):
                b[j] += ac * params[row + j]
        offset = bias + fan_out
        for j in range(fan_out):
            a[j] = 0.5 * (_tanh(0.5 * b[j]) + 1.0) if layer < n_layers - 1 else b[j]
    return a[: sizes[n_layers]]


@njit(cache=True, fastmath=True)
def _rollout_policies(  # type: ignore[no-untyped-def]
    start, params, sizes, obs_scale, low, high, discrete, horizon, stats, net, k, predict_cost,
    trajectory, returns, costs, first_actions,
):
    n_model_actions = stats[0].shape[0] - start.shape[0]
    scratch = _scratch(net, stats[0].shape[0])
    width = np.max(sizes)
    a, b = np.empty(width, np.float32), np.empty(width, np.float32)
    inputs = np.empty(start.shape[0], np.float32)
    action = np.empty(n_model_actions, np.float32)
    for i in range(params.shape[0]):
        trajectory[i, 0, :] = start
        total_reward, total_cost = 0.0, 0.0
        for t in range(horizon):
            obs = trajectory[i, t]
            for c in range(obs.shape[0]):
                inputs[c] = obs[c] * obs_scale[c]
            out = _policy_row(params[i], sizes, inputs, a, b)
            if discrete:
                best = 0
                for j in range(1, out.shape[0]):
                    if out[j] > out[best]:
                        best = j
                action[:] = 0.0
                action[best] = 1.0
                if t == 0:
                    first_actions[i, 0] = best
            else:
                for c in range(out.shape[0]):
                    action[c] = low[c] + (high[c] - low[c]) * 0.5 * (_tanh(out[c]) + 1.0)
                if t == 0:
                    first_actions[i, :] = action
            reward, cost = _model_step_row(obs, action, trajectory[i, t + 1], stats, net, k, predict_cost, scratch)
            total_reward += reward
            total_cost += cost
        returns[i] = total_reward
        costs[i] = total_cost


class PackedMDN(NamedTuple):
    """A fitted :class:`MDNDynamicsModel` in the kernels' layout (float32, C-contiguous); its fields
    are the kernels' model arguments, in order.

    :param stats: input mean, input std, target mean, target std
    :param net: first-layer weight (inputs, dims, hidden), its bias (dims, hidden), auto-regressive
        weights (dims, dims, hidden; zeros for DMDN), hidden-to-hidden weights (layers - 1, dims,
        hidden, hidden) and biases, output weights (dims, hidden, 3 * components) and biases
    :param n_components: mixture components
    :param predict_cost: whether the last output dimension is a cost
    """

    stats: tuple[np.ndarray, ...]
    net: tuple[np.ndarray, ...]
    n_components: int
    predict_cost: bool


def can_compile(model: MDNDynamicsModel) -> bool:
    """Whether the kernels support ``model``: all hidden layers of its per-dimension MLPs equal in size."""
    return len(set(model.network.net_arch)) == 1


def pack(model: MDNDynamicsModel) -> PackedMDN:
    """The model's current weights and normalisers in the kernels' layout."""
    predictor, stats = model.numpy_snapshot()
    n_dims, hidden = predictor.output_dim, predictor.hidden
    contiguous = np.ascontiguousarray
    hidden_weights = predictor.weights[:-1]
    net = (
        contiguous(predictor.input_weight.reshape(-1, n_dims, hidden)),
        contiguous(predictor.input_bias),
        contiguous(predictor.y_weight) if predictor.y_weight is not None else np.zeros((n_dims, n_dims, hidden), np.float32),
        contiguous(np.stack(hidden_weights)) if hidden_weights else np.zeros((0, n_dims, hidden, hidden), np.float32),
        contiguous(np.stack([bias[:, 0] for bias in predictor.biases[:-1]]))
        if hidden_weights
        else np.zeros((0, n_dims, hidden), np.float32),
        contiguous(predictor.weights[-1]),
        contiguous(predictor.biases[-1][:, 0]),
    )
    return PackedMDN(tuple(contiguous(s, dtype=np.float32) for s in stats), net, predictor.k, model.predict_cost)


def _rollout_outputs(n: int, horizon: int, obs_dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empty predicted observations (n, horizon + 1, obs_dim), summed rewards and summed costs (n,)."""
    return np.empty((n, horizon + 1, obs_dim), np.float32), np.empty(n, np.float32), np.empty(n, np.float32)


def rollout_sequences(
    packed: PackedMDN, start: np.ndarray, actions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Roll model-encoded action sequences out from ``start``.

    :param packed: the model (:func:`pack`)
    :param start: shape (obs_dim,)
    :param actions: model inputs of the actions (one-hot for discrete actions), shape (n, horizon, n_action_inputs)
    :return: predicted observations (n, horizon + 1, obs_dim), summed rewards (n,), summed model costs (n,)
    """
    outputs = _rollout_outputs(actions.shape[0], actions.shape[1], start.shape[0])
    _rollout_sequences(
        np.ascontiguousarray(start, dtype=np.float32), np.ascontiguousarray(actions, dtype=np.float32), *packed, *outputs
    )
    return outputs


def rollout_policies(
    packed: PackedMDN,
    start: np.ndarray,
    params: np.ndarray,
    sizes: np.ndarray,
    obs_scale: np.ndarray,
    low: np.ndarray | None,
    high: np.ndarray | None,
    horizon: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Roll closed-loop sigmoid MLP policies (flat parameters as in BatchedMLPPolicies) out from ``start``.

    :param packed: the model (:func:`pack`)
    :param start: shape (obs_dim,)
    :param params: flat policy parameters, shape (n, n_params)
    :param sizes: layer sizes, input to output
    :param obs_scale: factors applied to the observations before the policy
    :param low: lower action bounds (continuous), or None for discrete arg-max policies
    :param high: upper action bounds (continuous), or None
    :param horizon: planning horizon
    :return: predicted observations (n, horizon + 1, obs_dim), summed rewards (n,), summed model
        costs (n,), and the first actions: (n, action_dim) floats, or (n,) int64 indices when discrete
    """
    discrete = low is None
    outputs = _rollout_outputs(params.shape[0], horizon, start.shape[0])
    first_actions = np.empty((params.shape[0], 1 if discrete else len(low)), np.float32)  # type: ignore[arg-type]
    no_bounds = np.zeros(0, np.float32)
    _rollout_policies(
        np.ascontiguousarray(start, dtype=np.float32),
        np.ascontiguousarray(params, dtype=np.float32),
        np.asarray(sizes, dtype=np.int64),
        np.ascontiguousarray(obs_scale, dtype=np.float32),
        no_bounds if discrete else np.ascontiguousarray(low, dtype=np.float32),
        no_bounds if discrete else np.ascontiguousarray(high, dtype=np.float32),
        discrete,
        int(horizon),
        *packed,
        *outputs,
        first_actions,
    )
    return *outputs, first_actions[:, 0].astype(np.int64) if discrete else first_actions
