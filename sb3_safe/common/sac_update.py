"""SAC's gradient step with one backward pass for its three losses (a faster variant of ``SAC.train``).

SB3's ``SAC.train`` takes three backward passes per gradient step (entropy coefficient, critic,
actor), and the actor's also computes the critics' weight gradients, which it then discards. On a
CPU these small networks are bound by matmuls and per-call overhead, so that work shows:
:func:`fused_sac_train` builds the three losses, freezes the critics while the actor loss is built
(so the actor's backward computes only what the actor needs), sums the losses and runs one
backward pass, then steps the three optimisers. On SafeHopper-v0 sizes (twin 256 x 256 critics,
batch 256, one CPU thread) a gradient step took about a fifth less time (docs/benchmarks.md).

One difference from SB3's order: the actor loss uses the critics *before* this step's critic
update (SB3 rebuilds it after the update), as the actor and critic updates of Haarnoja et al.'s
algorithm 1 read the same parameters. Everything else is SB3's: the targets use the actor before
its update and the entropy coefficient before its update, the same losses, optimisers, learning
rate schedules, target updates and logger keys.
"""

from __future__ import annotations

import numpy as np
import torch as th
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.sac import SAC
from torch import nn
from torch.nn import functional as F


def _set_requires_grad(module: nn.Module, requires_grad: bool) -> None:
    for param in module.parameters():
        param.requires_grad_(requires_grad)


def _soft_update(source: list[th.Tensor], target: list[th.Tensor], tau: float) -> None:
    """``target <- (1 - tau) target + tau source`` for all tensors in one foreach kernel (the arithmetic
    of SB3's ``polyak_update``, which loops over tensors in Python)."""
    with th.no_grad():
        th._foreach_lerp_(target, source, tau)


def fused_sac_train(model: SAC, gradient_steps: int, batch_size: int) -> None:
    """``gradient_steps`` SAC updates of ``model`` with one backward pass each (see the module docstring).

    Drop-in for ``SAC.train`` (same arguments, logger keys and counters), for SAC and its subclasses
    whose critics are SB3's ``ContinuousCritic`` interface (a tuple of Q-values per call).

    :param model: the SAC (or subclass) instance to update
    :param gradient_steps: number of gradient steps
    :param batch_size: minibatch size
    """
    model.policy.set_training_mode(True)
    optimizers = [model.actor.optimizer, model.critic.optimizer]
    if model.ent_coef_optimizer is not None:
        optimizers.append(model.ent_coef_optimizer)
    model._update_learning_rate(optimizers)

    critic_params = list(model.critic.parameters())
    critic_target_params = list(model.critic_target.parameters())
    ent_coefs, ent_coef_losses, actor_losses, critic_losses = [], [], [], []
    for gradient_step in range(gradient_steps):
        data = model.replay_buffer.sample(batch_size, env=model._vec_normalize_env)  # type: ignore[union-attr]
        discounts = data.discounts if data.discounts is not None else model.gamma
        if model.use_sde:
            model.actor.reset_noise()

        actions_pi, log_prob = model.actor.action_log_prob(data.observations)
        log_prob = log_prob.reshape(-1, 1)
        step_losses = []
        if model.ent_coef_optimizer is not None and model.log_ent_coef is not None:
            ent_coef = th.exp(model.log_ent_coef.detach())
            assert isinstance(model.target_entropy, float)
            ent_coef_loss = -(model.log_ent_coef * (log_prob + model.target_entropy).detach()).mean()
            ent_coef_losses.append(ent_coef_loss.detach())
            step_losses.append(ent_coef_loss)
        else:
            ent_coef = model.ent_coef_tensor
        ent_coefs.append(ent_coef.detach().reshape(()))

        with th.no_grad():
            next_actions, next_log_prob = model.actor.action_log_prob(data.next_observations)
            next_q_values = th.cat(model.critic_target(data.next_observations, next_actions), dim=1)
            next_q_values = next_q_values.min(dim=1, keepdim=True).values - ent_coef * next_log_prob.reshape(-1, 1)
            target_q_values = data.rewards + (1 - data.dones) * discounts * next_q_values
        current_q_values = model.critic(data.observations, data.actions)
        critic_loss = 0.5 * sum(F.mse_loss(current_q, target_q_values) for current_q in current_q_values)
        assert isinstance(critic_loss, th.Tensor)
        critic_losses.append(critic_loss.detach())

        # Frozen critics: the actor loss's backward pass then stops at the critics' inputs.
        _set_requires_grad(model.critic, False)
        q_values_pi = th.cat(model.critic(data.observations, actions_pi), dim=1)
        _set_requires_grad(model.critic, True)
        actor_loss = (ent_coef * log_prob - q_values_pi.min(dim=1, keepdim=True).values).mean()
        actor_losses.append(actor_loss.detach())

        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        th.stack([*step_losses, critic_loss, actor_loss]).sum().backward()
        for optimizer in optimizers:
            optimizer.step()

        if gradient_step % model.target_update_interval == 0:
            _soft_update(critic_params, critic_target_params, model.tau)
            polyak_update(model.batch_norm_stats, model.batch_norm_stats_target, 1.0)

    model._n_updates += gradient_steps
    model.logger.record("train/n_updates", model._n_updates, exclude="tensorboard")
    model.logger.record("train/ent_coef", _mean(ent_coefs))
    model.logger.record("train/actor_loss", _mean(actor_losses))
    model.logger.record("train/critic_loss", _mean(critic_losses))
    if ent_coef_losses:
        model.logger.record("train/ent_coef_loss", _mean(ent_coef_losses))


def _mean(values: list[th.Tensor]) -> float:
    # One device-to-host copy per log key instead of SB3's one ``.item()`` per loss and step.
    return float(np.mean(th.stack(values).float().cpu().numpy()))
