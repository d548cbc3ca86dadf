"""Deep (auto-regressive) mixture density networks used as dynamics models by GuSS (SPEC.md 2.4).

Reference: B. Kégl, G. Hurtado, A. Thomas, "Model-based micro-data reinforcement learning:
what are the crucial model properties and which model to choose?", ICLR 2021 (DARMDN), as used
by G. Paolo et al., "Guided Safe Shooting: model based reinforcement learning with safety
constraints" (GuSS), 2022.

One small MLP per output dimension predicts a 1-D Gaussian mixture for that dimension. In the
auto-regressive variant (D(AR)MDN) the MLP of dimension ``d`` is also conditioned on the
already-predicted dimensions ``y_<d``; the non-auto-regressive variant (DMDN) conditions on the
input only. All per-dimension MLPs are stored as stacked weight tensors, so training evaluates
every dimension in one batched pass (teacher forcing with a strictly lower-triangular mask on the
``y`` inputs) and prediction of a batch of candidate plans needs one pass per output dimension for
D(AR)MDN (inherent to auto-regression) and a single pass for DMDN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch as th
from torch import nn
from torch.nn import functional as F

from sb3_safe.common.holdout import persistent_holdout_split
from sb3_safe.common.normalization import std_or_one

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class DARMDN(nn.Module):
    """Deep auto-regressive mixture density network over normalised inputs and targets.

    Reference: Kégl et al., ICLR 2021 (see the module docstring). Output dimension ``d`` has its
    own MLP (``net_arch`` hidden layers, tanh) that maps ``(x, y_<d)`` to the logits, means and
    log standard deviations of an ``n_components`` 1-D Gaussian mixture. With
    ``autoregressive=False`` it is the DMDN of GuSS's car experiments (no conditioning on ``y``).

    :param input_dim: size of the conditioning input ``x``
    :param output_dim: number of predicted dimensions ``y``
    :param n_components: mixture components per output dimension (the papers do not state it;
        5 is our default)
    :param net_arch: hidden layer sizes of every per-dimension MLP (GuSS: two layers of 50)
    :param autoregressive: condition dimension ``d`` on ``y_<d`` (D(AR)MDN) or not (DMDN)
    :param min_log_std: lower bound of the predicted log standard deviations, for a stable NLL
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        n_components: int = 5,
        net_arch: Sequence[int] = (50, 50),
        autoregressive: bool = True,
        min_log_std: float = -7.0,
    ) -> None:
        super().__init__()
        if input_dim < 1 or output_dim < 1:
            raise ValueError(f"DARMDN needs input_dim >= 1 and output_dim >= 1, got {input_dim} and {output_dim}")
        if n_components < 1:
            raise ValueError(f"DARMDN needs n_components >= 1, got {n_components}")
        if len(net_arch) < 1 or any(int(size) < 1 for size in net_arch):
            raise ValueError(f"DARMDN needs at least one hidden layer of positive size, got net_arch={list(net_arch)}")
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.n_components = int(n_components)
        self.net_arch = [int(size) for size in net_arch]
        self.autoregressive = bool(autoregressive)
        self.min_log_std = float(min_log_std)

        sizes = [self.net_arch[0], *self.net_arch[1:], 3 * self.n_components]
        self.input_weight = nn.Parameter(self._init_weight(self.input_dim, sizes[0], self.input_dim + self.output_dim))
        # Strictly lower-triangular mask: dimension e sees y_d only for d < e.
        mask = th.tril(th.ones(self.output_dim, self.output_dim), diagonal=-1) if self.autoregressive else None
        if mask is not None:
            self.register_buffer("y_mask", mask)
            self.y_weight = nn.Parameter(self._init_weight(self.output_dim, sizes[0], self.input_dim + self.output_dim))
        self.biases = nn.ParameterList([nn.Parameter(th.zeros(self.output_dim, 1, size)) for size in sizes])
        self.weights = nn.ParameterList(
            [nn.Parameter(self._init_weight(sizes[i], sizes[i + 1], sizes[i])) for i in range(len(sizes) - 1)]
        )

    def _init_weight(self, fan_in: int, fan_out: int, scale_fan_in: int) -> th.Tensor:
        bound = 1.0 / math.sqrt(scale_fan_in)
        return th.empty(self.output_dim, fan_in, fan_out).uniform_(-bound, bound)

    def _masked_y_weight(self) -> th.Tensor:
        # (output_dim [receiving e], output_dim [source d], hidden)
        return self.y_weight * self.y_mask[:, :, None]

    def _mixture_params(self, out: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        k = self.n_components
        logits, means, log_stds = out[..., :k], out[..., k : 2 * k], out[..., 2 * k :]
        return logits, means, log_stds.clamp(min=self.min_log_std, max=5.0)

    def _hidden_to_output(self, pre_activation: th.Tensor) -> th.Tensor:
        """Run layers 2.. of every per-dimension MLP: (D, B, h0) -> (D, B, 3K)."""
        hidden = th.tanh(pre_activation)
        last = len(self.weights) - 1
        for index, weight in enumerate(self.weights):
            hidden = th.baddbmm(self.biases[index + 1], hidden, weight)
            if index < last:
                hidden = th.tanh(hidden)
        return hidden

    def _input_pre_activation(self, x: th.Tensor) -> th.Tensor:
        return th.einsum("bi,dih->dbh", x, self.input_weight) + self.biases[0]

    def log_prob(self, x: th.Tensor, y: th.Tensor) -> th.Tensor:
        """Log-density of ``y`` given ``x`` (teacher forcing for the auto-regressive inputs).

        :param x: inputs, shape (batch, input_dim)
        :param y: targets, shape (batch, output_dim)
        :return: log p(y | x) summed over output dimensions, shape (batch,)
        """
        pre = self._input_pre_activation(x)
        if self.autoregressive:
            pre = pre + th.einsum("bj,djh->dbh", y, self._masked_y_weight())
        logits, means, log_stds = self._mixture_params(self._hidden_to_output(pre))
        y_per_dim = y.T.unsqueeze(-1)  # (D, B, 1)
        component_log_prob = -0.5 * ((y_per_dim - means) / log_stds.exp()) ** 2 - log_stds - _LOG_SQRT_2PI
        per_dim = th.logsumexp(F.log_softmax(logits, dim=-1) + component_log_prob, dim=-1)  # (D, B)
        return per_dim.sum(dim=0)

    def _pick(self, out: th.Tensor, deterministic: bool, generator: th.Generator | None) -> th.Tensor:
        k = self.n_components
        if deterministic:
            # The "det" variant of GuSS: the mean of the most probable component.
            component = out[..., :k].argmax(dim=-1, keepdim=True)
            return out[..., k : 2 * k].gather(-1, component).squeeze(-1)
        logits, means, log_stds = self._mixture_params(out)
        probs = F.softmax(logits, dim=-1)
        flat = probs.reshape(-1, self.n_components)
        component = th.multinomial(flat, 1, generator=generator).reshape(*probs.shape[:-1], 1)
        noise = th.randn(means.shape[:-1], generator=generator, device=means.device, dtype=means.dtype)
        return means.gather(-1, component).squeeze(-1) + log_stds.gather(-1, component).squeeze(-1).exp() * noise

    def predict(self, x: th.Tensor, deterministic: bool = True, generator: th.Generator | None = None) -> th.Tensor:
        """Predict ``y`` for a batch of inputs.

        :param x: inputs, shape (batch, input_dim)
        :param deterministic: mean of the most probable component (True) or a sample (False)
        :param generator: torch random generator for sampling
        :return: predictions, shape (batch, output_dim)
        """
        pre = self._input_pre_activation(x)
        if not self.autoregressive:
            return self._pick(self._hidden_to_output(pre), deterministic, generator).T
        y_weight = self._masked_y_weight()
        outputs = []
        # One pass per output dimension: dimension d needs the values of y_<d.
        for d in range(self.output_dim):
            out = self._hidden_to_output_single(pre[d], d)
            y_d = self._pick(out, deterministic, generator)
            outputs.append(y_d)
            if d + 1 < self.output_dim:
                pre = pre + y_weight[:, d, None, :] * y_d[None, :, None]
        return th.stack(outputs, dim=-1)

    def _hidden_to_output_single(self, pre_activation: th.Tensor, d: int) -> th.Tensor:
        hidden = th.tanh(pre_activation)
        last = len(self.weights) - 1
        for index, weight in enumerate(self.weights):
            hidden = th.addmm(self.biases[index + 1][d], hidden, weight[d])
            if index < last:
                hidden = th.tanh(hidden)
        return hidden


class NumpyMDNPredictor:
    """A frozen NumPy copy of a :class:`DARMDN` that predicts the mean of the most probable component.

    Planning calls the model thousands of times per control step on batches of 5 to 100 rows;
    at that size per-operation overhead dominates and NumPy's is several times lower than
    torch's (see :mod:`sb3_safe.guss.rollout`). The copy must be rebuilt after the weights change
    (:class:`MDNDynamicsModel` does it after :meth:`MDNDynamicsModel.fit` and state-dict loads).

    :param network: the trained network
    """

    def __init__(self, network: DARMDN) -> None:
        with th.no_grad():
            n_out, hidden = network.output_dim, network.net_arch[0]
            self.output_dim, self.hidden, self.k = n_out, hidden, network.n_components
            self.autoregressive = network.autoregressive
            # (input, D * hidden): all dimensions' first layers in one matmul.
            input_weight = network.input_weight.permute(1, 0, 2).reshape(network.input_dim, n_out * hidden)
            self.input_weight = input_weight.numpy().copy()
            self.input_bias = network.biases[0].reshape(n_out, hidden).numpy().copy()
            self.y_weight = network._masked_y_weight().numpy().copy() if self.autoregressive else None
            self.weights = [w.numpy().copy() for w in network.weights]
            self.biases = [b.numpy().copy() for b in list(network.biases)[1:]]
            self.per_dim = [[(w[d], b[d, 0]) for w, b in zip(self.weights, self.biases)] for d in range(n_out)]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Deterministic prediction for inputs ``x`` (batch, input_dim) -> (batch, output_dim)."""
        batch = x.shape[0]
        pre = (x @ self.input_weight).reshape(batch, self.output_dim, self.hidden) + self.input_bias
        k = self.k
        if not self.autoregressive:
            hidden = np.tanh(pre.transpose(1, 0, 2))
            last = len(self.weights) - 1
            for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
                hidden = np.matmul(hidden, weight) + bias
                if index < last:
                    hidden = np.tanh(hidden)
            component = hidden[..., :k].argmax(axis=-1)[..., None]
            return np.take_along_axis(hidden[..., k : 2 * k], component, axis=-1)[..., 0].T
        rows = np.arange(batch)
        outputs = np.empty((batch, self.output_dim), dtype=x.dtype)
        assert self.y_weight is not None
        # (D, B, h) so that each dimension's slice is contiguous for the matmuls below.
        pre = np.ascontiguousarray(pre.transpose(1, 0, 2))
        last = len(self.weights) - 1
        # One pass per output dimension: dimension d needs the values of y_<d.
        for d, layers in enumerate(self.per_dim):
            hidden = np.tanh(pre[d])
            for index, (weight, bias) in enumerate(layers):
                hidden = hidden @ weight
                hidden += bias
                if index < last:
                    np.tanh(hidden, out=hidden)
            y_d = hidden[rows, k + hidden[:, :k].argmax(axis=1)]
            outputs[:, d] = y_d
            if d + 1 < self.output_dim:
                pre[d + 1 :] += self.y_weight[d + 1 :, d, None, :] * y_d[:, None]
        return outputs


class DMDN(DARMDN):
    """Deep (non-auto-regressive) mixture density network: :class:`DARMDN` with ``autoregressive=False``.

    Reference: Kégl et al., ICLR 2021; GuSS uses it for Safe Car Goal. Every output dimension is
    predicted independently from the input, in one batched pass.

    :param input_dim: size of the conditioning input
    :param output_dim: number of predicted dimensions
    :param n_components: mixture components per output dimension
    :param net_arch: hidden layer sizes of every per-dimension MLP
    :param min_log_std: lower bound of the predicted log standard deviations
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        n_components: int = 5,
        net_arch: Sequence[int] = (50, 50),
        min_log_std: float = -7.0,
    ) -> None:
        super().__init__(input_dim, output_dim, n_components, net_arch, autoregressive=False, min_log_std=min_log_std)


