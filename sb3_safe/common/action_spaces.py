"""A clear error for the action spaces that SB3's SAC cannot act in, for the algorithms built on it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gymnasium import spaces


def check_continuous_action_space(action_space: spaces.Space | None, algorithm: str) -> None:
    """Raise a clear error for action spaces that SAC's squashed Gaussian actor cannot produce.

    :param action_space: the env's action space (None: not known yet, nothing to check)
    :param algorithm: the algorithm's name, for the message
    """
    if action_space is not None and not isinstance(action_space, spaces.Box):
        raise ValueError(
            f"{algorithm} needs a continuous action space (gymnasium.spaces.Box), got {action_space}. "
            "It is built on SB3's SAC, whose squashed Gaussian actor does not support discrete or "
            "multi-discrete actions; use PPOLag or TRPOLag for those."
        )


@contextmanager
def sac_action_space_checked(model: Any, algorithm: str) -> Iterator[None]:
    """Wrap SB3 SAC's ``__init__`` so that a non-Box action space gives :func:`check_continuous_action_space`'s
    error instead of SB3's bare assert (an env given as a registered id is only made inside SB3), also under
    ``python -O``, which removes that assert.

    :param model: the algorithm being constructed (its ``action_space`` is read once SB3 has set it)
    :param algorithm: the algorithm's name, for the message
    """
    try:
        yield
    except AssertionError as exc:
        if "action spaces" in str(exc):
            check_continuous_action_space(getattr(model, "action_space", None), algorithm)
            raise ValueError(f"{algorithm} needs a continuous (Box) action space: {exc}") from exc
        raise
    # No space yet when SB3 was given no env, as in ``load``.
    check_continuous_action_space(getattr(model, "action_space", None), algorithm)
