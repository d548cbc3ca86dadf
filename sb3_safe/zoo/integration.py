"""Patches that plug sb3-safe into rl_zoo3's modules (see ``docs/zoo.md``).

rl_zoo3 has no plug-in mechanism: ``ALGOS`` is a dict literal in ``rl_zoo3.utils``,
``--algo`` choices are fixed when ``train.py``/``enjoy.py`` build their parser, and the
default hyper-parameter file is looked up only in rl_zoo3's own folder. Following the
maintainers' own pattern for SBX (mutate ``rl_zoo3.utils.ALGOS`` before ``train()``
runs), each function below mutates one zoo module right after it has been imported:

* :func:`patch_utils` -- ``ALGOS`` gains every sb3-safe algorithm whose module imports,
  and ``import sb3_safe`` registers the env ids (no ``--gym-packages`` needed);
* :func:`patch_hyperparams_opt` -- ``HYPERPARAMS_SAMPLER``/``HYPERPARAMS_CONVERTER``
  gain the samplers of :mod:`sb3_safe.zoo.samplers`;
* :func:`patch_exp_manager` -- the experiment manager falls back to sb3-safe's
  ``hyperparams/<algo>.yml`` when rl_zoo3 has no file of that name and no ``-conf`` was
  given, names the offending key when a hyper-parameter is not a constructor argument,
  and evaluates Optuna trials with :class:`~sb3_safe.zoo.callbacks.CostAwareTrialEvalCallback`.

They are called by the start-up hook (``sb3_safe_zoo_hook``) on ``python -m
rl_zoo3.train``, or explicitly through :func:`register_with_zoo`. All are idempotent
(they only add missing entries, and wrap a class once), so they also survive
``importlib.reload`` of a zoo module.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from sb3_safe.zoo.config_files import default_hyperparams_file
from sb3_safe.zoo.registry import ZOO_ALGOS, available_algos, unavailable_algos

_PATCHED_FLAG = "_sb3_safe_patched"


def _mark_patched(target: type) -> bool:
    """Set the patched flag on a class; return False if it was already set (no double wrapping).

    The flag lives on the class, not on its module: ``importlib.reload`` of the module builds a
    new, unpatched class, which then gets wrapped again.
    """
    if target.__dict__.get(_PATCHED_FLAG, False):
        return False
    setattr(target, _PATCHED_FLAG, True)
    return True


def requested_algo(argv: Sequence[str]) -> str | None:
    """The value of ``--algo`` in a zoo command line, or None when absent.

    :param argv: the command line, e.g. ``sys.argv``
    """
    for index, argument in enumerate(argv):
        if argument == "--algo" and index + 1 < len(argv):
            return argv[index + 1]
        if argument.startswith("--algo="):
            return argument.partition("=")[2]
    return None


def explain_unavailable_algo(argv: Sequence[str]) -> str | None:
    """Why the sb3-safe algorithm asked for on the command line cannot be used, if it cannot.

    argparse only says "invalid choice" for a name missing from ``ALGOS``; this gives the
    import error behind it.

    :param argv: the command line
    :return: the explanation, or None when the requested algorithm is fine or not ours
    """
    algo = requested_algo(argv)
    reason = unavailable_algos().get(algo) if algo in ZOO_ALGOS else None
    if reason is None:
        return None
    return f"sb3-safe: --algo {algo} ({ZOO_ALGOS[algo]}) is not available, so the zoo does not offer it: {reason}"


def patch_utils(module: ModuleType) -> None:
    """Register the sb3-safe env ids and add the importable sb3-safe algorithms to ``module.ALGOS``.

    A registered name whose module does not import (not written yet, or broken) is left
    out of ``ALGOS`` so that ``--algo`` lists only usable names; when the command line
    asks for such a name, the reason is printed to stderr before argparse rejects it.

    :param module: ``rl_zoo3.utils``
    """
    importlib.import_module("sb3_safe")  # registers SafePendulum-v0 & co. with gymnasium
    for name, algo_class in available_algos().items():
        module.ALGOS.setdefault(name, algo_class)
    explanation = explain_unavailable_algo(sys.argv)
    if explanation is not None:
        print(explanation, file=sys.stderr)


def patch_hyperparams_opt(module: ModuleType) -> None:
    """Add the Optuna samplers and converters of the importable sb3-safe algorithms.

    :param module: ``rl_zoo3.hyperparams_opt``
    """
    from sb3_safe.zoo.samplers import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER

    available = available_algos()
    for name, sampler in HYPERPARAMS_SAMPLER.items():
        if name in available:
            module.HYPERPARAMS_SAMPLER.setdefault(name, sampler)
            module.HYPERPARAMS_CONVERTER.setdefault(name, HYPERPARAMS_CONVERTER[name])


def _zoo_default_config(exp_manager_module: ModuleType, algo: str) -> str:
    """The path rl_zoo3's ExperimentManager uses when no ``-conf`` is given (same rule as its ``__init__``)."""
    package_dir = Path(exp_manager_module.__file__).parent
    root = package_dir if (package_dir / "hyperparams").is_dir() else package_dir.parent
    return str(root / f"hyperparams/{algo}.yml")


