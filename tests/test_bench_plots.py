"""Tests of the benchmark scripts' shared figure helper (benchmarks/bench_plots.py)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from benchmark_modules import load_benchmark

saved_figure = load_benchmark("bench_plots").saved_figure


def test_the_figure_is_written_on_leaving_the_block_and_closed(tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    with saved_figure(path, 1, 2, figsize=(4, 2)) as (fig, axes):
        assert len(axes) == 2
        axes[0].plot([0, 1], [1, 0])
        assert not path.exists()
    assert path.read_bytes().startswith(b"\x89PNG")
    assert not plt.fignum_exists(fig.number)


def test_a_failing_plot_writes_nothing_and_still_closes_its_figure(tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    with pytest.raises(KeyError):
        with saved_figure(path) as (fig, _):
            raise KeyError("missing series")
    assert not path.exists()
    assert not plt.fignum_exists(fig.number)
