import gymnasium as gym
import numpy as np
import pytest
from toy_envs import LineEnv, right_of_three

from sb3_safe.shields import FunctionShield, Shield, ShieldDecision, SimulatorShield
from sb3_safe.wrappers import CostWrapper, SafetyShield, ShieldError


def line(discrete=False, start=0.0):
    return CostWrapper(LineEnv(discrete=discrete, start=start), right_of_three)


def stop_before_three(obs, action):
    """Rule: at x >= 3 never move right; play 'stay' instead."""
    moving_right = (int(action) == 2) if np.ndim(action) == 0 else float(action[0]) > 0
    if obs[0] >= 3.0 and moving_right:
        return 1 if np.ndim(action) == 0 else np.zeros(1, np.float32)
    return None


class RecordingShield(FunctionShield):
    def __init__(self, rule):
        super().__init__(rule)
        self.transitions = []
        self.resets = 0

    def reset(self, obs, info):
        self.resets += 1

    def observe(self, obs, action, reward, next_obs, terminated, truncated, info):
        self.transitions.append((float(obs[0]), float(next_obs[0]), info["shield"]["intervened"]))


@pytest.mark.parametrize("discrete", [False, True])
def test_function_shield_overrides_unsafe_actions(discrete):
    shield = RecordingShield(stop_before_three)
    env = SafetyShield(line(discrete), shield)
    env.reset()
    right = 2 if discrete else np.ones(1, np.float32)
    infos = [env.step(right)[4] for _ in range(6)]
    assert [info["cost"] for info in infos] == [0.0] * 6
    assert [info["shield"]["intervened"] for info in infos] == [False, False, False, True, True, True]
    assert [info["shield"]["risk"] for info in infos] == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert np.all(np.asarray(infos[-1]["shield"]["proposed_action"]) == right)
    assert env.interventions == 3 and env.intervention_rate == 0.5
    assert shield.resets == 1
    assert shield.transitions[2:4] == [(2.0, 3.0, False), (3.0, 3.0, True)]


def test_shield_action_outside_the_action_space_is_an_error():
    env = SafetyShield(line(), FunctionShield(lambda obs, action: np.array([5.0], np.float32)))
    env.reset()
    with pytest.raises(ShieldError, match="FunctionShield returned.*not in the action space"):
        env.step(np.zeros(1, np.float32))
    discrete = SafetyShield(line(discrete=True), FunctionShield(lambda obs, action: 7))
    discrete.reset()
    with pytest.raises(ShieldError, match="not in the action space"):
        discrete.step(0)


def test_safety_shield_needs_a_shield_and_an_env():
    with pytest.raises(TypeError, match="FunctionShield"):
        SafetyShield(line(), lambda obs, action: None)
    with pytest.raises(TypeError, match="gymnasium.Env"):
        SafetyShield("CartPole-v1", FunctionShield(lambda obs, action: None))


def test_custom_shield_subclass():
    class AlwaysStay(Shield):
        def decide(self, obs, action):
            return ShieldDecision(intervene=True, action=1, risk=0.7)

    env = SafetyShield(line(discrete=True), AlwaysStay())
    env.reset()
    obs, *_, info = env.step(2)
    assert obs[0] == 0.0 and info["shield"] == {"intervened": True, "proposed_action": 2, "risk": 0.7}


@pytest.mark.parametrize("discrete", [False, True])
def test_simulator_shield_avoids_a_known_unsafe_state(discrete):
    shield = SimulatorShield(n_traces=4, horizon=1, threshold=0.0, n_candidates=8, seed=0)
    env = SafetyShield(line(discrete, start=3.0), shield)
    env.reset()
    right = 2 if discrete else np.ones(1, np.float32)
    obs, *_, info = env.step(right)
    assert info["shield"]["intervened"] and info["shield"]["risk"] == 1.0
    assert info["cost"] == 0.0 and obs[0] <= 3.0
    # From x = 0 a step right is safe: no intervention, zero estimated risk.
    safe_env = SafetyShield(line(discrete), SimulatorShield(n_traces=4, horizon=1, seed=0))
    safe_env.reset()
    info = safe_env.step(right)[4]
    assert not info["shield"]["intervened"] and info["shield"]["risk"] == 0.0


