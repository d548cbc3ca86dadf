"""Where the zoo finds sb3-safe's default hyper-parameter files.

The single source of truth is the repository's top-level ``hyperparams/`` folder. A
wheel (``pip install .``) carries a copy in ``sb3_safe/zoo/hyperparams/`` (written by
the build step in ``_sb3_safe_build.py``); a source checkout or an editable install
reads the top-level folder directly. This is the same two-place lookup rl_zoo3 uses
for its own ``hyperparams/`` folder.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGED_DIR = Path(__file__).resolve().parent / "hyperparams"
_SOURCE_DIR = Path(__file__).resolve().parents[2] / "hyperparams"


def hyperparams_dir() -> Path:
    """The folder holding ``<algo>.yml`` for the sb3-safe algorithms.

    :return: the packaged copy when it exists, else the source checkout's folder
    :raises FileNotFoundError: if neither exists (a broken installation)
    """
    for folder in (_PACKAGED_DIR, _SOURCE_DIR):
        if folder.is_dir():
            return folder
    raise FileNotFoundError(
        f"sb3-safe's hyperparams folder is missing (looked in {_PACKAGED_DIR} and {_SOURCE_DIR}); reinstall sb3-safe"
    )


def default_hyperparams_file(algo: str) -> Path | None:
    """sb3-safe's ``hyperparams/<algo>.yml``, or None when the package has no such file.

    :param algo: zoo algorithm name, e.g. ``"ppo_lag"``
    """
    try:
        candidate = hyperparams_dir() / f"{algo}.yml"
    except FileNotFoundError:
        return None
    return candidate if candidate.is_file() else None
