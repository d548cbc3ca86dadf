"""SAC's gradient step with one backward pass for its three losses (a faster variant of ``SAC.train``).

SB3's ``SAC.train`` takes three backward passes per gradient step (entropy coefficient, critic,
actor), and the actor's also computes the critics' weight gradients, which it then discards. On a
CPU these small networks are bound by matmuls and per-call overhead, so that work shows.
:func:`fused_sac_train` builds the three losses, lets the actor loss's gradient reach only the
critics' inputs (not their weights), computes all gradients in one backward pass, then steps the
three optimisers. Two implementations of that step, equal up to float rounding in float32:

* :func:`mlp_fused_sac_train` writes the backward pass of SB3's ``MlpPolicy`` out by hand (linear
  layers and ReLUs, the squashed Gaussian, the twin-critic minimum), with the rows of both actor
  passes (``s`` and ``s'``) and of both critic passes (``(s, a)`` and ``(s, pi(s))``) stacked into one
  matmul each. No autograd graph is built: on a CPU core the graph's bookkeeping and the per-op
  dispatch were a tenth of a step's time. ``hidden_precision="bfloat16"`` computes the
  hidden-to-hidden layers (most of the FLOPs) in bfloat16, as
  :class:`~sb3_safe.common.dynamics.GaussianEnsemble` can.
* :func:`autograd_fused_sac_train` lets autograd do it (critics frozen while the actor loss is
  built), for any policy whose critics follow SB3's ``ContinuousCritic`` interface.

:func:`fused_sac_train` picks the first when the policy is an MLP it can differentiate and the second
otherwise. docs/benchmarks.md has the times per step on SafeHopper-v0 sizes. Where a log-std sits at its
lower clamp (a std of ``exp(-20)``), SB3's log-prob, computed from ``(mean + std * noise) - mean``, loses
the mean's gradient to float32 cancellation; the hand-written step computes it from the noise and keeps it.

One difference from SB3's order: the actor loss uses the critics *before* this step's critic
update (SB3 rebuilds it after the update), as the actor and critic updates of Haarnoja et al.'s
algorithm 1 read the same parameters. Everything else is SB3's: the targets use the actor before
its update and the entropy coefficient before its update, the same losses, optimisers, learning
rate schedules, target updates and logger keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import SquashedDiagGaussianDistribution
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.sac import SAC
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, Actor
from torch import nn
from torch.nn import functional as F

from sb3_safe.common.dynamics import precision_dtype

# The Gaussian log-density's constant term, per action dimension.
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class StepLosses:
    """The detached values one gradient step logs.

    :param ent_coef: the entropy coefficient the step used
    :param ent_coef_loss: its loss (None with a fixed coefficient)
    :param actor_loss: the actor loss
    :param critic_loss: the critic loss (summed over the critics, halved as in SB3)
    """

    ent_coef: th.Tensor
    ent_coef_loss: th.Tensor | None
    actor_loss: th.Tensor
    critic_loss: th.Tensor


# One gradient step's losses on a minibatch; it leaves the gradients in the parameters' ``.grad``.
GradientStep = Callable[[ReplayBufferSamples], StepLosses]


def fused_sac_train(model: SAC, gradient_steps: int, batch_size: int, hidden_precision: str = "float32") -> None:
    """``gradient_steps`` SAC updates of ``model`` with one backward pass each (see the module docstring).

    Drop-in for ``SAC.train`` (same arguments, logger keys and counters), for SAC and its subclasses.
    Uses :func:`mlp_fused_sac_train` when :func:`mlp_step_unsupported` finds nothing against the
    policy, :func:`autograd_fused_sac_train` otherwise.

    :param model: the SAC (or subclass) instance to update
    :param gradient_steps: number of gradient steps
    :param batch_size: minibatch size
    :param hidden_precision: ``"float32"`` or ``"bfloat16"``: the dtype of the hidden-to-hidden matmuls
        (``"bfloat16"`` needs a policy that :func:`mlp_fused_sac_train` supports)
    :raises ValueError: on an unknown precision, or bfloat16 with a policy the hand-written step does
        not support
    """
    hidden_dtype = precision_dtype(hidden_precision, "hidden_precision")
    reason = mlp_step_unsupported(model)
    if reason is None:
        _train(model, gradient_steps, batch_size, _MlpStep(model, hidden_dtype))
    elif hidden_dtype != th.float32:
        raise ValueError(
            f"fused_sac_train: hidden_precision={hidden_precision!r} needs the hand-written step, but {reason}"
        )
    else:
        autograd_fused_sac_train(model, gradient_steps, batch_size)


def autograd_fused_sac_train(model: SAC, gradient_steps: int, batch_size: int) -> None:
    """:func:`fused_sac_train` with autograd's backward pass, for SAC and its subclasses whose critics
    are SB3's ``ContinuousCritic`` interface (a tuple of Q-values per call).

    :param model: the SAC (or subclass) instance to update
    :param gradient_steps: number of gradient steps
    :param batch_size: minibatch size
    """
    _train(model, gradient_steps, batch_size, _AutogradStep(model))


def mlp_fused_sac_train(model: SAC, gradient_steps: int, batch_size: int, hidden_precision: str = "float32") -> None:
    """:func:`fused_sac_train` with a hand-written backward pass for SB3's ``MlpPolicy`` (ReLU
    activations; see :func:`mlp_step_unsupported` for what else it needs).

    :param model: the SAC (or subclass) instance to update
    :param gradient_steps: number of gradient steps
    :param batch_size: minibatch size
    :param hidden_precision: ``"float32"`` or ``"bfloat16"``: the dtype of the matmuls of the layers
        between two hidden layers, forward and backward (inputs, weights and output; the parameters,
        the optimiser state and every other layer stay float32: mixed precision, as
        :class:`~sb3_safe.common.dynamics.GaussianEnsemble`'s ``precision``). Not in SAC's paper.
    :raises ValueError: on an unknown precision or a policy the step does not support
    """
    hidden_dtype = precision_dtype(hidden_precision, "hidden_precision")
    reason = mlp_step_unsupported(model)
    if reason is not None:
        raise ValueError(f"mlp_fused_sac_train: {reason}")
    _train(model, gradient_steps, batch_size, _MlpStep(model, hidden_dtype))


def mlp_step_unsupported(model: SAC) -> str | None:
    """Why :func:`mlp_fused_sac_train` cannot update ``model``, or None when it can.

    It needs SB3's own classes (``Actor``, ``ContinuousCritic``, the squashed Gaussian, ``FlattenExtractor``
    features) on non-image Box observations; ReLU MLPs (``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU``)
    for the actor's latent network and every critic; linear mean and log-std heads; no gSDE, no batch
    norm; and optimisers over exactly those layers' parameters (all trainable) and ``log_ent_coef``.

    :param model: a SAC (or subclass) instance with its networks built
    """
    actor, critic, critic_target = model.actor, model.critic, model.critic_target
    if not isinstance(model.observation_space, spaces.Box) or is_image_space(model.observation_space):
        return "only non-image Box observations are supported"
    if model.use_sde:
        return "gSDE (use_sde=True) is not supported"
    if model.batch_norm_stats:
        return "batch normalisation is not supported"
    if not (type(actor) is Actor and type(critic) is type(critic_target) is ContinuousCritic):
        return "the actor and critics must be SB3's Actor and ContinuousCritic classes"
    if type(actor.action_dist) is not SquashedDiagGaussianDistribution:
        return "the actor must use SB3's squashed Gaussian distribution"
    extractors = (actor.features_extractor, critic.features_extractor, critic_target.features_extractor)
    if not all(type(extractor) is FlattenExtractor for extractor in extractors):
        return "only FlattenExtractor features are supported"
    if not (type(actor.mu) is nn.Linear and type(actor.log_std) is nn.Linear):
        return "the actor's mean and log-std heads must be nn.Linear"
    nets = [(actor.latent_pi, True)] + [(net, False) for net in (*critic.q_networks, *critic_target.q_networks)]
    if not all(_is_relu_mlp(net, relu_last) for net, relu_last in nets):
        return "the actor's latent network and the critics must be nn.Linear layers with nn.ReLU between them"
    actor_layers = [*_linear_layers(actor.latent_pi), actor.mu, actor.log_std]
    critic_layers = [layer for net in critic.q_networks for layer in _linear_layers(net)]
    trained = (("actor", actor_layers, actor.optimizer), ("critic", critic_layers, critic.optimizer))
    for name, layers, optimizer in trained:
        if any(layer.bias is None for layer in layers):
            return f"the {name}'s linear layers must have biases"
        params = [param for layer in layers for param in (layer.weight, layer.bias)]
        if not all(param.requires_grad for param in params) or {id(p) for p in params} != _ids(optimizer):
            return f"the {name} optimiser must update exactly the (trainable) weights and biases of its linear layers"
    if model.ent_coef_optimizer is not None and _ids(model.ent_coef_optimizer) != {id(model.log_ent_coef)}:
        return "the entropy coefficient's optimiser must update log_ent_coef alone"
    return None


def _is_relu_mlp(net: nn.Module, relu_last: bool) -> bool:
    """Whether ``net`` is ``nn.Sequential(Linear, ReLU, ..., Linear)``, followed by a ReLU when ``relu_last``
    (then it may also be empty)."""
    if type(net) is not nn.Sequential:
        return False
    modules = list(net)
    linear_layers, relus = modules[0::2], modules[1::2]
    expected_relus = len(linear_layers) if relu_last else len(linear_layers) - 1
    return (
        (relu_last or len(linear_layers) > 0)
        and len(relus) == expected_relus
        and all(type(m) is nn.Linear for m in linear_layers)
        and all(type(m) is nn.ReLU for m in relus)
    )


def _linear_layers(net: nn.Sequential) -> list[nn.Linear]:
    return [module for module in net if isinstance(module, nn.Linear)]


def _ids(optimizer: th.optim.Optimizer) -> set[int]:
    """The identities of the tensors ``optimizer`` updates."""
    return {id(param) for group in optimizer.param_groups for param in group["params"]}


def _sac_optimizers(model: SAC) -> list[th.optim.Optimizer]:
    """The actor's, the critics' and (when learned) the entropy coefficient's optimisers."""
    optimizers = [model.actor.optimizer, model.critic.optimizer]
    if model.ent_coef_optimizer is not None:
        optimizers.append(model.ent_coef_optimizer)
    return optimizers


