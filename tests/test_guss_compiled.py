"""The compiled whole-horizon rollouts agree with the NumPy one-step-at-a-time path."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_safe.common.mdn import MDNDynamicsModel
from sb3_safe.guss.policies import NumpyDynamics
from sb3_safe.guss.rollout import BatchedMLPPolicies, RolloutEvaluator, RolloutResult


def random_model(obs_dim: int, n_actions: int, discrete: bool, **kwargs: object) -> MDNDynamicsModel:
    """A model with non-trivial weights and normalisers (an unfitted one predicts almost nothing)."""
    th.manual_seed(0)
    model = MDNDynamicsModel(obs_dim, n_actions, discrete_actions=discrete, **kwargs)  # type: ignore[arg-type]
    with th.no_grad():
        model.input_mean.normal_()
        model.input_std.uniform_(0.5, 2.0)
        model.target_mean.normal_()
        model.target_std.uniform_(0.1, 1.0)
        for parameter in model.network.parameters():
            parameter.mul_(3.0)
        if model.predict_cost:  # step costs spread over several whole numbers (they are rounded)
            model.target_mean[-1] = 1.0
            model.target_std[-1] = 3.0
    model.invalidate_numpy_copy()
    return model


def assert_same(fast: RolloutResult, slow: RolloutResult) -> None:
    np.testing.assert_allclose(fast.observations, slow.observations, atol=1e-4)
    np.testing.assert_allclose(fast.returns, slow.returns, atol=1e-4)
    np.testing.assert_allclose(fast.costs, slow.costs, atol=1e-4)
    assert fast.first_actions.dtype == slow.first_actions.dtype
    np.testing.assert_allclose(fast.first_actions, slow.first_actions, atol=1e-5)


@pytest.mark.parametrize(
    ("discrete", "model_kwargs"),
    [
        (False, {}),
        (True, {}),
        (False, {"predict_cost": True}),
        (False, {"autoregressive": False}),
        (False, {"net_arch": [32]}),
        (False, {"net_arch": [16, 16, 16]}),
    ],
)
def test_compiled_rollouts_match_the_numpy_path(discrete: bool, model_kwargs: dict) -> None:
    obs_dim, n_actions = (6, 3) if discrete else (3, 1)
    model = random_model(obs_dim, n_actions, discrete, **model_kwargs)
    predict_cost = bool(model_kwargs.get("predict_cost", False))
    rng = np.random.default_rng(0)
    start = rng.normal(size=obs_dim).astype(np.float32)
    cost_fn = None if predict_cost else (lambda obs: np.abs(obs[:, 0] - start[0]))  # a float cost
    fast = RolloutEvaluator(NumpyDynamics(model), horizon=10, cost_fn=cost_fn)
    slow = RolloutEvaluator(NumpyDynamics(model, compiled=False), horizon=10, cost_fn=cost_fn)
    assert fast.model.supports_rollouts and not slow.model.supports_rollouts

    observation_space = spaces.Box(-5.0, 5.0, (obs_dim,), np.float32)
    action_space = spaces.Discrete(n_actions) if discrete else spaces.Box(-2.0, 2.0, (1,), np.float32)
    policies = BatchedMLPPolicies(observation_space, action_space, [5, 5] if discrete else [5])
    params = rng.normal(size=(25, policies.n_params)).astype(np.float32)
    fast_policies = fast.evaluate_policies(start, policies, params)
    assert_same(fast_policies, slow.evaluate_policies(start, policies, params))
    assert fast_policies.costs.max() > fast_policies.costs.min()  # the costs are not all alike

    if discrete:
        sequences = rng.integers(n_actions, size=(20, 12))
    else:
        sequences = rng.uniform(-2.0, 2.0, (20, 12, 1)).astype(np.float32)
    assert_same(fast.evaluate_sequences(start, sequences), slow.evaluate_sequences(start, sequences))


def test_compiled_rollouts_follow_refits_and_skip_unequal_hidden_sizes() -> None:
    model = random_model(3, 1, False)
    dynamics = NumpyDynamics(model)
    evaluator = RolloutEvaluator(dynamics, horizon=5, cost_fn=lambda obs: np.zeros(len(obs)))
    sequences = np.ones((4, 5, 1), np.float32)
    before = evaluator.evaluate_sequences(np.zeros(3, np.float32), sequences).returns
    with th.no_grad():
        model.target_mean[-1] += 1.0  # the reward's offset: +1 per step
    model.invalidate_numpy_copy()
    after = evaluator.evaluate_sequences(np.zeros(3, np.float32), sequences).returns
    np.testing.assert_allclose(after - before, 5.0, atol=1e-4)

    assert not NumpyDynamics(MDNDynamicsModel(3, 1, net_arch=[64, 32])).supports_rollouts
