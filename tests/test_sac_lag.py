"""Tests of SACLag (SPEC.md 2.3) and of the cost replay buffers, on a tiny continuous task with a cost."""

from __future__ import annotations

import inspect
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from torch.nn import functional as F
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import KVWriter, Logger
from toy_envs import assert_same_weights

from sb3_safe.common.cost import CostSignalError
from sb3_safe.common.replay_buffers import CostDictReplayBuffer, CostReplayBuffer
from sb3_safe.ppo_lag import PPOLag
from sb3_safe.sac_lag import SACLag, SACLagPolicy

HORIZON = 10
COST_LIMIT = 1.0
TRAIN_STEPS = 600


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread() -> Any:
    """Tiny networks train several times faster on one thread (no inter-thread sync on a busy CPU)."""
    previous = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(previous)


class GreedyActionEnv(gym.Env):
    """Reward = the action a in [-1, 1]; cost 1 on every step with a > 0.5; 10-step episodes.

    The unconstrained optimum (a = 1) costs 10 per episode; under a budget of 1 the policy must
    keep a <= 0.5 on (almost) every step.
    """

    def __init__(self, with_cost: bool = True, discrete: bool = False, dict_obs: bool = False) -> None:
        box = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.observation_space = spaces.Dict({"time": box}) if dict_obs else box
        self.action_space = spaces.Discrete(3) if discrete else spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.with_cost = with_cost
        self.dict_obs = dict_obs
        self.t = 0

    def _obs(self) -> Any:
        obs = np.array([self.t / HORIZON], dtype=np.float32)
        return {"time": obs} if self.dict_obs else obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        a = float(np.clip(np.asarray(action).reshape(-1)[0], -1.0, 1.0))
        self.t += 1
        info = {"cost": float(a > 0.5)} if self.with_cost else {}
        return self._obs(), a, False, self.t >= HORIZON, info


class KeyRecorder(KVWriter):
    """Logger output that remembers every key written."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        self.keys.update(key_values)


class LambdaRecorder(BaseCallback):
    """Records (J_c of the last multiplier update, lambda) after every env step."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[tuple[float, float]] = []

    def _on_step(self) -> bool:
        self.history.append((self.model.ep_cost_estimate, self.model.lagrange_value))
        return True


FAST_KWARGS: dict[str, Any] = dict(
    learning_starts=100,
    batch_size=32,
    gamma=0.5,
    learning_rate=3e-3,
    train_freq=2,
    policy_kwargs=dict(net_arch=[16, 16]),
    seed=0,
)


def greedy_sac_lag() -> SACLag:
    """The SACLag most tests train: GreedyActionEnv's budget, a multiplier step of 0.1, the fast settings."""
    return SACLag("MlpPolicy", GreedyActionEnv(), cost_limit=COST_LIMIT, lagrangian_kwargs={"lr": 0.1}, **FAST_KWARGS)


def deterministic_episode(model: SAC) -> tuple[float, float]:
    """Return and cost of one episode of the policy's mode."""
    env = GreedyActionEnv()
    obs, _ = env.reset()
    total_reward, total_cost, done = 0.0, 0.0, False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(action)
        total_reward += float(reward)
        total_cost += info["cost"]
        done = terminated or truncated
    return total_reward, total_cost


def deterministic_episode_cost(model: SAC) -> float:
    """Cost of one episode of the policy's mode."""
    return deterministic_episode(model)[1]


@pytest.fixture(scope="module")
def trained() -> tuple[SACLag, LambdaRecorder, KeyRecorder]:
    model = greedy_sac_lag()
    recorder = KeyRecorder()
    model.set_logger(Logger(folder=None, output_formats=[recorder]))
    lambdas = LambdaRecorder()
    model.learn(TRAIN_STEPS, callback=lambdas, log_interval=1)
    return model, lambdas, recorder


