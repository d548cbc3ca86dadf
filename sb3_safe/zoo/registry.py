"""The sb3-safe algorithms known to the RL Zoo, imported lazily by name."""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

# zoo name (``--algo``) -> "module:Class". Every later sb3-safe algorithm is added here.
ZOO_ALGOS: dict[str, str] = {
    "ppo_lag": "sb3_safe.ppo_lag:PPOLag",
    "trpo_lag": "sb3_safe.trpo_lag:TRPOLag",
    "sac_lag": "sb3_safe.sac_lag:SACLag",
    "cpo": "sb3_safe.cpo:CPO",
    "smbpo": "sb3_safe.smbpo:SMBPO",
    "guss": "sb3_safe.guss:GuSS",
    "rs": "sb3_safe.guss:RS",
    "srs": "sb3_safe.guss:SRS",
    "cem": "sb3_safe.guss:CEM",
    "rcem": "sb3_safe.guss:RCEM",
}


class AlgorithmUnavailableError(ImportError):
    """Raised when a registered sb3-safe algorithm cannot be imported."""


def _split_target(name: str) -> tuple[str, str]:
    if name not in ZOO_ALGOS:
        known = ", ".join(sorted(ZOO_ALGOS))
        raise KeyError(f"'{name}' is not an sb3-safe zoo algorithm; the registered names are: {known}")
    module_name, _, class_name = ZOO_ALGOS[name].partition(":")
    return module_name, class_name


@lru_cache(maxsize=None)
def _import_result(name: str) -> tuple[type[BaseAlgorithm] | None, str]:
    """Import one algorithm once; return (class, "") or (None, why it failed)."""
    module_name, class_name = _split_target(name)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure (missing file, bug, missing extra) makes it unavailable
        return None, f"importing {module_name} failed: {type(exc).__name__}: {exc}"
    algo_class = getattr(module, class_name, None)
    if not isinstance(algo_class, type):
        return None, f"module {module_name} has no class {class_name}"
    return algo_class, ""


def load_algo(name: str) -> type[BaseAlgorithm]:
    """The algorithm class registered under a zoo name.

    :param name: zoo name, e.g. ``"ppo_lag"``
    :return: the class, e.g. :class:`sb3_safe.ppo_lag.PPOLag`
    :raises KeyError: if the name is not registered
    :raises AlgorithmUnavailableError: if its module does not import, with the reason
    """
    algo_class, reason = _import_result(name)
    if algo_class is None:
        raise AlgorithmUnavailableError(f"sb3-safe algorithm '{name}' ({ZOO_ALGOS[name]}) is unavailable: {reason}")
    return algo_class


def available_algos() -> dict[str, type[BaseAlgorithm]]:
    """The registered algorithms whose module imports, by zoo name (imports them)."""
    found = {name: _import_result(name)[0] for name in ZOO_ALGOS}
    return {name: algo_class for name, algo_class in found.items() if algo_class is not None}


def unavailable_algos() -> dict[str, str]:
    """The registered algorithms whose module does not import, with the reason."""
    return {name: _import_result(name)[1] for name in ZOO_ALGOS if _import_result(name)[0] is None}
