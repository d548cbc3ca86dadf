"""Start-up hook that plugs sb3-safe into the RL Baselines3 Zoo (``rl_zoo3``).

``pip install`` puts ``sb3_safe_zoo_hook.pth`` into site-packages; Python's ``site``
module runs its single line at interpreter start-up, which imports this module.
Importing it only inserts :class:`ZooImportHook` at the front of ``sys.meta_path``:
it imports nothing else (no torch, no gymnasium, no sb3_safe), so programs that never
import ``rl_zoo3`` pay a few microseconds and see no other effect.

When ``rl_zoo3.utils``, ``rl_zoo3.hyperparams_opt`` or ``rl_zoo3.exp_manager`` is
imported, the hook lets the normal loader execute the module and then calls the
matching ``sb3_safe.zoo.integration.patch_*`` function on it. That function adds the
sb3-safe algorithms to ``ALGOS`` (so ``--algo ppo_lag`` is a valid choice, because
``train.py`` builds its parser from ``ALGOS`` after these imports), registers the
sb3-safe env ids, the Optuna samplers and the hyper-parameter file fallback.
See ``docs/zoo.md``.

Set the environment variable ``SB3_SAFE_ZOO_HOOK=0`` to switch the hook off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

DISABLE_VARIABLE = "SB3_SAFE_ZOO_HOOK"

# zoo module -> name of the function of sb3_safe.zoo.integration that patches it
PATCHES: dict[str, str] = {
    "rl_zoo3.utils": "patch_utils",
    "rl_zoo3.hyperparams_opt": "patch_hyperparams_opt",
    "rl_zoo3.exp_manager": "patch_exp_manager",
}


class _PatchAfterExecLoader(Loader):
    """Wraps the real loader of a zoo module: execute it, then patch it."""

    def __init__(self, loader: Loader, patch_name: str) -> None:
        self._loader = loader
        self._patch_name = patch_name

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        try:
            # Imported here, never at start-up: this is the first moment sb3_safe is needed.
            from sb3_safe.zoo import integration

            getattr(integration, self._patch_name)(module)
        except Exception as exc:  # noqa: BLE001 - a broken sb3-safe must not break the zoo's own algorithms
            import warnings

            warnings.warn(
                f"sb3-safe could not plug into {module.__name__} ({type(exc).__name__}: {exc}); its algorithms, "
                f"env ids or hyper-parameters may be missing from the zoo. Set {DISABLE_VARIABLE}=0 to skip the hook.",
                RuntimeWarning,
                stacklevel=2,
            )

    def __getattr__(self, name: str) -> Any:
        # get_source, get_filename, is_package, get_resource_reader... of the real loader
        return getattr(self._loader, name)


class ZooImportHook(MetaPathFinder):
    """A meta-path finder that only reacts to the zoo modules listed in :data:`PATCHES`.

    It finds the module's spec with the other finders on ``sys.meta_path`` and swaps in
    a loader that patches the module right after it has been executed.
    """

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        patch_name = PATCHES.get(fullname)
        if patch_name is None:
            return None
        spec = self._find_with_other_finders(fullname, path, target)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _PatchAfterExecLoader(spec.loader, patch_name)
        return spec

    def _find_with_other_finders(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None
    ) -> ModuleSpec | None:
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, ZooImportHook):
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None


def install() -> bool:
    """Put the hook on ``sys.meta_path`` (idempotent).

    :return: whether the hook is installed after the call (False when disabled with
        ``SB3_SAFE_ZOO_HOOK=0``)
    """
    if os.environ.get(DISABLE_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not any(isinstance(finder, ZooImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, ZooImportHook())
    return True


install()
