"""D(AR)MDN / DMDN dynamics models (sb3_safe.common.mdn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from sb3_safe.common.mdn import DARMDN, DMDN, MDNDynamicsModel


@pytest.fixture(autouse=True)
def one_torch_thread() -> object:
    # Tiny networks: extra intra-op threads only add synchronisation stalls on a busy machine.
    previous = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(previous)


def linear_system(n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """s' = 0.9 s + 0.3 a, r = -s^2: a known 1-D system."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    actions = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    return obs, actions, 0.9 * obs + 0.3 * actions, -(obs[:, 0] ** 2)


@pytest.mark.parametrize("autoregressive", [True, False])
def test_mdn_fits_a_known_1d_system(autoregressive: bool) -> None:
    th.manual_seed(0)
    obs, actions, next_obs, rewards = linear_system(600)
    model = MDNDynamicsModel(1, 1, autoregressive=autoregressive, n_components=3, net_arch=(32, 32))
    optimizer = th.optim.Adam(model.parameters(), lr=3e-3)
    result = model.fit(
        obs, actions, next_obs, rewards, optimizer, epochs=40, batch_size=32, rng=np.random.default_rng(0)
    )
    assert result.epochs == 40 and result.n_samples == 600 and np.isfinite(result.val_loss)
    test_obs, test_actions, test_next, test_rewards = linear_system(200, seed=1)
    with th.no_grad():
        predicted, predicted_rewards, costs = model.step(th.as_tensor(test_obs), th.as_tensor(test_actions))
    assert costs is None
    next_error = np.abs(predicted.numpy() - test_next).mean()
    reward_error = np.abs(predicted_rewards.numpy() - test_rewards).mean()
    # Targets span about [-1.2, 1.2] and [-1, 0]; an untrained model is off by ~0.5.
    assert next_error < 0.08, next_error
    assert reward_error < 0.08, reward_error


def test_numpy_fast_path_matches_torch() -> None:
    th.manual_seed(1)
    for autoregressive in (True, False):
        model = MDNDynamicsModel(3, 3, discrete_actions=True, predict_cost=True, autoregressive=autoregressive)
        for parameter in model.parameters():
            parameter.data.normal_()
        model.input_std.fill_(2.0)
        model.target_mean.fill_(0.3)
        model.invalidate_numpy_copy()
        obs = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
        actions = np.arange(7) % 3
        fast = model.numpy_step(obs, actions)
        with th.no_grad():
            slow = model.step(th.as_tensor(obs), th.as_tensor(actions))
        for a, b in zip(fast, slow):
            np.testing.assert_allclose(a, b.numpy(), atol=2e-4)


def test_numpy_copy_is_refreshed_after_load_state_dict() -> None:
    model = MDNDynamicsModel(2, 1)
    obs, actions = np.ones((1, 2), dtype=np.float32), np.zeros((1, 1), dtype=np.float32)
    before = model.numpy_step(obs, actions)[0]
    other = MDNDynamicsModel(2, 1)
    other.target_mean.fill_(5.0)
    model.load_state_dict(other.state_dict())
    after = model.numpy_step(obs, actions)[0]
    assert not np.allclose(before, after)


@pytest.mark.parametrize("autoregressive", [True, False])
def test_only_the_autoregressive_model_couples_output_dimensions(autoregressive: bool) -> None:
    # A non-auto-regressive density factorises: log p(a0, b1) + log p(b0, a1) == log p(a0, a1) + log p(b0, b1).
    th.manual_seed(0)
    network = DARMDN(input_dim=2, output_dim=2, n_components=2, net_arch=(8,), autoregressive=autoregressive)
    x = th.randn(5, 2)
    a, b = th.randn(5, 2), th.randn(5, 2)
    mixed_1 = th.stack([a[:, 0], b[:, 1]], dim=1)
    mixed_2 = th.stack([b[:, 0], a[:, 1]], dim=1)
    with th.no_grad():
        mixed = network.log_prob(x, mixed_1) + network.log_prob(x, mixed_2)
        gap = mixed - (network.log_prob(x, a) + network.log_prob(x, b))
    if autoregressive:
        assert gap.abs().max() > 1e-3
        assert th.equal(network.y_mask, th.tril(th.ones(2, 2), diagonal=-1))
    else:
        assert gap.abs().max() < 1e-4


def test_dmdn_is_not_autoregressive_and_learned_cost_head() -> None:
    assert not DMDN(3, 2).autoregressive
    obs, actions, next_obs, rewards = linear_system(50)
    model = MDNDynamicsModel(1, 1, predict_cost=True, autoregressive=False)
    optimizer = th.optim.Adam(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="needs the costs"):
        model.fit(obs, actions, next_obs, rewards, optimizer, epochs=1)
    model.fit(obs, actions, next_obs, rewards, optimizer, costs=(obs[:, 0] > 0).astype(np.float32), epochs=2)
    _, _, costs = model.numpy_step(obs[:5], actions[:5])
    assert costs is not None and costs.shape == (5,)  # what the head learns: test_learned_step_costs_...


def test_learned_step_costs_are_whole_numbers_and_zero_without_violations() -> None:
    # A regression head never outputs exactly 0; rounding makes "no violation" exact, so cost-first
    # rankings fall back on the return among safe candidates.
    obs, actions, next_obs, rewards = linear_system(200)
    model = MDNDynamicsModel(1, 1, predict_cost=True)
    optimizer = th.optim.Adam(model.parameters(), lr=1e-3)
    model.fit(obs, actions, next_obs, rewards, optimizer, costs=np.zeros(len(obs), np.float32), epochs=5)
    _, _, numpy_costs = model.numpy_step(obs, actions)
    with th.no_grad():
        _, _, torch_costs = model.step(th.as_tensor(obs), th.as_tensor(actions))
    assert numpy_costs is not None and torch_costs is not None
    assert (numpy_costs == 0).all() and (torch_costs == 0).all()
    model.fit(obs, actions, next_obs, rewards, optimizer, costs=(obs[:, 0] > 0).astype(np.float32), epochs=20)
    _, _, numpy_costs = model.numpy_step(obs, actions)
    assert numpy_costs is not None
    assert set(np.unique(numpy_costs)) <= {0.0, 1.0, 2.0} and numpy_costs.max() >= 1.0


def test_fit_rejects_bad_input() -> None:
    obs, actions, next_obs, rewards = linear_system(20)
    model = MDNDynamicsModel(1, 1)
    optimizer = th.optim.Adam(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="rows"):
        model.fit(obs, actions[:10], next_obs, rewards, optimizer, epochs=1)
    bad = next_obs.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(obs, actions, bad, rewards, optimizer, epochs=1)
    with pytest.raises(ValueError, match="holdout_fraction"):
        model.fit(obs, actions, next_obs, rewards, optimizer, epochs=1, holdout_fraction=1.5)


def test_early_stopping_stops_before_the_epoch_budget() -> None:
    th.manual_seed(0)
    obs, actions, next_obs, rewards = linear_system(60)
    model = MDNDynamicsModel(1, 1, net_arch=(16,))
    optimizer = th.optim.Adam(model.parameters(), lr=3e-2)
    result = model.fit(
        obs, actions, next_obs, rewards, optimizer, epochs=400, batch_size=8, early_stopping_patience=3,
        rng=np.random.default_rng(0),
    )
    assert result.epochs < 400
    assert model.is_fitted