def _train(model: SAC, gradient_steps: int, batch_size: int, step: GradientStep) -> None:
    """SB3's ``SAC.train`` loop around ``step``: learning rates, minibatches, optimiser steps, target
    updates and logger keys."""
    model.policy.set_training_mode(True)
    optimizers = _sac_optimizers(model)
    model._update_learning_rate(optimizers)

    critic_params = list(model.critic.parameters())
    critic_target_params = list(model.critic_target.parameters())
    steps_losses = []
    for gradient_step in range(gradient_steps):
        data = model.replay_buffer.sample(batch_size, env=model._vec_normalize_env)  # type: ignore[union-attr]
        steps_losses.append(step(data))
        for optimizer in optimizers:
            optimizer.step()
        if gradient_step % model.target_update_interval == 0:
            _soft_update(critic_params, critic_target_params, model.tau)
            polyak_update(model.batch_norm_stats, model.batch_norm_stats_target, 1.0)

    model._n_updates += gradient_steps
    model.logger.record("train/n_updates", model._n_updates, exclude="tensorboard")
    model.logger.record("train/ent_coef", _mean([losses.ent_coef for losses in steps_losses]))
    model.logger.record("train/actor_loss", _mean([losses.actor_loss for losses in steps_losses]))
    model.logger.record("train/critic_loss", _mean([losses.critic_loss for losses in steps_losses]))
    ent_coef_losses = [losses.ent_coef_loss for losses in steps_losses if losses.ent_coef_loss is not None]
    if ent_coef_losses:
        model.logger.record("train/ent_coef_loss", _mean(ent_coef_losses))