def test_simulator_shield_estimates_multi_step_risk():
    # From x = 2 under a uniform random continuation over {-1, 0, +1}: +1 reaches 3, then the
    # trace violates iff the next random action is +1 (horizon 2): risk ~ 1/3.
    shield = SimulatorShield(n_traces=600, horizon=2, seed=1)
    env = SafetyShield(line(discrete=True, start=2.0), shield)
    env.reset()
    risk = shield.estimate_risk(np.array([2.0]), 2)
    assert abs(risk - 1 / 3) < 0.06
    assert shield.estimate_risk(np.array([2.0]), 0) == 0.0


def test_simulator_shield_with_a_policy_callable():
    always_right = lambda obs: np.full(len(obs), 2)  # noqa: E731
    shield = SimulatorShield(policy=always_right, n_traces=2, horizon=3, seed=0)
    SafetyShield(line(discrete=True, start=1.0), shield).reset()
    assert shield.estimate_risk(np.array([1.0]), 2) == 1.0  # 2, 3, 4: violates on the third step
    assert shield.estimate_risk(np.array([0.0]), 2) == 0.0  # 1, 2, 3: never beyond 3


def test_simulator_shield_rejects_unsupported_envs():
    class DictActions(LineEnv):
        def __init__(self):
            super().__init__()
            self.action_space = gym.spaces.Dict({"move": gym.spaces.Discrete(3)})

    with pytest.raises(TypeError, match="Box and Discrete"):
        SafetyShield(CostWrapper(DictActions(), right_of_three), SimulatorShield())

    class Stateless(LineEnv):
        """Keeps its position under another name, so the shield cannot find the simulator state."""

        def reset(self, **kwargs):
            obs, info = super().reset(**kwargs)
            self.position = self.__dict__.pop("state")
            return obs, info

    shielded = SafetyShield(CostWrapper(Stateless(), right_of_three), SimulatorShield())
    with pytest.raises(TypeError, match="cannot copy the simulator state"):
        shielded.reset()
    with pytest.raises(ValueError, match="threshold"):
        SimulatorShield(threshold=1.5)


def count_random_agent_violations(shield, episodes=10, steps=25):
    """Violations of a uniform random agent on SafePendulum started just beside the band [20, 30] deg."""
    env = gym.make("SafePendulum-v0")
    if shield is not None:
        env = SafetyShield(env, shield)
    rng = np.random.default_rng(0)
    violations = 0
    for episode in range(episodes):
        env.reset(seed=episode, options={"x_init": 0.3, "y_init": 0.5})
        for _ in range(steps):
            violations += env.step(rng.uniform(-2.0, 2.0, size=1).astype(np.float32))[4]["violation"]
    return violations


def test_simulator_shield_keeps_a_random_agent_out_of_the_pendulum_band():
    unshielded = count_random_agent_violations(None)
    shielded = count_random_agent_violations(SimulatorShield(n_traces=8, horizon=5, threshold=0.1, seed=0))
    # Measured with these seeds: 10 violations unshielded, 0 shielded.
    assert unshielded >= 8
    assert shielded <= unshielded / 4


def test_simulator_shield_simulations_leave_the_mujoco_env_untouched():
    actions = np.random.default_rng(0).uniform(-1, 1, size=(15, 3)).astype(np.float32)

    def trajectory(env):
        observations = [env.reset(seed=3)[0]]
        observations += [env.step(action)[0] for action in actions]
        return np.array(observations)

    plain = trajectory(gym.make("SafeHopper-v0"))
    shield = SimulatorShield(n_traces=2, horizon=3, threshold=0.99, seed=0)
    shielded_env = SafetyShield(gym.make("SafeHopper-v0"), shield)
    np.testing.assert_array_equal(trajectory(shielded_env), plain)
    assert shielded_env.interventions == 0
    # A hopper tilted past the safe angle is unsafe whatever it does next: risk 1.
    hopper = shielded_env.unwrapped
    qpos, qvel = hopper.data.qpos.copy(), hopper.data.qvel.copy()
    qpos[2] = 0.5
    hopper.set_state(qpos, qvel)
    assert shield.estimate_risk(shield._get_state(shielded_env.env), actions[0]) == 1.0


