"""The layouts of a cost critic beside a reward critic, shared by the on- and off-policy Lagrangian policies."""

from __future__ import annotations

from typing import Literal

#: ``"separate"``: the cost critic is an MLP of its own; ``"shared"``: it is a second output head on
#: the reward critic's last hidden layer.
CostValueHead = Literal["separate", "shared"]


def check_cost_value_head(cost_value_head: str) -> None:
    """Raise a ``ValueError`` naming the choices unless ``cost_value_head`` is one of them.

    :param cost_value_head: the layout asked for
    """
    if cost_value_head not in ("separate", "shared"):
        raise ValueError(f"cost_value_head must be 'separate' or 'shared', got {cost_value_head!r}")
