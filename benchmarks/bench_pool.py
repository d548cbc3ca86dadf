"""Runs of a benchmark script spread over worker processes, shared by the benchmark scripts."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch as th

Spec = TypeVar("Spec")
Result = TypeVar("Result")


def init_worker() -> None:
    # Small MLPs run fastest on one thread, and the workers share the machine's cores.
    th.set_num_threads(1)


def imap_runs(run: Callable[[Spec], Result], specs: list[Spec], jobs: int) -> Iterator[Result]:
    """``run`` of each of ``specs``, in their order: in this process (``jobs == 1``) or in ``jobs`` worker
    processes with one torch thread each (``run`` must then be a module-level function).

    :param run: what to do with one spec
    :param specs: the runs' specifications
    :param jobs: how many processes run them
    """
    if jobs == 1:
        yield from map(run, specs)
        return
    # spawn, not fork: forking a process whose torch thread pools are running can deadlock.
    with multiprocessing.get_context("spawn").Pool(jobs, initializer=init_worker) as pool:
        yield from pool.imap(run, specs, chunksize=1)