def test_lambda_rises_while_episode_cost_exceeds_limit(trained: tuple[SACLag, LambdaRecorder, KeyRecorder]) -> None:
    model, lambdas, _ = trained
    updates = [(cost, lam) for cost, lam in lambdas.history if not np.isnan(cost)]
    assert updates, "the multiplier was never updated"
    first_cost, first_lambda = updates[0]
    # Uniform random warm-up actions exceed 0.5 a quarter of the time: ~2.5 cost per episode > 1.
    assert first_cost > COST_LIMIT
    assert first_lambda > 0.001
    assert max(lam for _, lam in updates) > 0.5


def test_constrained_policy_costs_less_than_plain_sac(trained: tuple[SACLag, LambdaRecorder, KeyRecorder]) -> None:
    model, _, _ = trained
    sac = SAC("MlpPolicy", GreedyActionEnv(), **FAST_KWARGS)
    sac.learn(TRAIN_STEPS)
    sac_cost = deterministic_episode_cost(sac)
    sac_lag_cost = deterministic_episode_cost(model)
    assert sac_cost > COST_LIMIT, "plain SAC should take the costly greedy action on this task"
    assert sac_lag_cost <= COST_LIMIT
    assert sac_lag_cost < sac_cost


def test_learns_a_good_return_within_the_cost_limit() -> None:
    # The multiplier binds the sampled policy, whose wide early actions cross 0.5 often: lambda overshoots
    # (about 3 at 500 steps, the mode's return near 0) and settles by about 1,250 steps, the mode's return
    # then 2.9-4.1 up to 3,000 steps (seed 0). A uniform random policy returns 0, one that avoids cost by
    # always playing -1 returns -10, and the best return within the budget is 5.5 (a = 0.5 on nine steps, 1 on one).
    model = greedy_sac_lag()
    model.learn(2000)
    episode_return, episode_cost = deterministic_episode(model)
    assert episode_cost <= COST_LIMIT
    assert episode_return > 2.0


def test_cost_critic_learns_that_large_actions_cost(trained: tuple[SACLag, LambdaRecorder, KeyRecorder]) -> None:
    model, _, _ = trained
    observations = th.linspace(0.0, 0.9, 10, device=model.device).reshape(-1, 1)
    largest = th.ones(10, 1, device=model.device)
    with th.no_grad():
        costly = th.cat(model.critic(observations, largest)[1], dim=1).max(dim=1).values
        free = th.cat(model.critic(observations, -largest)[1], dim=1).max(dim=1).values
    # Q_c(s, 1) - Q_c(s, -1) is the immediate cost 1 (the continuation is the same policy's).
    assert th.all(costly - free > 0.5)


def test_logger_keys(trained: tuple[SACLag, LambdaRecorder, KeyRecorder]) -> None:
    _, _, recorder = trained
    expected = {
        "train/lagrange_multiplier",
        "train/cost_value_loss",
        "train/ep_cost_estimate",
        "rollout/ep_cost_mean",
        "safety/violations_total",
        "safety/cost_rate",
        "train/critic_loss",
    }
    assert expected <= recorder.keys


def test_safety_stats_count_violations(trained: tuple[SACLag, LambdaRecorder, KeyRecorder]) -> None:
    model, _, _ = trained
    stats = model.safety_stats
    assert stats is not None
    assert stats.total_steps == TRAIN_STEPS
    assert 0 < stats.violations_total < TRAIN_STEPS
    # Every violating step of this env costs exactly 1.
    assert stats.total_cost == pytest.approx(stats.violations_total)
    assert len(stats.episode_costs) == TRAIN_STEPS // HORIZON


def test_load_with_another_multiplier_step_goes_on_from_the_saved_lambda(
    trained: tuple[SACLag, LambdaRecorder, KeyRecorder], tmp_path: Any
) -> None:
    model, _, _ = trained
    path = tmp_path / "sac_lag.zip"
    model.save(path)
    loaded = SACLag.load(path, env=GreedyActionEnv(), lagrangian_kwargs=dict(lr=0.5, optimizer="sgd"))
    assert loaded.lagrange_value == pytest.approx(model.lagrange_value)
    # Plain SGD: lambda <- max(0, lambda + lr (J_c - d)).
    assert loaded.lagrange_multiplier.update(COST_LIMIT + 1.0) == pytest.approx(model.lagrange_value + 0.5)


