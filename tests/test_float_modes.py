"""Tests of sb3_safe.common.float_modes: reading and setting the calling thread's denormal handling."""

from __future__ import annotations

import threading

import pytest
import torch as th

from sb3_safe.common.float_modes import denormals_flushed, flushes_denormals

pytestmark = pytest.mark.skipif(not th.set_flush_denormal(False), reason="this CPU cannot flush denormals")


def product_of_small_floats() -> float:
    """1e-20 * 1e-20 = 1e-40, a denormal float32: 0 when the thread flushes denormals."""
    return float((th.tensor([1e-20]) * th.tensor([1e-20]))[0])


def test_the_block_flushes_and_the_previous_setting_comes_back_nested() -> None:
    assert not flushes_denormals() and product_of_small_floats() > 0.0
    with denormals_flushed():
        assert flushes_denormals() and product_of_small_floats() == 0.0
        with denormals_flushed(False):
            assert not flushes_denormals() and product_of_small_floats() > 0.0
        assert flushes_denormals()
    assert not flushes_denormals()


def test_the_previous_setting_comes_back_when_the_block_raises() -> None:
    with denormals_flushed():
        with pytest.raises(ValueError, match="inside"):
            with denormals_flushed(False):
                raise ValueError("inside")
        assert flushes_denormals()
    assert not flushes_denormals()


def test_the_probe_reads_float32_on_the_cpu_whatever_the_default_dtype() -> None:
    default_dtype = th.get_default_dtype()
    th.set_default_dtype(th.float64)  # 1e-39 is a normal float64
    try:
        with denormals_flushed():
            assert flushes_denormals()
        assert not flushes_denormals()
    finally:
        th.set_default_dtype(default_dtype)


def test_the_setting_is_the_calling_threads_own() -> None:
    inside, probed = threading.Event(), threading.Event()
    seen: list[bool] = []

    def probe_when_the_main_thread_flushes() -> None:
        inside.wait()
        seen.append(flushes_denormals())
        probed.set()

    other = threading.Thread(target=probe_when_the_main_thread_flushes)
    other.start()  # before the block: a thread created inside it would inherit the setting
    with denormals_flushed():
        inside.set()
        probed.wait()
    other.join()
    assert seen == [False]
