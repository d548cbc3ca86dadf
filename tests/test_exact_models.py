"""The exact batched models of the classic envs step as the envs do."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import sb3_safe  # noqa: F401 - registers the envs
from sb3_safe.envs.exact_models import EXACT_MODELS, AcrobotExactModel, PendulumExactModel


def env_transitions(env_id: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(obs, action, next obs, reward) of ``n`` real steps from random states, random actions."""
    env = gym.make(env_id)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    rows: list[tuple] = []
    unwrapped = env.unwrapped
    for _ in range(n):
        if env_id == "SafePendulum-v0":
            unwrapped.state = np.array([rng.uniform(-np.pi, np.pi), rng.uniform(-8, 8)])
            action = rng.uniform(-2.5, 2.5, size=1).astype(np.float32)  # beyond the bounds: the env clips
            obs = unwrapped._get_obs()
        else:
            velocities = rng.uniform(-1, 1, 2) * [4 * np.pi, 9 * np.pi]  # up to Acrobot-v1's bounds
            unwrapped.state = np.concatenate([rng.uniform(-np.pi, np.pi, 2), velocities])
            action = int(rng.integers(3))
            obs = unwrapped._get_ob()
        next_obs, reward, *_ = env.step(action)
        rows.append((obs, action, next_obs, reward))
    obs, actions, next_obs, rewards = (np.array(column) for column in zip(*rows, strict=True))
    return obs.astype(np.float32), actions, next_obs, rewards


@pytest.mark.parametrize("env_id", sorted(EXACT_MODELS))
def test_exact_model_matches_the_env_step(env_id: str) -> None:
    obs, actions, next_obs, rewards = env_transitions(env_id, 300, seed=3)
    predicted_obs, predicted_rewards, costs = EXACT_MODELS[env_id]().step(obs, actions)
    assert costs is None
    assert predicted_obs.dtype == np.float32 and predicted_obs.shape == next_obs.shape
    # The env steps from its float64 state, the model from the float32 observation of it.
    np.testing.assert_allclose(predicted_obs, next_obs, atol=2e-4)
    np.testing.assert_allclose(predicted_rewards, rewards, atol=2e-4)


def test_exact_models_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="torque indices"):
        AcrobotExactModel().step(np.zeros((2, 6), np.float32), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        PendulumExactModel().step(np.zeros((2, 4), np.float32), np.zeros(2))