def test_save_load_round_trip(trained: tuple[SACLag, LambdaRecorder, KeyRecorder], tmp_path: Any) -> None:
    model, _, _ = trained
    path = tmp_path / "sac_lag.zip"
    model.save(path)
    loaded = SACLag.load(path, env=GreedyActionEnv())
    assert isinstance(loaded.policy, SACLagPolicy)
    observations = np.linspace(0.0, 1.0, 11, dtype=np.float32).reshape(-1, 1)
    np.testing.assert_allclose(loaded.predict(observations, deterministic=True)[0], model.predict(observations, deterministic=True)[0])
    assert loaded.lagrange_value == model.lagrange_value
    assert loaded.cost_limit == COST_LIMIT
    # The reward and cost critics, their target and their optimiser state all come back.
    assert_same_weights(model.critic, loaded.critic)
    assert_same_weights(model.critic_target, loaded.critic_target)
    saved_adam, restored_adam = model.critic.optimizer.state_dict()["state"], loaded.critic.optimizer.state_dict()["state"]
    assert saved_adam.keys() == restored_adam.keys() and len(saved_adam) > 0
    for key, state in saved_adam.items():
        assert th.equal(state["exp_avg_sq"], restored_adam[key]["exp_avg_sq"])
    assert loaded.safety_stats.violations_total == model.safety_stats.violations_total
    # The multiplier's optimiser state came back too: the same next update gives the same lambda.
    assert loaded.lagrange_multiplier.update(5.0) == pytest.approx(model.lagrange_multiplier.update(5.0))
    loaded.learn(40, reset_num_timesteps=False)
    # Loading without an env (for prediction only) works too.
    env_free = SACLag.load(path)
    np.testing.assert_allclose(env_free.predict(observations, deterministic=True)[0], model.predict(observations, deterministic=True)[0])


def test_env_without_cost_raises_naming_the_env() -> None:
    model = SACLag("MlpPolicy", GreedyActionEnv(with_cost=False), learning_starts=10)
    with pytest.raises(CostSignalError, match="GreedyActionEnv"):
        model.learn(5)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="cost_limit"):
        SACLag("MlpPolicy", GreedyActionEnv(), cost_limit=-1.0)
    with pytest.raises(ValueError, match="n-step"):
        SACLag("MlpPolicy", GreedyActionEnv(), n_steps=3)
    with pytest.raises(ValueError, match="stores costs"):
        SACLag("MlpPolicy", GreedyActionEnv(), replay_buffer_class=CostReplayBuffer.__mro__[1])
    with pytest.raises(ValueError, match="update_rule"):
        SACLag("MlpPolicy", GreedyActionEnv(), lagrangian_update="newton")
    with pytest.raises(ValueError, match="lagrangian_update"):
        SACLag("MlpPolicy", GreedyActionEnv(), lagrangian_kwargs={"update_rule": "pid"})
    with pytest.raises(TypeError, match="initial_lambda"):
        SACLag("MlpPolicy", GreedyActionEnv(), lagrangian_kwargs={"initial_lambda": 0.1})


def test_sacs_positional_arguments_keep_their_places() -> None:
    # SACLag("MlpPolicy", env, 3e-4) must set the learning rate, as for SAC; the Lagrangian
    # arguments come after SAC's own up to target_entropy.
    sac = list(inspect.signature(SAC).parameters)
    sac_lag = list(inspect.signature(SACLag).parameters)
    prefix = sac[: sac.index("target_entropy") + 1]
    assert sac_lag[: len(prefix)] == prefix


