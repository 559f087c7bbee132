"""Small helpers shared by the factorizations: compute dtype, parameter assignment, threads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch ops on one intra-op thread inside the block, then restore the thread count.

    Building replacements is a few dozen memory-bound copies. Each large copy is a parallel
    region; on a busy machine one of its threads may wait a whole scheduler slice (~15 ms
    measured on a loaded 2-core machine, versus 0.2 ms on one thread), so a multi-threaded
    build can take 20x longer than a single-threaded one, which is never much slower.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
