"""Optuna samplers for ``python -m rl_zoo3.train -optimize`` with the sb3-safe algorithms.

Each sampler reuses rl_zoo3's sampler of the parent algorithm (PPO, TRPO, SAC) for the
ordinary hyper-parameters and adds the Lagrange multiplier's own: the update rule
(plain dual ascent or PID), lambda_0, and the step size (plain) or the PID gains. These
do not depend on the cost limit, which is part of the problem (it stays as set in
``hyperparams/<algo>.yml`` or ``-params``) and is never sampled; the cost limit enters
the search through the cost-aware objective of
:class:`~sb3_safe.zoo.callbacks.CostAwareTrialEvalCallback`.

The Lagrangian values are stored in the Optuna trial under ``lag_*`` names (``lag_update_rule``
and ``lag_<key>`` for each key of ``lagrangian_kwargs``) and converted to the arguments that
PPOLag, TRPOLag and SACLag all take, ``lagrangian_update`` and ``lagrangian_kwargs``, so that :data:`HYPERPARAMS_CONVERTER` can rebuild the arguments of a stored trial
(``--storage ... --study-name ... --trial-id ...``) like rl_zoo3's converters do.

Search ranges (log-uniform), centred on the published defaults of SPEC.md 2.3:
lambda_0 in [1e-4, 1] (0.001), plain step size in [1e-3, 0.2] (0.035), K_p in
[1e-3, 1] (0.1), K_i and K_d in [1e-4, 0.1] (0.01).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

Sampler = Callable[["optuna.Trial", int, int, dict], dict[str, Any]]
Converter = Callable[[dict[str, Any]], dict[str, Any]]

LAGRANGIAN_PREFIX = "lag_"


def sample_lagrangian_params(trial: optuna.Trial) -> dict[str, Any]:
    """Sample the multiplier's update rule and its parameters (raw ``lag_*`` trial values).

    :param trial: the Optuna trial
    :return: ``{"lag_update_rule": "plain"|"pid", "lag_initial_value": ..., then "lag_lr"
        (plain) or "lag_kp", "lag_ki", "lag_kd" (PID)}``
    """
    rule = trial.suggest_categorical("lag_update_rule", ["plain", "pid"])
    raw: dict[str, Any] = {
        "lag_update_rule": rule,
        "lag_initial_value": trial.suggest_float("lag_initial_value", 1e-4, 1.0, log=True),
    }
    if rule == "plain":
        raw["lag_lr"] = trial.suggest_float("lag_lr", 1e-3, 0.2, log=True)
    else:
        raw["lag_kp"] = trial.suggest_float("lag_kp", 1e-3, 1.0, log=True)
        raw["lag_ki"] = trial.suggest_float("lag_ki", 1e-4, 0.1, log=True)
        raw["lag_kd"] = trial.suggest_float("lag_kd", 1e-4, 0.1, log=True)
    return raw


def _zoo_function(name: str) -> Callable[..., dict[str, Any]]:
    """A sampler or converter of ``rl_zoo3.hyperparams_opt``, looked up when called.

    Looking it up lazily keeps this module importable while ``rl_zoo3.hyperparams_opt``
    is being patched (the patch imports this module).
    """
    return getattr(importlib.import_module("rl_zoo3.hyperparams_opt"), name)


def _split_lagrangian(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate the ``lag_*`` trial values from the parent algorithm's ones."""
    lagrangian = {key: value for key, value in params.items() if key.startswith(LAGRANGIAN_PREFIX)}
    others = {key: value for key, value in params.items() if not key.startswith(LAGRANGIAN_PREFIX)}
    return lagrangian, others


def _check_rule(raw: dict[str, Any]) -> str:
    rule = raw.get("lag_update_rule")
    if rule not in ("plain", "pid"):
        raise ValueError(f"lag_update_rule must be 'plain' or 'pid', got {rule!r} (trial values: {raw})")
    return rule


def lagrangian_to_args(raw: dict[str, Any]) -> dict[str, Any]:
    """``lag_*`` values -> the arguments ``lagrangian_update`` and ``lagrangian_kwargs`` of PPOLag, TRPOLag and SACLag.

    :param raw: the ``lag_*`` trial values
    """
    rule = _check_rule(raw)
    kwargs: dict[str, Any] = {"initial_value": raw["lag_initial_value"]}
    if rule == "plain":
        kwargs["lr"] = raw["lag_lr"]
    else:
        kwargs.update(kp=raw["lag_kp"], ki=raw["lag_ki"], kd=raw["lag_kd"])
    return {"lagrangian_update": rule, "lagrangian_kwargs": kwargs}


def _lagrangian_sampler(parent: str, to_args: Converter | None) -> Sampler:
    """rl_zoo3's sampler ``parent``, plus the multiplier's parameters unless ``to_args`` is None."""

    def sampler(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
        params = _zoo_function(parent)(trial, n_actions, n_envs, additional_args)
        if to_args is not None:
            params.update(to_args(sample_lagrangian_params(trial)))
        return params

    extra = "" if to_args is None else " plus the Lagrange multiplier's parameters"
    sampler.__doc__ = f"rl_zoo3's {parent}{extra}."
    return sampler


def _lagrangian_converter(parent: str, to_args: Converter | None) -> Converter:
    """rl_zoo3's converter ``parent``, plus the conversion of the ``lag_*`` values unless ``to_args`` is None."""

    def converter(sampled_params: dict[str, Any]) -> dict[str, Any]:
        lagrangian, others = _split_lagrangian(sampled_params)
        params = _zoo_function(parent)(others)
        if lagrangian and to_args is not None:
            params.update(to_args(lagrangian))
        return params

    extra = "" if to_args is None else " plus the ``lag_*`` values"
    converter.__doc__ = f"rl_zoo3's {parent}{extra}."
    return converter


sample_ppo_lag_params = _lagrangian_sampler("sample_ppo_params", lagrangian_to_args)
sample_trpo_lag_params = _lagrangian_sampler("sample_trpo_params", lagrangian_to_args)
sample_sac_lag_params = _lagrangian_sampler("sample_sac_params", lagrangian_to_args)
sample_cpo_params = _lagrangian_sampler("sample_trpo_params", None)
convert_on_policy_lag_params = _lagrangian_converter("convert_onpolicy_params", lagrangian_to_args)
convert_sac_lag_params = _lagrangian_converter("convert_offpolicy_params", lagrangian_to_args)
convert_cpo_params = _lagrangian_converter("convert_onpolicy_params", None)

# zoo name -> sampler / converter, in rl_zoo3's HYPERPARAMS_SAMPLER / HYPERPARAMS_CONVERTER format.
# CPO has no multiplier: its trust region (target_kl = delta), conjugate-gradient and critic
# settings are exactly TRPO's, so it uses rl_zoo3's TRPO sampler as is.
HYPERPARAMS_SAMPLER: dict[str, Sampler] = {
    "ppo_lag": sample_ppo_lag_params,
    "trpo_lag": sample_trpo_lag_params,
    "sac_lag": sample_sac_lag_params,
    "cpo": sample_cpo_params,
}
HYPERPARAMS_CONVERTER: dict[str, Converter] = {
    "ppo_lag": convert_on_policy_lag_params,
    "trpo_lag": convert_on_policy_lag_params,
    "sac_lag": convert_sac_lag_params,
    "cpo": convert_cpo_params,
}