def test_multiplier_arguments_are_ppo_lags() -> None:
    sac_lag_args = set(inspect.signature(SACLag.__init__).parameters)
    ppo_lag_args = set(inspect.signature(PPOLag.__init__).parameters)
    assert {"cost_limit", "lagrangian_update", "lagrangian_kwargs"} <= sac_lag_args & ppo_lag_args


@pytest.mark.parametrize(
    ("lagrangian_kwargs", "expected_lambda"),
    [
        (None, 0.001 + SACLag.DEFAULT_LAGRANGIAN_LR),  # Adam's first step moves lambda by lr
        ({"initial_value": 0.5}, 0.5 + SACLag.DEFAULT_LAGRANGIAN_LR),  # the default lr is kept
        ({"lr": 0.1, "optimizer": "sgd"}, 0.001 + 0.1 * 2.0),  # textbook step lr (J_c - d)
    ],
)
def test_lagrangian_kwargs_and_the_default_step_size(
    lagrangian_kwargs: dict[str, Any] | None, expected_lambda: float
) -> None:
    model = SACLag("MlpPolicy", GreedyActionEnv(), cost_limit=1.0, lagrangian_kwargs=lagrangian_kwargs)
    assert SACLag.DEFAULT_LAGRANGIAN_LR == 0.035
    assert model.lagrangian_update == "plain"
    assert model.lagrange_multiplier.update(3.0) == pytest.approx(expected_lambda, rel=1e-4)


def test_discrete_actions_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="continuous action space"):
        SACLag("MlpPolicy", GreedyActionEnv(discrete=True))
    # A registered id is made into an env inside SB3: the message must be as clear.
    with pytest.raises(ValueError, match="continuous action space"):
        SACLag("MlpPolicy", "CartPole-v1")


def test_several_envs() -> None:
    env = make_vec_env(GreedyActionEnv, n_envs=2, seed=0)
    model = SACLag("MlpPolicy", env, cost_limit=0.0, learning_starts=20, batch_size=8, policy_kwargs=dict(net_arch=[8]), seed=0)
    assert model.replay_buffer.env_id == "GreedyActionEnv"
    model.learn(60)
    assert model.safety_stats.total_steps == 60
    assert len(model.safety_stats.episode_costs) == 60 // HORIZON
    assert model.replay_buffer.costs[:30].sum() == pytest.approx(model.safety_stats.total_cost)


@pytest.mark.parametrize("update_rule", ["plain", "pid"])
def test_dict_observations_and_pid_rule(update_rule: str) -> None:
    model = SACLag(
        "MultiInputPolicy",
        GreedyActionEnv(dict_obs=True),
        cost_limit=0.0,
        lagrangian_update=update_rule,
        learning_starts=20,
        batch_size=8,
        policy_kwargs=dict(net_arch=[8]),
        seed=1,
    )
    assert isinstance(model.replay_buffer, CostDictReplayBuffer)
    model.learn(60)
    # Every finished episode had a positive cost against a budget of 0, so lambda went up.
    assert model.lagrange_value > 0.001
    assert model.replay_buffer.sample(4).costs.shape == (4, 1)


def test_cost_replay_buffer_keeps_costs_with_their_transitions() -> None:
    buffer = CostReplayBuffer(100, spaces.Box(-1, 1, (1,)), spaces.Box(-1, 1, (1,)), device="cpu", n_envs=2)
    for step in range(20):
        obs = np.full((2, 1), step, dtype=np.float32)
        rewards = np.array([step, 100 + step], dtype=np.float32)
        infos = [{"cost": 2.0 * step}, {"cost": 2.0 * (100 + step)}]
        buffer.add(obs, obs + 1, np.zeros((2, 1)), rewards, np.zeros(2), infos)
    samples = buffer.sample(64)
    np.testing.assert_allclose(samples.costs.numpy(), 2.0 * samples.rewards.numpy())
    # Explicit costs (e.g. from model rollouts) take precedence over the infos.
    buffer.add(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros((2, 1)), np.zeros(2), np.zeros(2), [{}, {}], costs=np.array([0.5, 0.25]))
    np.testing.assert_allclose(buffer.costs[buffer.pos - 1], [0.5, 0.25])


