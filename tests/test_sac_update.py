"""Tests of the one-backward SAC step (sb3_safe.common.sac_update) against SB3's SAC.train, and of its
hand-written backward pass against autograd's."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure
from stable_baselines3.common.torch_layers import FlattenExtractor

import sb3_safe  # noqa: F401 - registers the safe envs
from sb3_safe.common.sac_update import (
    autograd_fused_sac_train,
    fused_sac_train,
    mlp_fused_sac_train,
    mlp_step_unsupported,
)


def sac_with_data(
    learning_rate: float, policy_kwargs: dict[str, Any] | None = None, env_id: str = "SafePendulum-v0", **kwargs: Any
) -> SAC:
    policy_kwargs = {"net_arch": [16, 16], "optimizer_class": th.optim.SGD, **(policy_kwargs or {})}
    model = SAC("MlpPolicy", env_id, learning_rate=learning_rate, learning_starts=0, batch_size=16,
                policy_kwargs=policy_kwargs, seed=0, device="cpu", **kwargs)
    model.set_logger(configure(None, []))
    rng = np.random.default_rng(0)
    obs_dim, action_dim = model.observation_space.shape[0], model.action_space.shape[0]
    for _ in range(64):
        obs, next_obs = rng.normal(size=(2, 1, obs_dim))
        action = rng.uniform(-1, 1, (1, action_dim))
        model.replay_buffer.add(obs, next_obs, action, rng.normal(size=1), np.array([False]), [{}])
    return model


class NormalizingExtractor(FlattenExtractor):
    """A features extractor the hand-written step does not know (it scales the observations)."""

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return super().forward(observations) / 10.0


def seed_minibatch_and_noise() -> None:
    np.random.seed(0)  # the replay buffer's minibatch
    th.manual_seed(0)  # the actor's action samples


def gradients_at_each_step(model: SAC, train: Any) -> dict[str, list[th.Tensor]]:
    """Run one gradient step of ``train`` and record the gradients each optimiser steps with."""
    optimizers = {"actor": model.actor.optimizer, "critic": model.critic.optimizer, "ent_coef": model.ent_coef_optimizer}
    recorded: dict[str, list[th.Tensor]] = {}
    for name, optimizer in optimizers.items():
        if optimizer is None:  # a fixed entropy coefficient
            continue
        step = optimizer.step

        def recording_step(*args: Any, _name: str = name, _optimizer: Any = optimizer, _step: Any = step) -> Any:
            recorded[_name] = [p.grad.clone() for group in _optimizer.param_groups for p in group["params"]]
            return _step(*args)

        optimizer.step = recording_step  # type: ignore[method-assign]
    seed_minibatch_and_noise()
    train(model)
    return recorded


@pytest.mark.parametrize("fused_train", [autograd_fused_sac_train, mlp_fused_sac_train])
def test_fused_step_has_sb3s_gradients_for_every_loss(fused_train: Any) -> None:
    # Learning rate 0: SB3's actor loss then reads the same critics as the fused step, so every
    # optimiser must get exactly SB3's gradients (and none of the actor loss's reaches the critics).
    sb3_model = sac_with_data(learning_rate=0.0)
    fused_model = copy.deepcopy(sb3_model)
    expected = gradients_at_each_step(sb3_model, lambda m: m.train(1, 16))
    got = gradients_at_each_step(fused_model, lambda m: fused_train(m, 1, 16))
    assert set(got) == {"actor", "critic", "ent_coef"}
    for name in expected:
        for expected_grad, grad in zip(expected[name], got[name], strict=True):
            assert th.allclose(grad, expected_grad, atol=1e-6), name
    assert all(p.requires_grad for p in fused_model.critic.parameters())


def test_fused_step_updates_critics_and_targets_as_sb3() -> None:
    sb3_model = sac_with_data(learning_rate=0.05)
    fused_model = copy.deepcopy(sb3_model)
    target_before = [p.detach().clone() for p in fused_model.critic_target.parameters()]
    for model, train in ((sb3_model, lambda m: m.train(1, 16)), (fused_model, lambda m: fused_sac_train(m, 1, 16))):
        seed_minibatch_and_noise()
        train(model)
    # The critic and entropy updates are SB3's; the actor update differs (it read the pre-update critics).
    for sb3_param, param in zip(sb3_model.critic.parameters(), fused_model.critic.parameters(), strict=True):
        assert th.allclose(param, sb3_param, atol=1e-6)
    assert th.allclose(fused_model.log_ent_coef, sb3_model.log_ent_coef)
    tau = fused_model.tau
    for before, critic, target in zip(
        target_before, fused_model.critic.parameters(), fused_model.critic_target.parameters(), strict=True
    ):
        assert th.allclose(target, (1 - tau) * before + tau * critic, atol=1e-7)
    assert fused_model._n_updates == 1


@pytest.mark.parametrize("ent_coef", ["auto", 0.1])
def test_fused_steps_log_sb3s_keys(ent_coef: Any) -> None:
    model = sac_with_data(learning_rate=1e-3, ent_coef=ent_coef)
    values: dict[str, Any] = {}
    model.logger.record = lambda key, value, exclude=None: values.__setitem__(key, value)  # type: ignore[method-assign]
    fused_sac_train(model, 3, 16)
    expected = {"train/n_updates", "train/ent_coef", "train/actor_loss", "train/critic_loss", "train/learning_rate"}
    assert expected | ({"train/ent_coef_loss"} if ent_coef == "auto" else set()) == set(values)
    assert values["train/n_updates"] == 3
    assert all(np.isfinite(v) for v in values.values())
    if ent_coef != "auto":
        assert values["train/ent_coef"] == pytest.approx(0.1)


def parameters_after(model: SAC, train: Any) -> list[th.Tensor]:
    seed_minibatch_and_noise()
    train(model)
    learned_ent_coef = [model.log_ent_coef] if model.log_ent_coef is not None else []
    return [p.detach().clone() for p in (*model.policy.parameters(), *learned_ent_coef)]


def tie_the_critics(model: SAC) -> None:
    model.critic.q_networks[1].load_state_dict(model.critic.q_networks[0].state_dict())


def push_the_log_std_above_its_clamp(model: SAC) -> None:
    with th.no_grad():
        model.actor.log_std.bias.fill_(5.0)


def saturate_the_squashing(model: SAC) -> None:
    with th.no_grad():
        model.actor.mu.bias.fill_(6.0)


@pytest.mark.parametrize(
    ("env_id", "settings", "edit"),
    [
        ("SafePendulum-v0", {}, None),
        ("SafeHopper-v0", {}, None),
        ("SafeHopper-v0", {"ent_coef": 0.1}, None),
        ("SafeHopper-v0", {"policy_kwargs": {"net_arch": {"pi": [16, 16, 16], "qf": [8]}, "n_critics": 3}}, None),
        ("SafeHopper-v0", {"policy_kwargs": {"net_arch": []}}, None),
        ("SafeHopper-v0", {}, tie_the_critics),
        ("SafeHopper-v0", {}, push_the_log_std_above_its_clamp),
        ("SafeHopper-v0", {}, saturate_the_squashing),
    ],
)
def test_hand_written_step_has_autograds_gradients_and_losses(env_id: str, settings: dict[str, Any], edit: Any) -> None:
    # Every gradient each optimiser steps with, with several action dimensions (SafeHopper-v0), learned and
    # fixed entropy coefficients, deeper, shallower and empty nets, three critics, tied critics (the min's
    # gradient goes to the critic torch's min returns), a log-std above its clamp (no gradient through it)
    # and squashed actions near +-1 (the epsilon of the log-prob).
    autograd_model = sac_with_data(learning_rate=0.0, env_id=env_id, **settings)
    if edit is not None:
        edit(autograd_model)
    hand_model = copy.deepcopy(autograd_model)
    assert mlp_step_unsupported(hand_model) is None
    logged: dict[str, dict[str, Any]] = {"autograd": {}, "hand": {}}
    for name, model in (("autograd", autograd_model), ("hand", hand_model)):
        model.logger.record = lambda key, value, exclude=None, _values=logged[name]: _values.__setitem__(key, value)  # type: ignore[method-assign]
    expected = gradients_at_each_step(autograd_model, lambda m: autograd_fused_sac_train(m, 1, 16))
    got = gradients_at_each_step(hand_model, lambda m: mlp_fused_sac_train(m, 1, 16))
    assert set(got) == set(expected)
    for name in expected:
        for expected_grad, grad in zip(expected[name], got[name], strict=True):
            # Relative to the tensor's scale: autograd's Gaussian log-prob cancels terms of the size
            # noise / std, which leaves float32 rounding of that size in its gradients.
            assert (grad - expected_grad).abs().max() <= 1e-4 * expected_grad.abs().max() + 1e-7, name
    assert logged["hand"].keys() == logged["autograd"].keys()
    for key, value in logged["autograd"].items():
        assert logged["hand"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_a_log_std_below_its_clamp_gets_no_gradient() -> None:
    # Not compared with autograd: at the clamp's std of exp(-20) autograd's Gaussian log-prob cancels terms of
    # size noise / std (about 1e9) in float32, which wipes out the mean's gradient of that action dimension.
    model = sac_with_data(learning_rate=0.0, env_id="SafeHopper-v0")
    with th.no_grad():
        model.actor.log_std.bias[0] = -25.0
    recorded = gradients_at_each_step(model, lambda m: mlp_fused_sac_train(m, 1, 16))
    names = [name for name, _ in model.actor.named_parameters()]
    grads = dict(zip(names, recorded["actor"], strict=True))
    assert th.all(grads["log_std.weight"][0] == 0) and grads["log_std.bias"][0] == 0
    assert th.any(grads["log_std.weight"][1:] != 0) and th.any(grads["mu.weight"][0] != 0)
    assert all(th.isfinite(grad).all() for grads_of in recorded.values() for grad in grads_of)


def test_hand_written_steps_keep_to_autograds_over_several_adam_steps() -> None:
    # The parameters and targets after a few Adam steps with the target update every second step.
    autograd_model = sac_with_data(
        learning_rate=0.01, env_id="SafeHopper-v0", target_update_interval=2,
        policy_kwargs={"optimizer_class": th.optim.Adam},
    )
    hand_model = copy.deepcopy(autograd_model)
    expected = parameters_after(autograd_model, lambda m: autograd_fused_sac_train(m, 3, 16))
    got = parameters_after(hand_model, lambda m: mlp_fused_sac_train(m, 3, 16))
    for expected_param, param in zip(expected, got, strict=True):
        assert th.allclose(param, expected_param, atol=1e-6, rtol=1e-5)
    for expected_param, param in zip(autograd_model.critic_target.parameters(), hand_model.critic_target.parameters()):
        assert th.allclose(param, expected_param, atol=1e-6, rtol=1e-5)
    assert hand_model._n_updates == autograd_model._n_updates == 3


def test_bfloat16_leaves_nets_without_hidden_to_hidden_layers_in_float32() -> None:
    # One hidden layer: the input and output layers (and the heads) must stay float32, so nothing changes.
    float32_model = sac_with_data(learning_rate=0.05, env_id="SafeHopper-v0", policy_kwargs={"net_arch": [64]})
    bfloat16_model = copy.deepcopy(float32_model)
    expected = parameters_after(float32_model, lambda m: fused_sac_train(m, 1, 16))
    got = parameters_after(bfloat16_model, lambda m: fused_sac_train(m, 1, 16, hidden_precision="bfloat16"))
    assert all(th.equal(g, e) for g, e in zip(got, expected, strict=True))


def test_bfloat16_hidden_layers_change_the_update_only_by_rounding() -> None:
    float32_model = sac_with_data(learning_rate=0.05, policy_kwargs={"net_arch": [64, 64]})
    bfloat16_model = copy.deepcopy(float32_model)
    before = [p.detach().clone() for p in float32_model.policy.parameters()]
    expected = parameters_after(float32_model, lambda m: fused_sac_train(m, 1, 16))
    got = parameters_after(bfloat16_model, lambda m: fused_sac_train(m, 1, 16, hidden_precision="bfloat16"))
    steps = [(e - b).norm() for e, b in zip(expected, before)]
    differences = [(g - e).norm() for g, e in zip(got, expected)]
    # Only the hidden-to-hidden layers compute in bfloat16 (8-bit mantissa): the SGD steps differ by a
    # few per cent, not more, and the differences are not zero.
    assert all(d <= 0.05 * s + 1e-7 for d, s in zip(differences, steps))
    assert sum(differences) > 0
    assert all(p.dtype == th.float32 for p in bfloat16_model.policy.parameters())


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"use_sde": True}, "gSDE"),
        ({"policy_kwargs": {"activation_fn": th.nn.Tanh}}, "nn.ReLU"),
        ({"policy_kwargs": {"features_extractor_class": NormalizingExtractor}}, "FlattenExtractor"),
    ],
)
def test_unsupported_policies_fall_back_to_autograd_in_float32_only(settings: dict[str, Any], reason: str) -> None:
    model = sac_with_data(learning_rate=0.01, **settings)
    assert reason in (mlp_step_unsupported(model) or "")
    fallback = sac_with_data(learning_rate=0.01, **settings)  # the same seed (a gSDE actor cannot be deep-copied)
    expected = parameters_after(model, lambda m: autograd_fused_sac_train(m, 2, 16))
    got = parameters_after(fallback, lambda m: fused_sac_train(m, 2, 16))
    assert all(th.equal(g, e) for g, e in zip(got, expected))
    with pytest.raises(ValueError, match=reason):
        fused_sac_train(model, 1, 16, hidden_precision="bfloat16")
    with pytest.raises(ValueError, match=reason):
        mlp_fused_sac_train(model, 1, 16)


def test_unknown_hidden_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="hidden_precision must be one of"):
        fused_sac_train(sac_with_data(learning_rate=0.01), 1, 16, hidden_precision="float16")


def test_frozen_layers_foreign_parameters_and_subclassed_networks_are_refused() -> None:
    frozen = sac_with_data(learning_rate=0.01)
    frozen.critic.q_networks[0][0].weight.requires_grad_(False)
    assert "(trainable) weights and biases" in (mlp_step_unsupported(frozen) or "")

    foreign = sac_with_data(learning_rate=0.01)
    foreign.actor.optimizer.add_param_group({"params": [th.nn.Parameter(th.zeros(2))]})
    assert "actor optimiser" in (mlp_step_unsupported(foreign) or "")

    extra_ent_coef = sac_with_data(learning_rate=0.01)
    assert extra_ent_coef.ent_coef_optimizer is not None
    extra_ent_coef.ent_coef_optimizer.add_param_group({"params": [th.nn.Parameter(th.zeros(1))]})
    assert "log_ent_coef alone" in (mlp_step_unsupported(extra_ent_coef) or "")

    subclassed = sac_with_data(learning_rate=0.01)
    subclassed.actor.__class__ = type("CustomActor", (type(subclassed.actor),), {})
    assert "SB3's Actor" in (mlp_step_unsupported(subclassed) or "")
