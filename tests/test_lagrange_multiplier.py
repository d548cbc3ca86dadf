"""Tests of the shared Lagrange multiplier (SPEC.md 2.3): plain (Adam, SGD) and PID updates."""

from __future__ import annotations

import math

import pytest

from sb3_safe.common.lagrange import LagrangeMultiplier, make_lagrange_multiplier, multiplier_for_settings


def test_plain_sgd_is_projected_dual_ascent_exactly() -> None:
    multiplier = LagrangeMultiplier(cost_limit=1.0, initial_value=0.5, lr=0.1, optimizer="sgd")
    # lambda <- max(0, lambda + lr (J_c - d)), computed by hand.
    assert multiplier.update(3.0) == pytest.approx(0.5 + 0.1 * 2.0)
    assert multiplier.update(0.0) == pytest.approx(0.7 - 0.1 * 1.0)
    assert multiplier.update(-4.0 + 1.0) == pytest.approx(0.6 - 0.1 * 4.0)
    # The next step would go to 0.2 - 0.4 < 0: projected onto 0, and it stays there while J_c < d.
    assert multiplier.update(-3.0) == 0.0
    assert multiplier.update(0.5) == 0.0
    assert multiplier.value == 0.0


def test_plain_adam_rises_above_limit_and_decays_to_zero_below() -> None:
    multiplier = LagrangeMultiplier(cost_limit=10.0, initial_value=0.001, lr=0.035)
    values = [multiplier.update(30.0) for _ in range(20)]
    assert all(later > earlier for earlier, later in zip(values, values[1:]))
    # Adam's step is about lr whatever the size of J_c - d.
    assert values[-1] == pytest.approx(0.001 + 20 * 0.035, rel=0.05)
    decayed = [multiplier.update(0.0) for _ in range(100)]
    # Adam's momentum carries lambda up for a few updates after the sign change, then it falls
    # monotonically to the projection at 0 and stays there.
    peak = max(range(len(decayed)), key=decayed.__getitem__)
    assert peak < 15
    assert all(later <= earlier for earlier, later in zip(decayed[peak:], decayed[peak + 1 :]))
    assert decayed[60:] == [0.0] * 40
    assert decayed[-1] == 0.0
    assert min(decayed) >= 0.0


def test_pid_first_values_match_the_formula_by_hand() -> None:
    kp, ki, kd, alpha = 0.1, 0.01, 0.01, 0.95
    multiplier = LagrangeMultiplier(
        cost_limit=1.0, initial_value=0.001, update_rule="pid", kp=kp, ki=ki, kd=kd, d_delay=1, ema_alpha=alpha
    )
    # Update 1, J_c = 3: Delta = 2, I = 0.001 + 0.01 * 2, P = 0.05 * 2, EMA(J_c) = 0.05 * 3, D = EMA - 0.
    integral, p_term, cost_ema = 0.021, 0.1, 0.15
    expected_1 = kp * p_term + integral + kd * (cost_ema - 0.0)
    assert multiplier.update(3.0) == pytest.approx(expected_1)
    assert expected_1 == pytest.approx(0.0325)
    # Update 2, J_c = 3: D compares with the EMA one update ago (d_delay = 1).
    integral_2, p_term_2, cost_ema_2 = integral + 0.02, alpha * p_term + 0.1, alpha * cost_ema + 0.15
    expected_2 = kp * p_term_2 + integral_2 + kd * (cost_ema_2 - cost_ema)
    assert multiplier.update(3.0) == pytest.approx(expected_2)
    assert expected_2 == pytest.approx(0.061925)
    # Update 3, J_c = 0: Delta = -1 lowers I, the cost EMA falls so D = 0, and P is still positive.
    integral_3, p_term_3 = integral_2 - 0.01, alpha * p_term_2 + 0.05 * -1.0
    expected_3 = kp * p_term_3 + integral_3
    assert multiplier.update(0.0) == pytest.approx(expected_3)


def test_pid_derivative_uses_the_ema_d_delay_updates_ago() -> None:
    multiplier = LagrangeMultiplier(cost_limit=1.0, initial_value=0.0, update_rule="pid", kp=0.0, ki=0.0, kd=1.0, d_delay=3)
    # With only the derivative term, lambda = EMA(J_c) now minus EMA(J_c) 3 updates ago (the first ones compare with 0).
    emas = []
    ema = 0.0
    for _ in range(5):
        ema = 0.95 * ema + 0.05 * 2.0
        emas.append(ema)
        lam = multiplier.update(2.0)
        reference = emas[-4] if len(emas) >= 4 else 0.0
        assert lam == pytest.approx(ema - reference)


def test_pid_decays_to_zero_when_cost_stays_below_limit() -> None:
    multiplier = LagrangeMultiplier(cost_limit=5.0, initial_value=0.5, update_rule="pid")
    for _ in range(10):
        multiplier.update(50.0)
    high = multiplier.value
    assert high > 0.5
    for _ in range(2000):
        multiplier.update(0.0)
    assert multiplier.value == 0.0