@dataclass
class ModelFitResult:
    """What one call of :meth:`MDNDynamicsModel.fit` did.

    :param train_loss: mean NLL per sample on the training split in the last epoch
    :param val_loss: mean NLL on the held-out split at the kept weights (NaN without a hold-out)
    :param epochs: epochs actually run (fewer than asked when early stopping fired)
    :param n_samples: transitions used (training + hold-out)
    """

    train_loss: float
    val_loss: float
    epochs: int
    n_samples: int


class MDNDynamicsModel(nn.Module):
    """A learned transition model ``(s, a) -> (s', r[, c])`` built on a D(AR)MDN or DMDN.

    Reference: GuSS (Paolo et al., 2022), supplementary section 5.1. It predicts the state change
    ``Δ = s' − s`` (so ``s' = s + Δ``), the reward and, with ``predict_cost=True``, the step cost,
    each as one output dimension of the mixture network. A predicted step cost is rounded to the
    nearest integer >= 0 (the envs' step costs count violations): a regression output of 0.03 means
    "safe", so that the planners' cost-first rankings still break ties among safe candidates by
    return instead of ranking every candidate by its regression noise. Inputs and targets are standardised with
    statistics recomputed on all data at every :meth:`fit`; they are buffers, so they are saved
    with the weights. Discrete actions are one-hot encoded. Episode termination is not modelled
    (the GuSS envs do not terminate).

    :param observation_dim: size of the (flat) observation
    :param action_dim: size of a continuous action, or the number of discrete actions
    :param discrete_actions: whether actions are discrete indices (one-hot encoded)
    :param predict_cost: add a cost output (a learned cost head) after the reward
    :param n_components: mixture components per output dimension
    :param net_arch: hidden layer sizes of every per-dimension MLP
    :param autoregressive: D(AR)MDN (True) or DMDN (False)
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        discrete_actions: bool = False,
        predict_cost: bool = False,
        n_components: int = 5,
        net_arch: Sequence[int] = (50, 50),
        autoregressive: bool = True,
    ) -> None:
        super().__init__()
        self.observation_dim = int(observation_dim)
        self.action_dim = int(action_dim)
        self.discrete_actions = bool(discrete_actions)
        self.predict_cost = bool(predict_cost)
        input_dim = self.observation_dim + self.action_dim
        output_dim = self.observation_dim + 1 + int(self.predict_cost)
        self.network = DARMDN(input_dim, output_dim, n_components, net_arch, autoregressive=autoregressive)
        self.register_buffer("input_mean", th.zeros(input_dim))
        self.register_buffer("input_std", th.ones(input_dim))
        self.register_buffer("target_mean", th.zeros(output_dim))
        self.register_buffer("target_std", th.ones(output_dim))
        self.register_buffer("n_fits", th.zeros((), dtype=th.long))
        self._predictor: NumpyMDNPredictor | None = None
        self._numpy_stats: tuple[np.ndarray, ...] | None = None
        self.register_load_state_dict_post_hook(lambda module, _keys: module.invalidate_numpy_copy())

    def invalidate_numpy_copy(self) -> None:
        """Drop the NumPy copy used by :meth:`numpy_step` (call after changing weights by hand)."""
        self._predictor = None
        self._numpy_stats = None

    def numpy_snapshot(self) -> tuple[NumpyMDNPredictor, tuple[np.ndarray, ...]]:
        """The cached NumPy copy of the network and of the normalisers (input mean and std, target
        mean and std), rebuilt after fits and state-dict loads."""
        if self._predictor is None or self._numpy_stats is None:
            self._predictor = NumpyMDNPredictor(self.network)
            self._numpy_stats = tuple(
                buffer.detach().cpu().numpy().copy()
                for buffer in (self.input_mean, self.input_std, self.target_mean, self.target_std)
            )
        return self._predictor, self._numpy_stats

    def numpy_step(
        self, observations: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`step` (deterministic) on NumPy arrays, through a cached NumPy copy of the weights.

        This is the planners' fast path (see :class:`NumpyMDNPredictor`).

        :param observations: shape (batch, observation_dim)
        :param actions: shape (batch, action_dim), or (batch,) indices for discrete actions
        :return: next observations, rewards (batch,), and costs (batch,) or None
        """
        predictor, (input_mean, input_std, target_mean, target_std) = self.numpy_snapshot()
        if self.discrete_actions:
            encoded = np.eye(self.action_dim, dtype=np.float32)[np.asarray(actions, dtype=np.int64).reshape(-1)]
        else:
            encoded = np.asarray(actions, dtype=np.float32).reshape(len(observations), self.action_dim)
        raw = np.concatenate([np.asarray(observations, dtype=np.float32), encoded], axis=1)
        outputs = predictor.predict((raw - input_mean) / input_std) * target_std + target_mean
        next_observations = observations + outputs[:, : self.observation_dim]
        rewards = outputs[:, self.observation_dim]
        costs = np.floor(np.maximum(outputs[:, self.observation_dim + 1], 0.0) + 0.5) if self.predict_cost else None
        return next_observations, rewards, costs

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` ran at least once."""
        return bool(self.n_fits.item() > 0)

    def _encode_actions(self, actions: th.Tensor) -> th.Tensor:
        if self.discrete_actions:
            return F.one_hot(actions.reshape(-1).long(), self.action_dim).to(self.input_mean.dtype)
        return actions.reshape(actions.shape[0], self.action_dim).to(self.input_mean.dtype)

    def _inputs(self, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
        raw = th.cat([observations.to(self.input_mean.dtype), self._encode_actions(actions)], dim=-1)
        return (raw - self.input_mean) / self.input_std

    def _targets(
        self, observations: th.Tensor, next_observations: th.Tensor, rewards: th.Tensor, costs: th.Tensor | None
    ) -> th.Tensor:
        columns = [next_observations - observations, rewards.reshape(-1, 1)]
        if self.predict_cost:
            if costs is None:
                raise ValueError("MDNDynamicsModel(predict_cost=True).fit needs the costs of the transitions")
            columns.append(costs.reshape(-1, 1))
        return th.cat(columns, dim=-1).to(self.target_mean.dtype)

    def step(
        self,
        observations: th.Tensor,
        actions: th.Tensor,
        deterministic: bool = True,
        generator: th.Generator | None = None,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """Predict one step for a batch of states and actions.

        :param observations: shape (batch, observation_dim)
        :param actions: shape (batch, action_dim) for continuous actions, (batch,) indices for discrete
        :param deterministic: mean of the most probable component (D(AR)MDN_det) or a sample
        :param generator: torch random generator for sampling
        :return: next observations (batch, observation_dim), rewards (batch,), and costs (batch,)
            (rounded to the nearest integer >= 0) when the model has a cost head, else None
        """
        outputs = self.network.predict(self._inputs(observations, actions), deterministic, generator)
        outputs = outputs * self.target_std + self.target_mean
        next_observations = observations + outputs[:, : self.observation_dim]
        rewards = outputs[:, self.observation_dim]
        costs = th.floor(outputs[:, self.observation_dim + 1].clamp(min=0.0) + 0.5) if self.predict_cost else None
        return next_observations, rewards, costs

    def _set_normalizers(self, inputs: th.Tensor, targets: th.Tensor) -> None:
        self.input_mean.copy_(inputs.mean(dim=0))
        self.input_std.copy_(std_or_one(inputs))
        self.target_mean.copy_(targets.mean(dim=0))
        self.target_std.copy_(std_or_one(targets))

    def fit(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        next_observations: np.ndarray,
        rewards: np.ndarray,
        optimizer: th.optim.Optimizer,
        costs: np.ndarray | None = None,
        epochs: int = 300,
        batch_size: int = 256,
        holdout_fraction: float = 0.1,
        early_stopping_patience: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> ModelFitResult:
        """Fit the model by maximum likelihood on all the given transitions.

        The normalisers are recomputed on all the data, then the weights (kept from the previous
        fit: warm start) are trained for ``epochs`` epochs of Adam on minibatches. With
        ``holdout_fraction > 0`` (and at least 10 rows) a split is held out that depends only on
        the row index (:func:`~sb3_safe.common.holdout.persistent_holdout_split`): when the data
        set only grows between fits, the held-out rows were not trained on by earlier fits of the
        warm-started weights either. With ``early_stopping_patience`` set, training stops after
        that many epochs without a better held-out NLL and the best weights are restored.

        :param observations: shape (n, observation_dim)
        :param actions: shape (n, action_dim), or (n,) indices for discrete actions
        :param next_observations: shape (n, observation_dim)
        :param rewards: shape (n,)
        :param optimizer: optimizer over this model's parameters
        :param costs: shape (n,), needed with ``predict_cost=True``
        :param epochs: maximum number of passes over the training split
        :param batch_size: minibatch size
        :param holdout_fraction: fraction of the data held out to measure the NLL, in [0, 1)
        :param early_stopping_patience: epochs without held-out improvement before stopping
            (None: always run ``epochs``)
        :param rng: random generator for the minibatch order
        :return: the losses and the number of epochs run
        """
        n = len(observations)
        if n < 2:
            raise ValueError(f"MDNDynamicsModel.fit needs at least 2 transitions, got {n}")
        if not 0.0 <= holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
        if epochs < 1 or batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
        for name, array in (("actions", actions), ("next_observations", next_observations), ("rewards", rewards)):
            if len(array) != n:
                raise ValueError(f"MDNDynamicsModel.fit: {name} has {len(array)} rows, observations has {n}")
        rng = np.random.default_rng() if rng is None else rng
        device = self.input_mean.device

        def tensor(array: np.ndarray | None) -> th.Tensor | None:
            return None if array is None else th.as_tensor(np.asarray(array), device=device)

        obs, next_obs = tensor(observations).float(), tensor(next_observations).float()
        targets_raw = self._targets(obs, next_obs, tensor(rewards).float(), tensor(costs))
        raw_inputs = th.cat([obs, self._encode_actions(tensor(actions))], dim=-1)
        if not (th.isfinite(raw_inputs).all() and th.isfinite(targets_raw).all()):
            raise ValueError("MDNDynamicsModel.fit: the transitions contain NaN or infinite values")
        self._set_normalizers(raw_inputs, targets_raw)
        inputs = (raw_inputs - self.input_mean) / self.input_std
        targets = (targets_raw - self.target_mean) / self.target_std

        if n >= 10:
            val_idx, train_idx = persistent_holdout_split(n, holdout_fraction, device=device)
        else:
            val_idx, train_idx = th.arange(0, device=device), th.arange(n, device=device)
        n_holdout = len(val_idx)
        val_x, val_y = inputs[val_idx], targets[val_idx]
        best_val, best_state, stale, train_loss, epochs_run = math.inf, None, 0, math.nan, 0
        self.train()
        for epoch in range(epochs):
            epochs_run = epoch + 1
            train_loss = self._train_epoch(inputs[train_idx], targets[train_idx], optimizer, batch_size, rng)
            if n_holdout == 0:
                continue
            val_loss = self._mean_nll(val_x, val_y)
            if val_loss < best_val - 1e-6:
                best_val, stale = val_loss, 0
                if early_stopping_patience is not None:
                    best_state = {key: value.clone() for key, value in self.network.state_dict().items()}
            else:
                stale += 1
                if early_stopping_patience is not None and stale >= early_stopping_patience:
                    break
        if best_state is not None:
            self.network.load_state_dict(best_state)
        self.eval()
        self.n_fits += 1
        self.invalidate_numpy_copy()
        final_val = self._mean_nll(val_x, val_y) if n_holdout else math.nan
        return ModelFitResult(train_loss=train_loss, val_loss=final_val, epochs=epochs_run, n_samples=n)

    def _train_epoch(
        self,
        inputs: th.Tensor,
        targets: th.Tensor,
        optimizer: th.optim.Optimizer,
        batch_size: int,
        rng: np.random.Generator,
    ) -> float:
        permutation = th.as_tensor(rng.permutation(len(inputs)), device=inputs.device)
        total = 0.0
        for start in range(0, len(inputs), batch_size):
            batch = permutation[start : start + batch_size]
            loss = -self.network.log_prob(inputs[batch], targets[batch]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        return total / len(inputs)

    def _mean_nll(self, inputs: th.Tensor, targets: th.Tensor) -> float:
        with th.no_grad():
            return float(-self.network.log_prob(inputs, targets).mean())