def _soft_update(source: list[th.Tensor], target: list[th.Tensor], tau: float) -> None:
    """``target <- (1 - tau) target + tau source`` for all tensors in one foreach kernel (the arithmetic
    of SB3's ``polyak_update``, which loops over tensors in Python)."""
    with th.no_grad():
        th._foreach_lerp_(target, source, tau)


def _mean(values: list[th.Tensor]) -> float:
    # One device-to-host copy per log key instead of SB3's one ``.item()`` per loss and step.
    return float(np.mean(th.stack(values).float().cpu().numpy()))


def _target_q_values(
    model: SAC, data: ReplayBufferSamples, next_q_values: th.Tensor, next_log_prob: th.Tensor, ent_coef: th.Tensor
) -> th.Tensor:
    """SAC's soft TD target from the target critics' values ``(batch, n_critics)`` at ``(s', a')``, in their dtype
    (whatever the buffer's reward dtype)."""
    discounts = data.discounts if data.discounts is not None else model.gamma
    soft_values = next_q_values.min(dim=1, keepdim=True).values - ent_coef * next_log_prob
    rewards, dones = data.rewards.to(soft_values.dtype), data.dones.to(soft_values.dtype)
    return rewards + (1 - dones) * discounts * soft_values


class _AutogradStep:
    """One fused step through autograd: the critics are frozen while the actor loss is built, so the
    actor loss's backward pass stops at the critics' inputs."""

    def __init__(self, model: SAC) -> None:
        self.model = model
        self.optimizers = _sac_optimizers(model)

    def __call__(self, data: ReplayBufferSamples) -> StepLosses:
        model = self.model
        if model.use_sde:
            model.actor.reset_noise()
        actions_pi, log_prob = model.actor.action_log_prob(data.observations)
        log_prob = log_prob.reshape(-1, 1)
        losses = []
        ent_coef_loss = None
        if model.ent_coef_optimizer is not None and model.log_ent_coef is not None:
            ent_coef = th.exp(model.log_ent_coef.detach())
            assert isinstance(model.target_entropy, float)
            ent_coef_loss = -(model.log_ent_coef * (log_prob + model.target_entropy).detach()).mean()
            losses.append(ent_coef_loss)
        else:
            ent_coef = model.ent_coef_tensor

        with th.no_grad():
            next_actions, next_log_prob = model.actor.action_log_prob(data.next_observations)
            next_q_values = th.cat(model.critic_target(data.next_observations, next_actions), dim=1)
            target_q_values = _target_q_values(model, data, next_q_values, next_log_prob.reshape(-1, 1), ent_coef)
        current_q_values = model.critic(data.observations, data.actions)
        critic_loss = 0.5 * sum(F.mse_loss(current_q, target_q_values) for current_q in current_q_values)
        assert isinstance(critic_loss, th.Tensor)

        _set_requires_grad(model.critic, False)
        q_values_pi = th.cat(model.critic(data.observations, actions_pi), dim=1)
        _set_requires_grad(model.critic, True)
        actor_loss = (ent_coef * log_prob - q_values_pi.min(dim=1, keepdim=True).values).mean()

        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        th.stack([*losses, critic_loss, actor_loss]).sum().backward()
        return StepLosses(
            ent_coef=ent_coef.detach().reshape(()),
            ent_coef_loss=None if ent_coef_loss is None else ent_coef_loss.detach(),
            actor_loss=actor_loss.detach(),
            critic_loss=critic_loss.detach(),
        )


