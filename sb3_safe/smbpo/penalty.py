"""The unsafe-state penalty C of SMBPO (Thomas, Luo and Ma, NeurIPS 2021; SPEC.md section 2.1).

SMBPO turns every unsafe state into an absorbing state that pays ``-C`` forever. ``C`` must be
large enough that any trajectory which becomes unsafe within the model horizon ``H`` is worth
less than any trajectory that stays safe; these functions compute the smallest such ``C`` from
the reward range ``[r_min, r_max]`` seen so far.
"""

from __future__ import annotations

import math


def _check_common(r_min: float, r_max: float, gamma: float, horizon: int) -> None:
    if not (math.isfinite(r_min) and math.isfinite(r_max)):
        raise ValueError(f"penalty: the reward range must be finite, got r_min={r_min}, r_max={r_max}")
    if r_min > r_max:
        raise ValueError(f"penalty: r_min ({r_min}) is larger than r_max ({r_max})")
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"penalty: gamma must be in (0, 1), got {gamma}")
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"penalty: the horizon H must be a positive integer, got {horizon!r}")


def deterministic_penalty(r_min: float, r_max: float, gamma: float, horizon: int) -> float:
    """The bound for deterministic dynamics (the paper's section 3; the authors' code):

        C = (r_max - r_min) / gamma**H - r_max

    Derivation: with the absorbing state paying ``-C`` per step, a trajectory that is unsafe at
    step ``H`` returns at most ``r_max (1 - gamma**H)/(1 - gamma) - C gamma**H / (1 - gamma)``
    while a safe one returns at least ``r_min / (1 - gamma)``; the first is smaller exactly when
    ``C > (r_max - r_min)/gamma**H - r_max``. The boundary value itself is returned (ties have
    measure zero), clipped at 0 because a negative penalty would reward violations.

    :param r_min: smallest reward seen
    :param r_max: largest reward seen
    :param gamma: discount factor
    :param horizon: model rollout horizon ``H``
    :return: the penalty ``C >= 0``
    """
    _check_common(r_min, r_max, gamma, horizon)
    return max((r_max - r_min) / gamma**horizon - r_max, 0.0)


def stochastic_penalty(r_min: float, r_max: float, gamma: float, horizon: int, p: float, q: float) -> float:
    """The bound for stochastic dynamics of the paper's appendix A.2: ``C = max(alpha1, alpha2, 0)``.

    Definitions (A.2): ``mu*(s, a)`` is the smallest achievable probability of ever becoming
    unsafe; ``(s, a)`` is p-irrecoverable if ``mu*(s, a) >= p``, p-safe otherwise; rapid failure:
    from any p-irrecoverable pair every action sequence becomes unsafe within ``H`` steps with
    probability at least ``q``. With ``g = gamma**H`` and
    ``R_C = (r_max (1 - g) - C g) / (1 - gamma)`` (eq. 17), the appendix bounds
    ``Q(s, a') <= max(q R_C, R_C) + (1 - q) r_max / (1 - gamma)`` for a p-irrecoverable ``a'``
    (eq. 21) and ``Q(s, a) >= (-p C + (1 - p) r_min) / (1 - gamma)`` for a p-safe ``a``
    (eqs. 22-24). Requiring the second to exceed both branches of the first, multiplied by
    ``1 - gamma`` (eqs. 27 and 29), gives

        alpha1 = (r_max (1 - q g) - (1 - p) r_min) / (q g - p)          (eq. 28)
        alpha2 = (r_max (2 - q - g) - (1 - p) r_min) / (g - p)          (eq. 30)
        C > max(alpha1, alpha2, 0)                                       (eq. 31)

    Our copy of the appendix lost its math symbols; the formulas above were rebuilt from the
    surviving terms and re-derived from eqs. (27) and (29). Rearranging (27) and (29) into lower
    bounds on ``C`` divides by ``q g - p`` and ``g - p``; that is only valid when both are
    positive (otherwise no ``C`` satisfies the inequality and the bound does not exist), so this
    function raises ``ValueError`` unless ``q * gamma**H > p``. The boundary value is returned.

    :param r_min: smallest reward seen
    :param r_max: largest reward seen
    :param gamma: discount factor
    :param horizon: model rollout horizon ``H``
    :param p: irrecoverability threshold ``p`` in (0, 1)
    :param q: rapid-failure probability ``q`` in (0, 1]
    :return: the penalty ``C >= 0``
    """
    _check_common(r_min, r_max, gamma, horizon)
    if not 0.0 < p < 1.0:
        raise ValueError(f"stochastic_penalty: p must be in (0, 1), got {p}")
    if not 0.0 < q <= 1.0:
        raise ValueError(f"stochastic_penalty: q must be in (0, 1], got {q}")
    g = gamma**horizon
    if q * g <= p:
        raise ValueError(
            f"stochastic_penalty: q * gamma**H = {q * g:.4g} must exceed p = {p}; otherwise eq. (27) of "
            "seed 000 A.2 has no solution C (the rearranged bound divides by q*gamma**H - p). "
            "Use a larger q, a smaller p, a shorter horizon or a larger gamma."
        )
    alpha1 = (r_max * (1.0 - q * g) - (1.0 - p) * r_min) / (q * g - p)
    alpha2 = (r_max * (2.0 - q - g) - (1.0 - p) * r_min) / (g - p)
    return max(alpha1, alpha2, 0.0)