def test_cost_replay_buffer_rejects_bad_costs() -> None:
    buffer = CostReplayBuffer(10, spaces.Box(-1, 1, (1,)), spaces.Box(-1, 1, (1,)), device="cpu", env_id="MyEnv-v0")
    transition = (np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1), np.zeros(1))
    with pytest.raises(CostSignalError, match="MyEnv-v0"):
        buffer.add(*transition, [{}])
    with pytest.raises(CostSignalError, match="negative"):
        buffer.add(*transition, [{"cost": -1.0}])
    with pytest.raises(ValueError, match="one cost per sub-env"):
        buffer.add(*transition, [{}], costs=np.array([1.0, 2.0]))
    assert buffer.pos == 0


@pytest.mark.parametrize("n_critics", [1, 2, 3])
def test_fused_critic_equals_independent_mlps(n_critics: int) -> None:
    """The ensemble critic's members are ``n_critics`` reward and ``n_critics`` cost MLPs of SB3's shape
    (``net_arch["qf"]``, ``activation_fn``), each with its own weights; its forward is theirs."""
    env = GreedyActionEnv()
    policy_kwargs = dict(net_arch=dict(pi=[4], qf=[8, 6]), activation_fn=th.nn.Tanh, n_critics=n_critics)
    model = SACLag("MlpPolicy", env, cost_limit=COST_LIMIT, policy_kwargs=policy_kwargs, seed=0)
    critic = model.critic
    assert critic.n_members == 2 * n_critics
    ensemble_layers = [layer for layer in critic.q_networks if isinstance(layer, th.nn.Module) and hasattr(layer, "weight")]
    assert [tuple(layer.weight.shape) for layer in ensemble_layers] == [(2 * n_critics, 2, 8), (2 * n_critics, 8, 6), (2 * n_critics, 6, 1)]
    independent = []
    for member in range(2 * n_critics):
        linears = [th.nn.Linear(2, 8), th.nn.Linear(8, 6), th.nn.Linear(6, 1)]
        for linear, layer in zip(linears, ensemble_layers, strict=True):
            linear.weight.data.copy_(layer.weight[member].T)
            linear.bias.data.copy_(layer.bias[member, 0])
        independent.append(th.nn.Sequential(linears[0], th.nn.Tanh(), linears[1], th.nn.Tanh(), linears[2]).to(critic.device))
    # Members were initialised independently (no two share weights).
    first_layer = ensemble_layers[0].weight
    assert all(not th.equal(first_layer[i], first_layer[j]) for i in range(2 * n_critics) for j in range(i))

    observations, actions = th.rand(7, 1, device=critic.device), th.rand(7, 1, device=critic.device) * 2 - 1
    with th.no_grad():
        reward_qs, cost_qs = critic(observations, actions)
        expected = [net(th.cat([observations, actions], dim=1)) for net in independent]
    assert len(reward_qs) == len(cost_qs) == n_critics
    for got, want in zip([*reward_qs, *cost_qs], expected, strict=True):
        assert got.shape == (7, 1)
        th.testing.assert_close(got, want)
    # The target starts as an exact copy, and one optimiser trains every member.
    assert_same_weights(critic, model.critic_target)
    optimised = {id(p) for group in critic.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in critic.parameters()}