def _set_requires_grad(module: nn.Module, requires_grad: bool) -> None:
    for param in module.parameters():
        param.requires_grad_(requires_grad)


@dataclass
class _ActorPass:
    """The actor's stacked pass over ``[s; s']`` that the backward pass reads: the latent activations, the
    log-std before its clamp, the std, the Gaussian noise, the squashed actions, ``1 - action^2`` and the
    log-probs (each with rows ``[:batch]`` for ``s`` and ``[batch:]`` for ``s'``)."""

    latent: list[th.Tensor]
    raw_log_std: th.Tensor
    std: th.Tensor
    noise: th.Tensor
    actions: th.Tensor
    one_minus_squared: th.Tensor
    log_prob: th.Tensor


class _MlpStep:
    """One fused step with the backward pass written out for SB3's ``MlpPolicy`` (see
    :func:`mlp_step_unsupported`); autograd is off throughout.

    Rows ``[:batch]`` of the stacked actor pass are ``s`` and rows ``[batch:]`` are ``s'``; rows ``[:batch]``
    of the stacked critic pass are ``(s, a)`` (the critic loss, whose gradient reaches the critics'
    weights) and rows ``[batch:]`` are ``(s, pi(s))`` (the actor loss, whose gradient reaches only the
    critics' inputs, as with frozen critics).

    :param model: the SAC instance
    :param hidden_dtype: dtype of the hidden-to-hidden matmuls
    """

    def __init__(self, model: SAC, hidden_dtype: th.dtype) -> None:
        self.model = model
        self.hidden_dtype = hidden_dtype
        actor = model.actor
        self.latent_layers = _linear_layers(actor.latent_pi)
        self.critic_layers = [_linear_layers(net) for net in model.critic.q_networks]
        self.target_layers = [_linear_layers(net) for net in model.critic_target.q_networks]
        self.squash_epsilon = float(actor.action_dist.epsilon)  # type: ignore[attr-defined]

    def __call__(self, data: ReplayBufferSamples) -> StepLosses:
        with th.no_grad():
            observations = data.observations.flatten(1).float()
            next_observations = data.next_observations.flatten(1).float()
            batch = len(observations)
            policy = self._actor_forward(th.cat([observations, next_observations]), batch)
            ent_coef, ent_coef_loss = self._entropy_coefficient(policy.log_prob[:batch])
            target_q_values = self._target_q_values(data, next_observations, policy, ent_coef)

            critic_inputs = th.cat([
                th.cat([observations, data.actions.float()], dim=1),
                th.cat([observations, policy.actions[:batch]], dim=1),
            ])
            activations = [self._forward(layers, critic_inputs, relu_last=False) for layers in self.critic_layers]
            q_values = th.cat([critic[-1] for critic in activations], dim=1)
            current_q, q_pi = q_values[:batch], q_values[batch:]
            critic_loss = 0.5 * ((current_q - target_q_values) ** 2).mean(dim=0).sum()
            min_q_pi, min_index = q_pi.min(dim=1, keepdim=True)
            actor_loss = (ent_coef * policy.log_prob[:batch] - min_q_pi).mean()

            # d loss / d q: the critic loss on rows [:batch], minus the actor loss's min-Q on rows [batch:].
            critic_index = th.arange(len(self.critic_layers), device=q_values.device)
            grad_q = th.cat([current_q - target_q_values, -(min_index == critic_index).to(q_values.dtype)]) / batch
            grad_actions = th.zeros_like(policy.actions[:batch])
            for index, (layers, critic) in enumerate(zip(self.critic_layers, activations)):
                grad_actions += self._backward(
                    layers, critic, grad_q[:, index : index + 1], batch, relu_last=False,
                    input_columns=observations.shape[1],
                )
            self._actor_backward(policy, batch, grad_actions, grad_log_prob=ent_coef / batch)
        return StepLosses(
            ent_coef=ent_coef.reshape(()), ent_coef_loss=ent_coef_loss, actor_loss=actor_loss, critic_loss=critic_loss
        )

    def _actor_forward(self, stacked_observations: th.Tensor, batch: int) -> _ActorPass:
        """The actor's pass over ``[s; s']``, with actions and log-probs sampled as SB3's actor samples them."""
        actor = self.model.actor
        latent = self._forward(self.latent_layers, stacked_observations, relu_last=True)
        mean = F.linear(latent[-1], actor.mu.weight, actor.mu.bias)
        raw_log_std = F.linear(latent[-1], actor.log_std.weight, actor.log_std.bias)
        log_std = raw_log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        std = log_std.exp()
        # Drawn as SB3's actor draws them (s first, then s'), so both implementations see the same noise.
        noise = th.cat([th.empty_like(mean[:batch]).normal_(), th.empty_like(mean[batch:]).normal_()])
        actions = th.tanh(mean + noise * std)
        one_minus_squared = 1 - actions**2
        gaussian_log_prob = (-0.5 * noise**2 - log_std - LOG_SQRT_2PI).sum(dim=1, keepdim=True)
        log_prob = gaussian_log_prob - th.log(one_minus_squared + self.squash_epsilon).sum(dim=1, keepdim=True)
        return _ActorPass(latent, raw_log_std, std, noise, actions, one_minus_squared, log_prob)

    def _target_q_values(
        self, data: ReplayBufferSamples, next_observations: th.Tensor, policy: _ActorPass, ent_coef: th.Tensor
    ) -> th.Tensor:
        batch = len(next_observations)
        next_inputs = th.cat([next_observations, policy.actions[batch:]], dim=1)
        next_q_values = [self._forward(layers, next_inputs, relu_last=False)[-1] for layers in self.target_layers]
        return _target_q_values(self.model, data, th.cat(next_q_values, dim=1), policy.log_prob[batch:], ent_coef)

    def _entropy_coefficient(self, log_prob_pi: th.Tensor) -> tuple[th.Tensor, th.Tensor | None]:
        """The coefficient this step uses and, when it is learned, its loss (its gradient set)."""
        model = self.model
        if model.ent_coef_optimizer is None or model.log_ent_coef is None:
            return model.ent_coef_tensor, None
        assert isinstance(model.target_entropy, float)
        log_ent_coef = model.log_ent_coef.detach()
        gap = log_prob_pi + model.target_entropy
        model.log_ent_coef.grad = -gap.mean().reshape(log_ent_coef.shape)
        return th.exp(log_ent_coef), -(log_ent_coef * gap).mean()

    def _actor_backward(
        self, policy: _ActorPass, batch: int, grad_actions: th.Tensor, grad_log_prob: th.Tensor
    ) -> None:
        """Set the actor's gradients from d loss / d action and d loss / d log-prob (``ent_coef / batch``) of
        the pass's rows ``[:batch]``.

        With ``u = mean + std * noise`` and ``action = tanh(u)``, the log-prob is
        ``sum(-noise^2 / 2 - log_std - log sqrt(2 pi)) - sum(log(1 - action^2 + eps))``: its Gaussian part
        depends on the parameters only through ``-log_std`` (``noise`` is fixed), its squash part through ``u``.
        """
        actor = self.model.actor
        actions, one_minus_squared = policy.actions[:batch], policy.one_minus_squared[:batch]
        grad_u = grad_actions * one_minus_squared + grad_log_prob * 2 * actions * one_minus_squared / (
            one_minus_squared + self.squash_epsilon
        )
        raw_log_std = policy.raw_log_std[:batch]
        inside_clamp = (raw_log_std >= LOG_STD_MIN) & (raw_log_std <= LOG_STD_MAX)
        grad_log_std = (grad_u * policy.noise[:batch] * policy.std[:batch] - grad_log_prob) * inside_clamp
        latent = [activation[:batch] for activation in policy.latent]
        for head, grad in ((actor.mu, grad_u), (actor.log_std, grad_log_std)):
            head.weight.grad = grad.t() @ latent[-1]
            head.bias.grad = grad.sum(dim=0)
        grad_latent = grad_u @ actor.mu.weight + grad_log_std @ actor.log_std.weight
        self._backward(self.latent_layers, latent, grad_latent, batch, relu_last=True, input_columns=None)

    def _layer_dtype(self, index: int, n_layers: int, relu_last: bool) -> th.dtype:
        """The hidden dtype for layers between two hidden layers; float32 for the input and output layers."""
        is_output = index == n_layers - 1 and not relu_last
        return th.float32 if index == 0 or is_output else self.hidden_dtype

    def _forward(self, layers: list[nn.Linear], inputs: th.Tensor, relu_last: bool) -> list[th.Tensor]:
        """The activations ``[inputs, h_1, ..., output]`` (after each ReLU), all float32."""
        activations = [inputs]
        for index, layer in enumerate(layers):
            dtype = self._layer_dtype(index, len(layers), relu_last)
            output = th.addmm(layer.bias.to(dtype), activations[-1].to(dtype), layer.weight.to(dtype).t()).float()
            if relu_last or index < len(layers) - 1:
                output.clamp_min_(0.0)
            activations.append(output)
        return activations

    def _backward(
        self,
        layers: list[nn.Linear],
        activations: list[th.Tensor],
        grad_output: th.Tensor,
        weight_rows: int,
        relu_last: bool,
        input_columns: int | None,
    ) -> th.Tensor:
        """Set the layers' gradients from rows ``[:weight_rows]`` of ``grad_output`` (d loss / d output,
        after the last ReLU when ``relu_last``); with ``input_columns`` return d loss / d inputs of the
        other rows, columns ``[input_columns:]``, else an empty tensor."""
        grad = grad_output
        for index in range(len(layers) - 1, -1, -1):
            layer = layers[index]
            if relu_last or index < len(layers) - 1:
                grad = th.ops.aten.threshold_backward(grad, activations[index + 1], 0.0)
            dtype = self._layer_dtype(index, len(layers), relu_last)
            rows = grad[:weight_rows]
            layer.weight.grad = (rows.t().to(dtype) @ activations[index][:weight_rows].to(dtype)).float()
            layer.bias.grad = rows.sum(dim=0)
            if index > 0:
                grad = (grad.to(dtype) @ layer.weight.to(dtype)).float()
        if input_columns is None:
            return grad.new_empty(0)
        return grad[weight_rows:] @ layers[0].weight[:, input_columns:]
