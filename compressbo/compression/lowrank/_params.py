"""Small helpers shared by the factorizations: compute dtype, parameter assignment, threads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import Tensor, nn


def compute_dtype(weight: Tensor) -> torch.dtype:
    """Decompose in the weight's dtype, but never below float32."""
    return torch.promote_types(weight.dtype, torch.float32)


def set_parameters(module: nn.Module, weight: Tensor, bias: Tensor | None = None) -> None:
    """Give a (possibly ``meta``-built) layer fresh parameters, without random initialization.

    Args:
        module: An ``nn.Linear`` or ``nn.Conv2d`` whose weight has ``weight``'s shape.
        weight: New weight values (copied into a contiguous tensor).
        bias: New bias values; the layer must have a bias exactly when this is given.
    """
    module.weight = nn.Parameter(weight.detach().clone(memory_format=torch.contiguous_format))
    if bias is not None:
        module.bias = nn.Parameter(bias.detach().clone())


def machine_threads() -> int:
    """Threads for the one-time decomposition and the HOOI refinement on this machine.

    The cores this process may run on (``os.sched_getaffinity``) minus the load the rest of
    the machine puts on them (the 1-minute load average, rounded), at least 1. On a loaded
    machine every extra OpenMP thread waits for a core: the ResNet-50 decomposition took 56 s
    on 2 threads against 6.4 s on 1 on the project's loaded 2-core machine.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - platforms without a load average
        load = 0.0
    return max(1, min(cores, int(cores - load + 0.5)))


def resolve_threads(threads: int | None) -> int:
    """``threads``, or for ``None`` :func:`machine_threads` capped by torch's own thread count.

    The cap keeps a process that limited its threads (a comparison worker sets 1, as does
    ``OMP_NUM_THREADS=1``) from oversubscribing the cores its siblings evaluate on.

    Raises:
        ValueError: ``threads`` is not a positive integer.
    """
    if threads is None:
        return max(1, min(machine_threads(), torch.get_num_threads()))
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return int(threads)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run torch ops on ``threads`` intra-op threads inside the block, then restore the count."""
    previous = torch.get_num_threads()
    if previous == threads:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def single_threaded() -> AbstractContextManager[None]:
    """Run torch ops on one intra-op thread inside the block, then restore the thread count.

    Building replacements is a few dozen memory-bound copies. Each large copy is a parallel
    region; on a busy machine one of its threads may wait a whole scheduler slice (~15 ms
    measured on a loaded 2-core machine, versus 0.2 ms on one thread), so a multi-threaded
    build can take 20x longer than a single-threaded one, which is never much slower.
    """
    return torch_threads(1)