def test_fused_targets_and_losses_are_sacs_and_the_cost_critics() -> None:
    """The fused targets are SAC's soft target (min over the reward twins) and the cost target (max over
    the cost twins, no entropy term); the losses are SAC's per group, and each loss trains only its members."""
    model = SACLag("MlpPolicy", GreedyActionEnv(), cost_limit=COST_LIMIT, cost_gamma=0.7, **{**FAST_KWARGS, "learning_starts": 60})
    model.learn(80)
    batch = model.replay_buffer.sample(64)  # type: ignore[union-attr]
    assert batch.costs.sum() > 0
    ent_coef = th.tensor(0.3)
    th.manual_seed(3)
    targets = model._critic_targets(batch, ent_coef, model.gamma)
    th.manual_seed(3)
    with th.no_grad():
        next_actions, next_log_prob = model.actor.action_log_prob(batch.next_observations)
        (r0, r1), (c0, c1) = model.critic_target(batch.next_observations, next_actions)
    soft_value = th.minimum(r0, r1) - ent_coef * next_log_prob.reshape(-1, 1)
    reward_target = batch.rewards + (1 - batch.dones) * model.gamma * soft_value
    cost_target = batch.costs + (1 - batch.dones) * 0.7 * th.maximum(c0, c1)
    assert targets.shape == (4, 64, 1)
    for member, expected in enumerate([reward_target, reward_target, cost_target, cost_target]):
        th.testing.assert_close(targets[member], expected)

    critic_loss, cost_critic_loss = model._critic_losses(batch, targets)
    reward_qs, cost_qs = model.critic(batch.observations, batch.actions)
    th.testing.assert_close(critic_loss, 0.5 * sum(F.mse_loss(q, reward_target) for q in reward_qs))
    th.testing.assert_close(cost_critic_loss, 0.5 * sum(F.mse_loss(q, cost_target) for q in cost_qs))
    first_layer = model.critic.q_networks[0].weight
    (cost_grad,) = th.autograd.grad(cost_critic_loss, first_layer, retain_graph=True)
    (reward_grad,) = th.autograd.grad(critic_loss, first_layer)
    assert th.all(cost_grad[:2] == 0) and th.any(cost_grad[2:] != 0)
    assert th.all(reward_grad[2:] == 0) and th.any(reward_grad[:2] != 0)


def test_shared_cost_heads_are_second_outputs_of_the_reward_critics(tmp_path: Any) -> None:
    """``cost_value_head="shared"``: ``n_critics`` members with two outputs; Q_c,i reads the hidden
    layers of Q_r,i; the layout survives ``save``/``load``."""
    policy_kwargs = dict(net_arch=dict(pi=[4], qf=[8, 6]), cost_value_head="shared")
    model = SACLag("MlpPolicy", GreedyActionEnv(), cost_limit=COST_LIMIT, policy_kwargs=policy_kwargs, seed=0, learning_starts=30)
    critic = model.critic
    assert critic.n_members == 2
    layers = [layer for layer in critic.q_networks if hasattr(layer, "weight")]
    assert [tuple(layer.weight.shape) for layer in layers] == [(2, 2, 8), (2, 8, 6), (2, 6, 2)]
    observations, actions = th.rand(5, 1, device=critic.device), th.rand(5, 1, device=critic.device) * 2 - 1
    with th.no_grad():
        reward_qs, cost_qs = critic(observations, actions)
        hidden = th.cat([observations, actions], dim=1).expand(2, -1, -1)
        for layer in critic.q_networks[:-1]:
            hidden = layer(hidden)
        outputs = critic.q_networks[-1](hidden)
    for member in range(2):
        th.testing.assert_close(reward_qs[member], outputs[member, :, :1])
        th.testing.assert_close(cost_qs[member], outputs[member, :, 1:])

    model.learn(60)
    path = tmp_path / "shared.zip"
    model.save(path)
    loaded = SACLag.load(path)
    assert loaded.policy.cost_value_head == "shared" and loaded.critic.n_members == 2
    grid = np.linspace(0.0, 1.0, 5, dtype=np.float32).reshape(-1, 1)
    np.testing.assert_allclose(loaded.predict(grid, deterministic=True)[0], model.predict(grid, deterministic=True)[0])


