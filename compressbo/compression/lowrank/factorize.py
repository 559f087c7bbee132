"""One entry point per factorization method: check a layer, decompose it, build replacements.

``method`` is ``"svd"`` (``nn.Linear``), ``"tucker2"`` or ``"vh"`` (``nn.Conv2d`` with
``groups == 1``). The decomposition is the expensive, once-per-layer step; building the
replacement module for given ranks only truncates the factors.
"""

from __future__ import annotations

import numbers
from typing import Union

import torch
from torch import nn

from .ranks import METHODS, LayerGeometry, Ranks, max_ranks
from .svd import SVDFactors, build_linear, factorize_linear, linear_module, svd_factors
from .tucker import TuckerFactors, build_tucker2, tucker2_factors, tucker2_module
from .vh import build_vh, vh_factors, vh_module

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


def factorization_problem(layer: nn.Module, method: str) -> str | None:
    """Why ``layer`` cannot take ``method``, or ``None`` when it can."""
    if method not in METHODS:
        return f"unknown factorization {method!r} (choose one of {', '.join(METHODS)})"
    if method == "svd":
        if not isinstance(layer, nn.Linear):
            return f"svd factorizes nn.Linear, but it is {type(layer).__name__} (use tucker2 or vh for Conv2d)"
        return None
    if not isinstance(layer, nn.Conv2d):
        hint = " (use svd for Linear)" if isinstance(layer, nn.Linear) else ""
        return f"{method} factorizes nn.Conv2d, but it is {type(layer).__name__}{hint}"
    if layer.groups != 1:
        return f"{method} needs groups == 1, but the convolution has groups={layer.groups}"
    return None


def check_ranks(layer: nn.Module, method: str, ranks: Ranks) -> Ranks:
    """Validate ranks against the layer's full rank(s); returns them as ``int`` or ``(int, int)``."""
    full = max_ranks(LayerGeometry.of(layer), method)
    if method == "tucker2":
        if not (isinstance(ranks, (tuple, list)) and len(ranks) == 2):
            raise ValueError(f"tucker2 needs ranks (R_out, R_in), got {ranks!r}")
        ranks = (int(ranks[0]), int(ranks[1]))
        if not all(1 <= r <= f for r, f in zip(ranks, full)):
            raise ValueError(f"tucker2 ranks must satisfy 1 <= (R_out, R_in) <= {full}, got {ranks}")
        return ranks
    if isinstance(ranks, bool) or not isinstance(ranks, numbers.Integral):
        raise ValueError(f"{method} needs one integer rank, got {ranks!r}")
    ranks = int(ranks)
    if not 1 <= ranks <= full:
        raise ValueError(f"{method} rank must be in [1, {full}], got {ranks}")
    return ranks


def decompose(layer: nn.Module, method: str) -> Factors:
    """The layer's full decomposition for ``method`` (the expensive step, done once)."""
    problem = factorization_problem(layer, method)
    if problem is not None:
        raise ValueError(problem)
    if method == "svd":
        return svd_factors(layer.weight)
    if method == "tucker2":
        return tucker2_factors(layer.weight)
    return vh_factors(layer.weight)


def build_factorized(layer: nn.Module, method: str, factors: Factors, ranks: Ranks) -> nn.Sequential:
    """The replacement of ``layer`` at ``ranks``, from its cached ``factors`` (truncation only)."""
    if method == "svd":
        return build_linear(layer, factors, ranks)
    if method == "tucker2":
        return build_tucker2(layer, factors, ranks)
    return build_vh(layer, factors, ranks)


def empty_factorized(
    layer: nn.Module, method: str, ranks: Ranks, device: torch.device | str | None = None
) -> nn.Sequential:
    """The replacement's structure at ``ranks`` with uninitialized-by-factor weights (for loading)."""
    if method == "svd":
        return linear_module(layer, ranks, device)
    if method == "tucker2":
        return tucker2_module(layer, ranks, device)
    return vh_module(layer, ranks, device)


def factorize_conv(layer: nn.Conv2d, ranks: Ranks, method: str = "tucker2") -> nn.Sequential:
    """Replace an ``nn.Conv2d`` by its Tucker-2 or vertical/horizontal factorization.

    Args:
        layer: Convolution with ``groups == 1`` (any stride, padding, dilation, with or without bias).
        ranks: ``(R_out, R_in)`` for ``"tucker2"``, an ``int`` ``K`` for ``"vh"``.
        method: ``"tucker2"`` or ``"vh"``.

    Returns:
        ``nn.Sequential`` of three (Tucker-2) or two (vertical/horizontal) convolutions.
    """
    if method not in ("tucker2", "vh"):
        raise ValueError(f"factorize_conv method must be 'tucker2' or 'vh', got {method!r}")
    problem = factorization_problem(layer, method)
    if problem is not None:
        raise ValueError(problem)
    ranks = check_ranks(layer, method, ranks)
    return build_factorized(layer, method, decompose(layer, method), ranks)