@pytest.mark.parametrize("update_rule", ["plain", "pid"])
def test_lambda_max_clips(update_rule: str) -> None:
    multiplier = LagrangeMultiplier(
        cost_limit=0.0, initial_value=0.0, update_rule=update_rule, lr=1.0, optimizer="sgd", ki=1.0, lambda_max=2.5
    )
    for _ in range(5):
        multiplier.update(100.0)
    assert multiplier.value == 2.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cost_limit": -1.0}, "cost_limit"),
        ({"cost_limit": 1.0, "initial_value": -0.1}, "initial"),
        ({"cost_limit": 1.0, "update_rule": "newton"}, "update_rule"),
        ({"cost_limit": 1.0, "optimizer": "rmsprop"}, "optimizer"),
        ({"cost_limit": 1.0, "update_rule": "pid", "d_delay": 0}, "d_delay"),
        ({"cost_limit": 1.0, "update_rule": "pid", "ema_alpha": 1.0}, "ema_alpha"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LagrangeMultiplier(**kwargs)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_episode_cost_raises(bad: float) -> None:
    multiplier = LagrangeMultiplier(cost_limit=1.0)
    with pytest.raises(ValueError, match="must be finite"):
        multiplier.update(bad)
    assert multiplier.value == pytest.approx(0.001)


@pytest.mark.parametrize("update_rule", ["plain", "pid"])
def test_a_new_cost_limit_given_to_update_is_the_one_applied(update_rule: str) -> None:
    multiplier = LagrangeMultiplier(cost_limit=25.0, update_rule=update_rule, initial_value=1.0)
    assert multiplier.update(5.0, cost_limit=0.0) > 1.0  # 5 > d = 0: lambda rises
    assert multiplier.cost_limit == 0.0
    with pytest.raises(ValueError, match="cost_limit"):
        multiplier.update(5.0, cost_limit=-1.0)


def test_a_multiplier_is_kept_when_its_settings_are_asked_again_and_rebuilt_from_its_lambda_otherwise() -> None:
    multiplier = make_lagrange_multiplier(1.0, "plain", {"lr": 0.1})
    for _ in range(3):
        multiplier.update(3.0)
    # The same settings, also when a default is spelled out: the very object (its optimiser state) goes on.
    assert multiplier_for_settings(multiplier, 1.0, "plain", {"lr": 0.1, "optimizer": "adam"}) is multiplier
    rebuilt = multiplier_for_settings(multiplier, 1.0, "pid", {"kp": 0.0, "ki": 0.5, "kd": 0.0})
    assert rebuilt.update_rule == "pid" and rebuilt.value == pytest.approx(multiplier.value)
    assert multiplier_for_settings(rebuilt, 1.0, "pid", {"kp": 0.0, "ki": 0.5, "kd": 0.0}) is rebuilt  # a later load
    assert rebuilt.update(2.0) == pytest.approx(multiplier.value + 0.5)
    restarted = multiplier_for_settings(multiplier, 1.0, "plain", {"lr": 0.5, "initial_value": 0.0})
    assert restarted.value == 0.0 and restarted.configuration()[1]["lr"] == 0.5


@pytest.mark.parametrize("update_rule", ["plain", "pid"])
def test_a_multiplier_saved_by_an_earlier_version_is_kept_unless_its_settings_change(update_rule: str) -> None:
    # Saved before initial_value was kept (and by a version that stored a `settings` tuple on it).
    multiplier = make_lagrange_multiplier(1.0, update_rule, {"lr": 0.1, "initial_value": 0.5})
    multiplier.update(3.0)
    del multiplier.initial_value
    multiplier.settings = (update_rule, {"lr": 0.1, "initial_value": 0.5})
    assert multiplier_for_settings(multiplier, 1.0, update_rule, {"lr": 0.1, "initial_value": 0.5}) is multiplier
    assert multiplier_for_settings(multiplier, 1.0, update_rule, {"lr": 0.2}).value == pytest.approx(multiplier.value)
    # A new initial value: the plain rule's is known (its untouched PID integral), a PID multiplier's is not.
    given = multiplier_for_settings(multiplier, 1.0, update_rule, {"lr": 0.1, "initial_value": 5.0})
    assert given.value == 5.0 if update_rule == "plain" else given is multiplier


def test_a_new_initial_value_given_at_load_restarts_lambda_there_and_an_unchanged_one_does_not() -> None:
    multiplier = make_lagrange_multiplier(1.0, "plain", {"initial_value": 0.5})
    multiplier.update(3.0)
    assert multiplier_for_settings(multiplier, 1.0, "plain", {"initial_value": 0.5}) is multiplier
    assert multiplier_for_settings(multiplier, 1.0, "plain", {"initial_value": 5.0}).value == 5.0
    # Another step size with the YAML's unchanged initial value (rl_zoo3 passes it again when training goes on).
    assert multiplier_for_settings(multiplier, 1.0, "plain", {"initial_value": 0.5, "lr": 0.1}).value == pytest.approx(
        multiplier.value
    )
