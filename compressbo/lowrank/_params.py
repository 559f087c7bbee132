"""Small helpers shared by the factorizations: compute dtype and parameter assignment."""

from __future__ import annotations

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