def test_simulator_shield_traces_start_from_the_real_wrapper_state():
    # CostWrapper below the shield passes its last observation to the cost function: in every trace it
    # must be the real env's current observation, not one left over from an earlier trace.
    seen = []

    def record_obs(obs, action, next_obs, info):
        seen.append(float(obs[0]))
        return 0.0

    shield = SimulatorShield(n_traces=2, horizon=3, seed=0)
    env = SafetyShield(CostWrapper(LineEnv(discrete=True), record_obs), shield)
    env.reset()
    for _ in range(3):
        seen.clear()
        obs, *_ = env.step(2)  # the estimate before this step ran from the real x, then the real step
        first_steps = seen[:2]  # the traces step together: both first steps, ..., then the real step
        assert len(seen) == 2 * 3 + 1 and first_steps == [seen[-1]] * 2
    assert obs[0] == 3.0


def test_a_shield_serves_one_env():
    shield = SimulatorShield(n_traces=2, horizon=2, seed=0)
    SafetyShield(line(), shield)
    with pytest.raises(ValueError, match="serves one env"):
        SafetyShield(line(), shield)


class GambleEnv(gym.Env):
    """Action 1 gambles: with probability 1/3 it violates (cost 1), else it moves one step on; action 0 waits.

    Every render is recorded in ``GambleEnv.rendered`` (the id of the env that rendered).
    """

    metadata = {"render_modes": ["human"]}
    rendered: list[int] = []

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0.0, 100.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.state = np.zeros(1)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = np.zeros(1)
        return self.state.astype(np.float32), {}

    def step(self, action):
        violated = int(action) == 1 and self.np_random.random() < 1 / 3
        if int(action) == 1 and not violated:
            self.state = self.state + 1.0
        if self.render_mode == "human":
            self.render()
        info = {"cost": float(violated), "violation": violated}
        return self.state.astype(np.float32), 0.0, False, False, info

    def render(self):
        GambleEnv.rendered.append(id(self))


def test_simulator_shield_traces_sample_a_stochastic_env_independently():
    # The traces of one estimate must not share a random stream: sharing one, they all see the same
    # outcome and the estimate of a 1/3 risk is 0 or 1.
    shield = SimulatorShield(n_traces=300, horizon=1, seed=0)
    env = SafetyShield(GambleEnv(), shield)
    env.reset(seed=0)
    risks = [shield.estimate_risk(shield._get_state(env.env), 1) for _ in range(3)]
    assert all(abs(risk - 1 / 3) < 0.1 for risk in risks), risks
    assert shield.estimate_risk(shield._get_state(env.env), 0) == 0.0


def test_simulator_shield_episodes_are_reproducible_from_the_reset_seed():
    # With few traces and a threshold at the true risk, whether the shield intervenes depends on its samples.
    env = SafetyShield(GambleEnv(), SimulatorShield(n_traces=6, horizon=1, threshold=1 / 3, seed=0))

    def episode():
        observations = [env.reset(seed=1)[0]]
        interventions = []
        for _ in range(40):
            obs, *_, info = env.step(1)
            observations.append(obs)
            interventions.append(info["shield"]["intervened"])
        return np.array(observations), interventions

    first, second = episode(), episode()
    assert 0 < sum(first[1]) < 40  # the check below would be trivial if the shield always (or never) intervened
    np.testing.assert_array_equal(first[0], second[0])
    assert first[1] == second[1]


def test_simulator_shield_copies_do_not_render():
    GambleEnv.rendered.clear()
    env = SafetyShield(GambleEnv(render_mode="human"), SimulatorShield(n_traces=4, horizon=3, seed=0))
    env.reset(seed=0)
    for _ in range(3):
        env.step(1)
    assert GambleEnv.rendered == [id(env.unwrapped)] * 3