def _with_sb3_safe_config_fallback(init: Callable[..., None], exp_manager_module: ModuleType) -> Callable[..., None]:
    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        uses_zoo_default = self.config == _zoo_default_config(exp_manager_module, self.algo)
        if not uses_zoo_default or Path(self.config).is_file():
            return
        ours = default_hyperparams_file(self.algo)
        if ours is not None:
            self.config = str(ours)
        elif self.algo in ZOO_ALGOS:
            raise FileNotFoundError(
                f"No hyper-parameter file for --algo {self.algo}: neither rl_zoo3 ({self.config}) nor sb3-safe "
                f"(hyperparams/{self.algo}.yml) has one. Pass -conf <file.yml> with an entry for "
                f"{self.env_name.gym_id} or a 'default' entry."
            )

    return __init__


def _naming_bad_hyperparameters(setup_experiment: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(setup_experiment)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return setup_experiment(self, *args, **kwargs)
        except TypeError as exc:
            if self.algo not in ZOO_ALGOS or "unexpected keyword argument" not in str(exc):
                raise
            raise TypeError(
                f"{exc}. A hyper-parameter for --algo {self.algo} on {self.env_name.gym_id} is not an argument of "
                f"{ZOO_ALGOS[self.algo]}: check the entry in {self.config} and the -params overrides."
            ) from exc

    return wrapped


def patch_exp_manager(module: ModuleType) -> None:
    """Hyper-parameter file fallback, clear bad-key errors and cost-aware Optuna evaluation.

    :param module: ``rl_zoo3.exp_manager``
    """
    from sb3_safe.zoo.callbacks import CostAwareTrialEvalCallback

    manager = module.ExperimentManager
    if _mark_patched(manager):
        manager.__init__ = _with_sb3_safe_config_fallback(manager.__init__, module)
        manager.setup_experiment = _naming_bad_hyperparameters(manager.setup_experiment)
    # ExperimentManager.objective builds its evaluation callback from this module global.
    module.TrialEvalCallback = CostAwareTrialEvalCallback


def register_with_zoo() -> None:
    """Import rl_zoo3's modules and apply every patch now (no start-up hook needed).

    Use it in a script before calling ``rl_zoo3.train.train()``, as the SBX guide does,
    or when the hook is switched off with ``SB3_SAFE_ZOO_HOOK=0``.
    """
    patch_utils(importlib.import_module("rl_zoo3.utils"))
    patch_hyperparams_opt(importlib.import_module("rl_zoo3.hyperparams_opt"))
    patch_exp_manager(importlib.import_module("rl_zoo3.exp_manager"))
