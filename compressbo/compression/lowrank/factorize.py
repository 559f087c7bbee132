"""One entry point per step, for any method: check a layer, decompose it, build replacements.

``method`` names a :class:`~.factorization.Factorization` in the registry
(:data:`~.registry.FACTORIZATIONS`): ``"svd"`` (``nn.Linear``), ``"tucker2"`` or ``"vh"``
(``nn.Conv2d`` with ``groups == 1``). The decomposition is the expensive, once-per-layer
step; building the replacement module for given ranks only truncates the factors.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import nn

from .geometry import LayerGeometry, Ranks
from .registry import FACTORIZATIONS, factorization, unknown_method
from .svd import SVDFactors, factorize_linear
from .tucker import TuckerFactors

__all__ = [
    "Factors",
    "build_factorized",
    "check_ranks",
    "decompose",
    "empty_factorized",
    "factorization_problem",
    "factorize_conv",
    "factorize_linear",
]

Factors = Union[SVDFactors, TuckerFactors]


def _methods_for(layer: nn.Module) -> list[str]:
    """The methods that factorize ``layer``'s type."""
    return [name for name, f in FACTORIZATIONS.items() if isinstance(layer, f.layer_type)]


def factorization_problem(layer: nn.Module, method: str) -> str | None:
    """Why ``layer`` cannot take ``method``, or ``None`` when it can."""
    if method not in FACTORIZATIONS:
        return unknown_method(method)
    method_ = FACTORIZATIONS[method]
    others = _methods_for(layer)
    hint = f" (use {' or '.join(others)} for {type(layer).__name__})" if others else ""
    return method_.problem(layer, hint)


def check_ranks(layer: nn.Module, method: str, ranks: Ranks) -> Ranks:
    """Validate ranks against the layer's full rank(s); returns them as ``int`` or ``(int, int)``."""
    return factorization(method).check_ranks(LayerGeometry.of(layer), ranks)


def decompose(layer: nn.Module, method: str) -> Factors:
    """The layer's full decomposition for ``method`` (the expensive step, done once)."""
    problem = factorization_problem(layer, method)
    if problem is not None:
        raise ValueError(problem)
    return FACTORIZATIONS[method].decompose(layer.weight)


def build_factorized(layer: nn.Module, method: str, factors: Factors, ranks: Ranks) -> nn.Sequential:
    """The replacement of ``layer`` at ``ranks``, from its cached ``factors`` (truncation only)."""
    return factorization(method).build(layer, factors, ranks)


def empty_factorized(
    layer: nn.Module, method: str, ranks: Ranks, device: torch.device | str | None = None
) -> nn.Sequential:
    """The replacement's structure at ``ranks`` with uninitialized-by-factor weights (for loading)."""
    return factorization(method).empty(layer, ranks, device)


def factorize_conv(layer: nn.Conv2d, ranks: Ranks, method: str = "tucker2") -> nn.Sequential:
    """Replace an ``nn.Conv2d`` by its Tucker-2 or vertical/horizontal factorization.

    Args:
        layer: Convolution with ``groups == 1`` (any stride, padding, dilation, with or without bias).
        ranks: ``(R_out, R_in)`` for ``"tucker2"``, an ``int`` ``K`` for ``"vh"``.
        method: ``"tucker2"`` or ``"vh"``.

    Returns:
        ``nn.Sequential`` of three (Tucker-2) or two (vertical/horizontal) convolutions.
    """
    conv_methods = [name for name, f in FACTORIZATIONS.items() if f.layer_type is nn.Conv2d]
    if method not in conv_methods:
        raise ValueError(f"factorize_conv method must be {' or '.join(map(repr, conv_methods))}, got {method!r}")
    problem = factorization_problem(layer, method)
    if problem is not None:
        raise ValueError(problem)
    ranks = check_ranks(layer, method, ranks)
    return build_factorized(layer, method, decompose(layer, method), ranks)