def test_unknown_cost_value_head_is_refused() -> None:
    with pytest.raises(ValueError, match="cost_value_head must be 'separate' or 'shared'"):
        SACLag("MlpPolicy", GreedyActionEnv(), policy_kwargs=dict(cost_value_head="tied"))


class ValueRecorder(KVWriter):
    """Logger output that keeps the last value written under each key."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        self.values.update(key_values)


def cost_value_sac_lag(**kwargs: Any) -> SACLag:
    """SACLag on GreedyActionEnv with the cost-critic multiplier signal."""
    return SACLag(
        "MlpPolicy",
        GreedyActionEnv(),
        cost_limit=COST_LIMIT,
        multiplier_signal="cost_value",
        max_episode_steps=HORIZON,
        **kwargs,
        **FAST_KWARGS,
    )


def test_cost_value_signal_steps_lambda_once_per_train_call_on_the_scaled_cost_critic() -> None:
    model = cost_value_sac_lag(cost_gamma=0.9)
    recorder = ValueRecorder()
    model.set_logger(Logger(folder=None, output_formats=[recorder]))
    steps: list[float] = []
    update = model.lagrange_multiplier.update
    model.lagrange_multiplier.update = (  # type: ignore[method-assign]
        lambda cost, cost_limit=None: steps.append(cost) or update(cost, cost_limit)
    )
    model.learn(150, log_interval=1)
    # Learning starts at step 100 and trains every 2 steps with one gradient step: 25 train() calls,
    # each followed by one multiplier step (no waiting for finished episodes).
    assert len(steps) == model._n_updates == 25
    assert model._unused_episode_costs == []  # finished episodes are not kept for a signal that never reads them
    factor = HORIZON * (1 - 0.9) / (1 - 0.9**HORIZON)
    assert model._episode_cost_per_cost_value == pytest.approx(factor)
    # One call of several gradient steps: one multiplier step, on that call's mean cost critic estimate
    # max_i Q_c,i(s, pi(s)) as an episode cost.
    steps.clear()
    model.train(gradient_steps=3, batch_size=32)
    model.logger.dump(model.num_timesteps)
    assert steps == [pytest.approx(recorder.values["train/cost_q_mean"] * factor)]
    assert model.ep_cost_estimate == steps[0]


def test_cost_value_signal_scale_and_its_episode_length(tmp_path: Any) -> None:
    model = SACLag("MlpPolicy", "SafePendulum-v0", multiplier_signal="cost_value", cost_gamma=0.99)
    assert model.max_episode_steps == 200  # from the registered spec
    assert model._episode_cost_per_cost_value == pytest.approx(200 * 0.01 / (1 - 0.99**200))
    model.save(tmp_path / "cost_value.zip")
    loaded = SACLag.load(tmp_path / "cost_value.zip")  # without an env: T comes from the file
    assert (loaded.multiplier_signal, loaded.max_episode_steps) == ("cost_value", 200)
    undiscounted = SACLag("MlpPolicy", "SafePendulum-v0", multiplier_signal="cost_value", cost_gamma=1.0)
    assert undiscounted._episode_cost_per_cost_value == 1.0
    # An env without a time limit must be told T; the episode-cost signal does not need it.
    with pytest.raises(ValueError, match="max_episode_steps"):
        SACLag("MlpPolicy", GreedyActionEnv(), multiplier_signal="cost_value")
    assert SACLag("MlpPolicy", GreedyActionEnv()).max_episode_steps is None
    with pytest.raises(ValueError, match="multiplier_signal"):
        SACLag("MlpPolicy", GreedyActionEnv(), multiplier_signal="q")


def test_cost_value_signal_raises_lambda_and_meets_the_budget() -> None:
    model = cost_value_sac_lag(lagrangian_kwargs={"lr": 0.02})
    lambdas = LambdaRecorder()
    model.learn(TRAIN_STEPS, callback=lambdas)
    assert max(lam for _, lam in lambdas.history) > 1.0
    assert deterministic_episode_cost(model) <= COST_LIMIT

