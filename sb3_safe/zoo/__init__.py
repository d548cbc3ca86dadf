"""sb3-safe in the RL Baselines3 Zoo (``rl_zoo3``).

After ``pip install sb3-safe``::

    python -m rl_zoo3.train --algo ppo_lag --env SafePendulum-v0
    python -m rl_zoo3.enjoy --algo ppo_lag --env SafePendulum-v0 -f logs/
    python -m sb3_safe.zoo train --algo ppo_lag --env SafePendulum-v0   # explicit entry point

A start-up hook (``sb3_safe_zoo_hook.pth`` + ``sb3_safe_zoo_hook.py``) patches the zoo
modules when they are imported; :mod:`sb3_safe.zoo.integration` holds the patches and
:func:`register_with_zoo` applies them by hand. ``docs/zoo.md`` explains the mechanism.

This module stays light (no torch import): the algorithm classes are imported by
name only when the zoo asks for them.
"""

from __future__ import annotations

from sb3_safe.zoo.config_files import default_hyperparams_file, hyperparams_dir
from sb3_safe.zoo.integration import register_with_zoo
from sb3_safe.zoo.registry import (
    ZOO_ALGOS,
    AlgorithmUnavailableError,
    available_algos,
    load_algo,
    unavailable_algos,
)

__all__ = [
    "ZOO_ALGOS",
    "AlgorithmUnavailableError",
    "available_algos",
    "default_hyperparams_file",
    "hyperparams_dir",
    "load_algo",
    "register_with_zoo",
    "unavailable_algos",
]
