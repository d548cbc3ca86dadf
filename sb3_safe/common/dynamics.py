"""Probabilistic dynamics ensembles for model-based safe RL.

The Gaussian ensemble of SMBPO (Thomas, Luo and Ma, *Safe Reinforcement Learning by
Imagining the Near Future*, NeurIPS 2021, appendix A.3; SPEC.md section 2.1), which is
the ensemble of MBPO (Janner et al., 2019) and PETS (Chua et al., 2018) with SMBPO's
branched member architecture. It is reusable by any model-based code of sb3-safe
(shields, planners): it knows nothing about the RL algorithm that trains it.

All members are evaluated in one batched forward pass: every layer holds weights of
shape ``(members, in, out)`` and is applied with :func:`torch.baddbmm`, so the cost of a
forward pass does not grow with a Python loop over members.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch as th
from torch import nn
from torch.nn import functional as F

from sb3_safe.common.holdout import persistent_holdout_split
from sb3_safe.common.normalization import std_or_one


class EnsembleLinear(nn.Module):
    """A stack of ``n_members`` independent linear layers applied in one batched matmul.

    :param n_members: number of ensemble members
    :param in_features: input width
    :param out_features: output width
    :param compute_dtype: dtype the matmul runs in (inputs, weights and output); the parameters
        themselves stay float32 (mixed precision: the optimizer updates full-precision weights)
    """

    def __init__(
        self, n_members: int, in_features: int, out_features: int, compute_dtype: th.dtype = th.float32
    ) -> None:
        super().__init__()
        self.n_members = n_members
        self.in_features = in_features
        self.out_features = out_features
        self.compute_dtype = compute_dtype
        self.weight = nn.Parameter(th.empty(n_members, in_features, out_features))
        self.bias = nn.Parameter(th.zeros(n_members, 1, out_features))
        # Same fan-in scaling as nn.Linear, drawn independently for every member.
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: th.Tensor, full_precision: bool = False) -> th.Tensor:
        """:param x: inputs of shape ``(members, batch, in_features)``
        :param full_precision: compute in float32 whatever ``compute_dtype``
        :return: outputs of shape ``(members, batch, out_features)``"""
        dtype = th.float32 if full_precision else self.compute_dtype
        return th.baddbmm(self.bias.to(dtype), x.to(dtype), self.weight.to(dtype))


PRECISIONS = {"float32": th.float32, "bfloat16": th.bfloat16}


def precision_dtype(precision: str, name: str) -> th.dtype:
    """The torch dtype of ``precision``, a key of ``PRECISIONS``.

    :param precision: the precision's name
    :param name: how the error message names the parameter (e.g. ``"SMBPO: model_precision"``)
    :return: its torch dtype"""
    if precision not in PRECISIONS:
        raise ValueError(f"{name} must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def cpu_runs_bfloat16_matmuls_natively() -> bool:
    """Whether torch's oneDNN backend runs bfloat16 matmuls on this CPU (x86: AVX-512 or AMX; not AVX2 alone).

    torch's own check (a private operator, registered only in builds with oneDNN); without that support
    bfloat16 matmuls take a reference path that measured 0.29 GFLOP/s against float32's 75 on an AVX2-only
    AMD EPYC (2026-12-07, docs/benchmarks.md)."""
    return th.backends.mkldnn.is_available() and bool(th.ops.mkldnn._is_mkldnn_bf16_supported())


def warn_if_bfloat16_is_slow(precision: str, device: th.device, name: str) -> None:
    """Warn when ``precision`` is ``"bfloat16"`` on a CPU whose bfloat16 matmuls are far slower than float32's.

    :param precision: the precision's name, a key of ``PRECISIONS``
    :param device: the device the matmuls will run on
    :param name: how the warning names the parameter (e.g. ``"SMBPO: model_precision"``)"""
    if precision == "bfloat16" and device.type == "cpu" and not cpu_runs_bfloat16_matmuls_natively():
        warnings.warn(
            f"{name}='bfloat16' on a CPU without bfloat16 matmul support in torch's oneDNN backend (CPU capability "
            f"{th.backends.cpu.get_cpu_capability()}): its bfloat16 matmuls take a slow reference path, hundreds of "
            "times slower than float32's. Use 'float32' on this machine.",
            UserWarning,
            stacklevel=2,
        )


def _run_layers(layers: nn.Sequential, x: th.Tensor, full_precision: bool) -> th.Tensor:
    for layer in layers:
        x = layer(x, full_precision) if isinstance(layer, EnsembleLinear) else layer(x)
    return x


def _ensemble_mlp(
    n_members: int, sizes: list[int], relu_last: bool, hidden_dtype: th.dtype, full_precision_input: bool
) -> nn.Sequential:
    """Stacked ensemble layers; the hidden-to-hidden layers compute in ``hidden_dtype``, the input
    layer (with ``full_precision_input``) and the output layer (unless followed by a ReLU into the
    next block) in float32."""
    layers: list[nn.Module] = []
    n_layers = len(sizes) - 1
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        is_input = i == 0 and full_precision_input
        is_output = i == n_layers - 1 and not relu_last
        dtype = th.float32 if is_input or is_output else hidden_dtype
        layers.append(EnsembleLinear(n_members, n_in, n_out, compute_dtype=dtype))
        if relu_last or i < n_layers - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class GaussianEnsemble(nn.Module):
    """Ensemble of branched Gaussian MLPs predicting the state change and the reward.

    Each member maps a normalised ``[s, a]`` through a shared trunk (``n_trunk_layers``
    layers of ``hidden_size`` units, ReLU after each, the last included) into a mean head
    and a log-variance head (each one hidden layer of ``hidden_size`` then a linear output).
    The output is ``[s' - s, r]``, normalised by running statistics set with
    :meth:`fit_normalizers`. The log-variance is soft-clamped between learned per-member
    bounds (``max_logvar``, ``min_logvar``) as in the authors' code and in PETS.

    With ``violation_head=True`` a third branch (one hidden layer, one logit) predicts the
    probability that the transition enters an unsafe state; it is trained with a weighted
    binary cross-entropy on the env's ``info["violation"]`` labels (an sb3-safe addition for
    envs without a known predicate; not in the paper).

    :param obs_dim: observation size (flat Box observations)
    :param action_dim: action size (flat Box actions)
    :param n_members: number of ensemble members (authors' code: 5)
    :param hidden_size: width of every hidden layer (paper: 200)
    :param n_trunk_layers: number of trunk layers (paper appendix A.3: 3; authors' code: 2)
    :param violation_head: also predict the violation probability of the transition
    :param precision: ``"float32"`` or ``"bfloat16"``: the dtype of the hidden-to-hidden matmuls
        (almost all of the FLOPs). With ``"bfloat16"`` the input layer, the output layers, the
        parameters, the normalisation and the loss stay float32: mixed precision. On a CPU with
        bfloat16 matrix units (AMX) a model update of the paper's size took about a quarter less
        time, with a test error within the seed-to-seed spread (docs/benchmarks.md). Not in the
        paper, which trains in float32. :meth:`sample_step` (model rollouts) always computes in
        float32.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        n_members: int = 5,
        hidden_size: int = 200,
        n_trunk_layers: int = 3,
        violation_head: bool = False,
        precision: str = "float32",
    ) -> None:
        super().__init__()
        hidden_dtype = precision_dtype(precision, "GaussianEnsemble: precision")
        for name, value in (
            ("obs_dim", obs_dim),
            ("action_dim", action_dim),
            ("n_members", n_members),
            ("hidden_size", hidden_size),
            ("n_trunk_layers", n_trunk_layers),
        ):
            if int(value) != value or value < 1:
                raise ValueError(f"GaussianEnsemble: {name} must be a positive integer, got {value!r}")
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.n_members = n_members
        self.input_dim = obs_dim + action_dim
        self.output_dim = obs_dim + 1
        self.has_violation_head = violation_head
        self.precision = precision

        self.trunk = _ensemble_mlp(
            n_members, [self.input_dim] + [hidden_size] * n_trunk_layers, relu_last=True, hidden_dtype=hidden_dtype,
            full_precision_input=True,
        )

        def head(n_out: int) -> nn.Sequential:
            return _ensemble_mlp(
                n_members, [hidden_size, hidden_size, n_out], relu_last=False, hidden_dtype=hidden_dtype,
                full_precision_input=False,
            )

        self.mean_head = head(self.output_dim)
        self.logvar_head = head(self.output_dim)
        self.violation_branch = head(1) if violation_head else None
        self.max_logvar = nn.Parameter(th.full((n_members, 1, self.output_dim), 0.5))
        self.min_logvar = nn.Parameter(th.full((n_members, 1, self.output_dim), -10.0))

        # Normalisation statistics live in buffers so that they are part of the state dict.
        self.register_buffer("input_mean", th.zeros(self.input_dim))
        self.register_buffer("input_std", th.ones(self.input_dim))
        self.register_buffer("output_mean", th.zeros(self.output_dim))
        self.register_buffer("output_std", th.ones(self.output_dim))

    # ------------------------------------------------------------------ normalisation
    def fit_normalizers(self, inputs: th.Tensor, targets: th.Tensor) -> None:
        """Set the input and output normalisation from data.

        :param inputs: ``[s, a]`` rows, shape ``(n, obs_dim + action_dim)``
        :param targets: ``[s' - s, r]`` rows, shape ``(n, obs_dim + 1)``
        """
        with th.no_grad():
            self.input_mean.copy_(inputs.mean(0))
            self.input_std.copy_(std_or_one(inputs))
            self.output_mean.copy_(targets.mean(0))
            self.output_std.copy_(std_or_one(targets))

    def normalize_targets(self, targets: th.Tensor) -> th.Tensor:
        """Map raw ``[s' - s, r]`` targets to the network's normalised output space."""
        return (targets - self.output_mean) / self.output_std

    # ------------------------------------------------------------------ forward passes
    def forward(
        self, inputs: th.Tensor, full_precision: bool = False
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """All members on (normalised-space) outputs in one pass.

        :param inputs: raw ``[s, a]``, shape ``(batch, in)`` (the same rows for every member)
            or ``(members, batch, in)`` (one batch per member, used for bootstrapped training)
        :param full_precision: every layer in float32, whatever ``precision``
        :return: normalised mean and soft-clamped log-variance, each ``(members, batch, obs_dim + 1)``,
            and the violation logits ``(members, batch, 1)`` (``None`` without a violation head)
        """
        x = (inputs - self.input_mean) / self.input_std
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n_members, -1, -1)
        z = _run_layers(self.trunk, x, full_precision)
        mean = _run_layers(self.mean_head, z, full_precision)
        logvar = _run_layers(self.logvar_head, z, full_precision)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        violation_logit = (
            _run_layers(self.violation_branch, z, full_precision) if self.violation_branch is not None else None
        )
        return mean, logvar, violation_logit

    def loss(
        self, inputs: th.Tensor, targets: th.Tensor, violations: th.Tensor | None = None, pos_weight: float = 1.0
    ) -> th.Tensor:
        """Gaussian NLL summed over members, plus the log-variance bound regulariser of PETS.

        :param inputs: raw ``[s, a]``, shape ``(members, batch, in)``
        :param targets: raw ``[s' - s, r]``, shape ``(members, batch, obs_dim + 1)``
        :param violations: 0/1 labels ``(members, batch, 1)`` for the violation head, if it exists
        :param pos_weight: weight of the positive (violating) class in the cross-entropy, to
            counter the rarity of violations
        :return: scalar loss
        """
        mean, logvar, violation_logit = self(inputs)
        target = self.normalize_targets(targets)
        nll = ((mean - target) ** 2 * th.exp(-logvar) + logvar).mean(dim=(1, 2)).sum()
        bound_reg = 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())
        loss = nll + bound_reg
        if violation_logit is not None:
            if violations is None:
                raise ValueError("GaussianEnsemble.loss: the ensemble has a violation head but got no labels")
            bce = F.binary_cross_entropy_with_logits(
                violation_logit,
                violations,
                pos_weight=th.tensor(pos_weight, device=violation_logit.device),
                reduction="none",
            )
            loss = loss + bce.mean(dim=(1, 2)).sum()
        return loss

    @th.no_grad()
    def holdout_mse(self, inputs: th.Tensor, targets: th.Tensor) -> float:
        """Mean squared error of the members' means on held-out data, in normalised output units
        (so that 1.0 is the error of predicting the mean target), averaged over members.

        :param inputs: raw ``[s, a]``, shape ``(n, in)``
        :param targets: raw ``[s' - s, r]``, shape ``(n, obs_dim + 1)``
        """
        mean, _, _ = self(inputs)
        return float(((mean - self.normalize_targets(targets)) ** 2).mean())

    @th.no_grad()
    def sample_step(
        self, obs: th.Tensor, actions: th.Tensor, generator: th.Generator | None = None
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """Sample one model transition per row, each row from a uniformly drawn member (MBPO).

        Only the drawn member is evaluated for each row: the rows are dealt out to the members by
        a random permutation (so every row's member is uniform and the members get equal shares),
        giving a ``(members, batch / members, in)`` block that one batched pass evaluates. This
        costs one member's FLOPs per row instead of all members'.

        :param obs: raw observations, shape ``(batch, obs_dim)``
        :param actions: actions, shape ``(batch, action_dim)``
        :param generator: optional torch random generator
        :return: next observations ``(batch, obs_dim)``, rewards ``(batch,)``, and the violation
            probability ``(batch,)`` of the drawn member (``None`` without a violation head)
        """
        batch, device = obs.shape[0], obs.device
        inputs = th.cat([obs, actions], dim=-1)
        per_member = -(-batch // self.n_members)
        padded = per_member * self.n_members
        # Pad by repeating rows so that the batch splits evenly; the extra rows are dropped below.
        inputs = th.cat([inputs, inputs[th.arange(padded - batch, device=device) % batch]])
        order = th.randperm(padded, device=device, generator=generator)
        grouped = inputs[order].view(per_member, self.n_members, -1).transpose(0, 1)
        # float32 whatever ``precision``: with the few rows per member of a rollout step, casting the
        # weights to bfloat16 costs more than the bfloat16 matmuls save (docs/benchmarks.md).
        mean, logvar, violation_logit = self(grouped, full_precision=True)

        def ungroup(values: th.Tensor) -> th.Tensor:
            flat = values.transpose(0, 1).reshape(padded, -1)
            restored = th.empty_like(flat)
            restored[order] = flat
            return restored[:batch]

        mean, std = ungroup(mean), th.exp(0.5 * ungroup(logvar))
        noise = th.randn(mean.shape, device=device, generator=generator)
        out = (mean + std * noise) * self.output_std + self.output_mean
        next_obs = obs + out[:, : self.obs_dim]
        reward = out[:, self.obs_dim]
        violation_prob = th.sigmoid(ungroup(violation_logit)).squeeze(-1) if violation_logit is not None else None
        return next_obs, reward, violation_prob


@dataclass
class EnsembleFitResult:
    """Summary of one call to :func:`fit_ensemble`.

    :param loss: mean training loss over the last 10% of the updates
    :param holdout_mse: held-out MSE in normalised output units (NaN when nothing was held out)
    :param n_train: number of training rows
    :param n_holdout: number of held-out rows
    :param n_updates: number of optimizer steps taken
    """

    loss: float
    holdout_mse: float
    n_train: int
    n_holdout: int
    n_updates: int


def fit_ensemble(
    model: GaussianEnsemble,
    optimizer: th.optim.Optimizer,
    obs: th.Tensor,
    actions: th.Tensor,
    next_obs: th.Tensor,
    rewards: th.Tensor,
    n_updates: int,
    batch_size: int = 256,
    holdout_fraction: float = 0.1,
    max_holdout: int = 5000,
    violations: th.Tensor | None = None,
    generator: th.Generator | None = None,
) -> EnsembleFitResult:
    """Train the ensemble by NLL on real transitions, holding out a slice to report model error.

    Every member draws its own minibatch (bootstrap by independent sampling), all members are
    updated by one batched backward pass. The normalisers are refit on the training rows first.

    :param model: the ensemble
    :param optimizer: its optimizer (Adam, lr 1e-3 in the paper)
    :param obs: observations ``(n, obs_dim)``
    :param actions: actions ``(n, action_dim)``
    :param next_obs: next observations ``(n, obs_dim)``
    :param rewards: rewards ``(n,)``
    :param n_updates: number of optimizer steps
    :param batch_size: minibatch size per member
    :param holdout_fraction: fraction of the rows held out; a row's side depends only on its index
        (:func:`~sb3_safe.common.holdout.persistent_holdout_split`), so with data that only grows
        between calls the held-out rows were never trained on by earlier calls either
    :param max_holdout: cap on the number of held-out rows
    :param violations: 0/1 violation labels ``(n,)``, required when the model has a violation head
    :param generator: optional torch random generator (for reproducible minibatches)
    :return: the fit summary
    """
    n = obs.shape[0]
    if n < 2:
        raise ValueError(f"fit_ensemble: need at least 2 transitions to fit a model, got {n}")
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"fit_ensemble: holdout_fraction must be in [0, 1), got {holdout_fraction}")
    if n_updates < 1 or batch_size < 1:
        raise ValueError(f"fit_ensemble: n_updates and batch_size must be >= 1, got {n_updates}, {batch_size}")
    if model.has_violation_head and violations is None:
        raise ValueError("fit_ensemble: the model has a violation head, pass the violation labels")
    device = obs.device
    inputs = th.cat([obs, actions], dim=-1)
    targets = th.cat([next_obs - obs, rewards.reshape(-1, 1)], dim=-1)
    labels = violations.reshape(-1, 1).float() if violations is not None else None

    holdout_idx, train_idx = persistent_holdout_split(n, holdout_fraction, max_holdout, device)
    n_holdout = len(holdout_idx)
    model.fit_normalizers(inputs[train_idx], targets[train_idx])

    pos_weight = 1.0
    if labels is not None:
        n_pos = float(labels[train_idx].sum())
        # Violations are rare; weigh them up (bounded) so the head does not learn "never unsafe".
        pos_weight = float(np.clip((len(train_idx) - n_pos) / max(n_pos, 1.0), 1.0, 100.0))

    losses = []
    for _ in range(n_updates):
        pick = train_idx[th.randint(len(train_idx), (model.n_members, batch_size), device=device, generator=generator)]
        batch_labels = labels[pick] if labels is not None else None
        loss = model.loss(inputs[pick], targets[pick], batch_labels, pos_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    tail = max(1, n_updates // 10)
    mean_loss = float(th.stack(losses[-tail:]).mean())
    holdout = model.holdout_mse(inputs[holdout_idx], targets[holdout_idx]) if n_holdout > 0 else float("nan")
    return EnsembleFitResult(
        loss=mean_loss, holdout_mse=holdout, n_train=len(train_idx), n_holdout=n_holdout, n_updates=n_updates
    )
