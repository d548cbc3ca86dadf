import csv

import numpy as np
import pytest
from toy_envs import LineEnv, SixTupleEnv, right_of_three

from sb3_safe.common.cost import CostSignalError
from sb3_safe.wrappers import CostMonitor, CostWrapper, EarlyTerminationPenalty, SafetyGymnasiumAdapter

RIGHT = {False: np.array([1.0], np.float32), True: 2}


def run(env, action, n):
    return [env.step(action) for _ in range(n)]


@pytest.mark.parametrize("discrete", [False, True])
def test_cost_wrapper_costs_known_states(discrete):
    env = CostWrapper(LineEnv(discrete=discrete), right_of_three)
    env.reset()
    steps = run(env, RIGHT[discrete], 5)
    assert [info["cost"] for *_, info in steps] == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert [info["violation"] for *_, info in steps] == [False, False, False, True, True]
    assert [float(obs[0]) for obs, *_ in steps] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_cost_wrapper_passes_the_transition_to_cost_fn():
    seen = []

    def cost_fn(obs, action, next_obs, info):
        seen.append((float(obs[0]), float(np.asarray(action).item()), float(next_obs[0])))
        return 0.25

    env = CostWrapper(LineEnv(start=2.0), cost_fn)
    env.reset()
    _, _, _, _, info = env.step(np.array([-0.5], np.float32))
    env.step(np.array([1.0], np.float32))
    assert seen == [(2.0, -0.5, 1.5), (1.5, 1.0, 2.5)]
    assert info["cost"] == 0.25 and info["violation"]


@pytest.mark.parametrize(("value", "fragment"), [(float("nan"), "NaN"), (-1.0, "negative"), (float("inf"), "infinite")])
def test_cost_wrapper_rejects_bad_user_costs(value, fragment):
    env = CostWrapper(LineEnv(), lambda *args: value)
    env.reset()
    with pytest.raises(CostSignalError, match=fragment):
        env.step(RIGHT[False])


def test_wrappers_reject_non_gymnasium_objects():
    for make in (lambda e: CostWrapper(e, right_of_three), lambda e: EarlyTerminationPenalty(e, 1.0), CostMonitor):
        with pytest.raises(TypeError, match="needs a gymnasium.Env"):
            make(object())
    with pytest.raises(TypeError, match="callable"):
        CostWrapper(LineEnv(), cost_fn=3.0)


@pytest.mark.parametrize("discrete", [False, True])
def test_early_termination_penalty(discrete):
    env = EarlyTerminationPenalty(CostWrapper(LineEnv(discrete=discrete), right_of_three), penalty=50.0)
    env.reset()
    steps = run(env, RIGHT[discrete], 3)
    assert [(r, term) for _, r, term, _, _ in steps] == [(1.0, False), (2.0, False), (3.0, False)]
    _, reward, terminated, _, info = env.step(RIGHT[discrete])
    assert reward == -50.0 and terminated
    assert info["original_reward"] == 4.0 and info["violation"]


def test_early_termination_penalty_needs_a_cost_signal():
    env = EarlyTerminationPenalty(LineEnv(), penalty=1.0)
    env.reset()
    with pytest.raises(CostSignalError, match="LineEnv.*missing"):
        env.step(RIGHT[False])
    with pytest.raises(ValueError, match="penalty >= 0"):
        EarlyTerminationPenalty(LineEnv(), penalty=-1.0)


@pytest.mark.parametrize("discrete", [False, True])
def test_safety_gymnasium_adapter_converts_six_tuples(discrete):
    env = SafetyGymnasiumAdapter(SixTupleEnv([0.0, 2.0, 0.0], discrete=discrete))
    env.reset()
    results = run(env, env.action_space.sample(), 3)
    assert all(len(result) == 5 for result in results)
    assert [info["cost"] for *_, info in results] == [0.0, 2.0, 0.0]
    assert [info["violation"] for *_, info in results] == [False, True, False]
    assert results[0][4]["extra"] == 7 and results[2][3] is True


def test_safety_gymnasium_adapter_errors():
    env = SafetyGymnasiumAdapter(SixTupleEnv([float("nan")]))
    env.reset()
    with pytest.raises(CostSignalError, match="NaN.*step 0|step 0.*NaN"):
        env.step(0)
    five_tuple = SafetyGymnasiumAdapter(LineEnv())
    five_tuple.reset()
    with pytest.raises(ValueError, match="6-tuple"):
        five_tuple.step(RIGHT[False])


@pytest.mark.parametrize("discrete", [False, True])
def test_cost_monitor_csv_and_episode_info(tmp_path, discrete):
    env = CostMonitor(CostWrapper(LineEnv(discrete=discrete, length=6), right_of_three), filename=str(tmp_path / "run"))
    for _ in range(2):
        env.reset()
        for _ in range(6):
            *_, terminated, truncated, info = env.step(RIGHT[discrete])
    # x = 1..6 so steps at x = 4, 5, 6 cost 1; reward = sum(1..6) = 21
    assert info["episode"]["c"] == 3.0 and info["episode"]["v"] == 3 and info["episode"]["r"] == 21.0
    assert "c" not in info and "v" not in info
    assert env.get_episode_costs() == [3.0, 3.0] and env.get_episode_violations() == [3, 3]
    env.close()
    with open(tmp_path / "run.monitor.csv") as file:
        assert file.readline().startswith("#{")
        rows = list(csv.DictReader(file))
    assert [(float(row["r"]), int(row["l"]), float(row["c"]), int(row["v"])) for row in rows] == [(21.0, 6, 3.0, 3)] * 2
