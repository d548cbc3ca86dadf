"""The figure set-up and saving shared by the benchmark scripts' plots."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def saved_figure(path: Path, *subplots_args: Any, dpi: int = 100, **subplots_kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """``plt.subplots(*subplots_args, **subplots_kwargs)`` on the headless Agg backend; when the
    block ends the figure is laid out and written to ``path``, and it is closed in any case.

    :param path: the image file to write
    :param dpi: its resolution
    :return: (while in the block) the figure and its axes, as ``plt.subplots`` returns them
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*subplots_args, **subplots_kwargs)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
