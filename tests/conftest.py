"""Suite-wide settings."""

from collections.abc import Iterator

import pytest
import torch as th


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run each test on one torch thread.

    The suite's networks are tiny and pytest-xdist already runs one worker per core: intra-op
    threads only add synchronisation stalls (measured 2-20x slower on the 2-core CI machine).
    """
    previous = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(previous)
