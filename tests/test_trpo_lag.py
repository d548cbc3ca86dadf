"""TRPOLag: learning under a cost budget, save/load, errors, spaces and logger keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from toy_envs import COST_LIMIT, LineEnv, assert_same_weights, make_env, mean_episode_return, read_csv_keys

from sb3_safe.common.cost import CostSignalError
from sb3_safe.trpo_lag import TRPOLag


def small_trpo_lag(env: Any, **kwargs: Any) -> TRPOLag:
    settings: dict[str, Any] = dict(
        n_steps=128, batch_size=64, n_critic_updates=5, target_kl=0.02, cost_limit=COST_LIMIT, seed=0, device="cpu"
    )
    settings.update(kwargs)
    return TRPOLag("MlpPolicy", env, **settings)


def test_learns_to_respect_the_budget_and_improves_return() -> None:
    model = small_trpo_lag(make_env(), stats_window_size=40, lagrangian_kwargs=dict(lr=0.1))
    model.learn(512)
    assert model.safety_stats.ep_cost_mean > COST_LIMIT
    assert model.lagrange_value > 0.1
    model.learn(4096, reset_num_timesteps=False)
    assert model.safety_stats.ep_cost_mean <= COST_LIMIT + 0.5
    assert mean_episode_return(model) > 6.3


def test_lagrangian_advantage_is_written_before_the_trust_region_step(monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_trpo_lag(make_env(), n_steps=16, batch_size=16)
    advantages_seen_by_the_step = []
    trpo_policy_step = model._trpo_policy_step

    def recording_step() -> None:
        advantages_seen_by_the_step.append(model.rollout_buffer.advantages.copy())
        trpo_policy_step()

    monkeypatch.setattr(model, "_trpo_policy_step", recording_step)
    written = []
    write = model._write_lagrangian_advantages

    def recording_write(lam: float) -> None:
        write(lam)
        written.append(model.rollout_buffer.advantages.copy())

    monkeypatch.setattr(model, "_write_lagrangian_advantages", recording_write)
    model.learn(64)
    assert len(advantages_seen_by_the_step) == len(written) == 2
    for seen, lagrangian in zip(advantages_seen_by_the_step, written, strict=True):
        np.testing.assert_array_equal(seen, lagrangian)
    buffer = model.rollout_buffer
    # After train(), the buffer's advantages are the Lagrangian ones: (A_r - lam A_c) / (1 + lam), normalised.
    buffer.reset()
    buffer.advantages[:] = np.array([[1.0, -1.0]] * 16, dtype=np.float32)
    buffer.cost_advantages[:] = np.array([[1.0, 0.0]] * 16, dtype=np.float32)
    model._write_lagrangian_advantages(lam=3.0)
    # A_r standardised (std over 32 values of +-1 is ~1.016), A_c centred and divided by the same std.
    scale = np.std(np.array([1.0, -1.0] * 16), ddof=1) + 1e-8
    expected_first = (1.0 / scale - 3.0 * 0.5 / scale) / 4.0
    expected_second = (-1.0 / scale + 3.0 * 0.5 / scale) / 4.0
    np.testing.assert_allclose(buffer.advantages[0], [expected_first, expected_second], rtol=1e-5)


class LinearExtractor(BaseFeaturesExtractor):
    """A features extractor with weights, so that a critic-only copy of it has parameters to train."""

    def __init__(self, observation_space: spaces.Box) -> None:
        super().__init__(observation_space, features_dim=8)
        self.linear = nn.Linear(int(np.prod(observation_space.shape)), 8)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return th.tanh(self.linear(observations))


def test_both_critics_are_fitted_in_every_critic_step() -> None:
    # V and V_c share the twin critic's tensors: fitted one after the other, the idle one would get zero
    # gradients and keep moving on Adam's momentum.
    model = small_trpo_lag(make_env())
    head = model.policy.value_net.head
    optimizer = model.policy.optimizer
    members_with_gradient = []
    original_step = optimizer.step

    def recording_step(*args: Any, **kwargs: Any) -> Any:
        members_with_gradient.append(tuple(bool(head.weight.grad[i].abs().sum() > 0) for i in range(2)))
        return original_step(*args, **kwargs)

    optimizer.step = recording_step
    model.learn(256)
    assert len(members_with_gradient) == model.n_critic_updates * 4  # one pass: 256 rows / batch_size 64
    assert all(value and cost for value, cost in members_with_gradient)


def test_the_critic_only_features_extractor_is_not_frozen_in_the_critic_fit() -> None:
    model = small_trpo_lag(
        make_env(), policy_kwargs=dict(features_extractor_class=LinearExtractor, share_features_extractor=False)
    )
    actor = {id(param) for param in model._actor_parameters()}
    assert all(id(param) in actor for param in model.policy.pi_features_extractor.parameters())
    assert not any(id(param) in actor for param in model.policy.vf_features_extractor.parameters())
    before = model.policy.vf_features_extractor.linear.weight.detach().clone()
    model.learn(256)
    assert not th.equal(model.policy.vf_features_extractor.linear.weight, before)


def test_save_load_restores_lambda_and_actions(tmp_path: Path) -> None:
    model = small_trpo_lag(make_env(), lagrangian_kwargs=dict(lr=0.1))
    model.learn(512)
    lam = model.lagrange_value
    assert lam > 0.001
    observations = np.linspace(0.0, 1.0, 11, dtype=np.float32).reshape(-1, 1)
    actions, _ = model.predict(observations, deterministic=True)
    model.save(tmp_path / "trpo_lag")

    loaded = TRPOLag.load(tmp_path / "trpo_lag", env=make_env(), device="cpu")
    assert loaded.lagrange_value == pytest.approx(lam)
    assert_same_weights(model.policy, loaded.policy)
    np.testing.assert_array_equal(loaded.predict(observations, deterministic=True)[0], actions)
    loaded.learn(256, reset_num_timesteps=False)


def test_load_with_other_multiplier_settings_goes_on_from_the_saved_lambda(tmp_path: Path) -> None:
    model = small_trpo_lag(make_env(), lagrangian_kwargs=dict(lr=0.1))
    model.learn(512)
    lam = model.lagrange_value
    model.save(tmp_path / "trpo_lag")

    kept = TRPOLag.load(tmp_path / "trpo_lag", env=make_env(), device="cpu")
    assert kept.lagrange_multiplier.update_rule == "plain" and kept.lagrange_value == pytest.approx(lam)
    unset = TRPOLag.load(tmp_path / "trpo_lag", env=make_env(), device="cpu", lagrangian_kwargs=None)
    assert unset.lagrange_value == pytest.approx(lam)

    pid = dict(kp=0.0, ki=0.5, kd=0.0)
    loaded = TRPOLag.load(
        tmp_path / "trpo_lag", env=make_env(), device="cpu", lagrangian_update="pid", lagrangian_kwargs=pid
    )
    multiplier = loaded.lagrange_multiplier
    assert (multiplier.update_rule, multiplier.ki, multiplier.value) == ("pid", 0.5, pytest.approx(lam))
    assert multiplier.update(COST_LIMIT + 1.0) == pytest.approx(lam + 0.5)


def test_bad_inputs_give_clear_errors() -> None:
    with pytest.raises(ValueError, match="cost_limit"):
        small_trpo_lag(make_env(), cost_limit=-0.5)
    with pytest.raises(ValueError, match="lagrangian_kwargs must not contain 'cost_limit'"):
        small_trpo_lag(make_env(), lagrangian_kwargs=dict(cost_limit=3.0))
    model = small_trpo_lag(make_vec_env(lambda: LineEnv(discrete=True), n_envs=1))
    with pytest.raises(CostSignalError, match="LineEnv.*info\\['cost'\\] is missing"):
        model.learn(128)


@pytest.mark.parametrize("continuous", [False, True])
def test_discrete_and_box_actions_update_policy_critic_and_multiplier(continuous: bool) -> None:
    model = small_trpo_lag(make_env(continuous=continuous), policy_kwargs=dict(cost_value_head="shared"))
    actor_before = [param.detach().clone() for param in model._actor_parameters()]
    cost_head_before = model.policy.cost_value_net.weight.detach().clone()
    model.learn(256)
    assert np.isfinite(model.logger.name_to_value["train/cost_value_loss"])
    assert any(not th.equal(old, new) for old, new in zip(actor_before, model._actor_parameters(), strict=True))
    assert not th.equal(model.policy.cost_value_net.weight, cost_head_before)
    assert model.lagrange_value > 0.001  # the episodes cost more than the budget


def test_logger_keys(tmp_path: Path) -> None:
    model = small_trpo_lag(make_env())
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(384)
    expected = {
        "train/lagrange_multiplier",
        "train/cost_value_loss",
        "train/ep_cost_estimate",
        "train/policy_objective",
        "rollout/ep_cost_mean",
        "safety/violations_total",
    }
    assert expected <= read_csv_keys(tmp_path)
