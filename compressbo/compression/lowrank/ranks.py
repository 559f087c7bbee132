"""Continuous rank scaling: parameter and FLOP counts, and ``theta -> ranks``.

Every compressible layer is described by its :class:`LayerGeometry` (a ``Linear`` is a
``1 x 1`` "convolution" with ``out_features x in_features`` channels). Ranks are an ``int``
for ``"svd"`` and ``"vh"`` and a pair ``(R_out, R_in)`` for ``"tucker2"``.

Two schemes map a layer's continuous ``theta`` to ranks:

- ``"params"`` (default): ``theta`` is the fraction of the layer's parameters kept. The
  largest ranks whose factorized parameter count is at most ``theta * full_params`` are
  chosen (Tucker-2 moves along ``R_out / R_in = T / S``), so the layer's compression ratio
  is ``theta`` up to one rank step.
- ``"plain"``: ``rank = max(1, floor(theta * r_max))`` per mode, as in the paper's code.

Ranks are always clamped to ``[1, full rank]``.

**The top of the box leaves a layer unchanged.** A factorization whose parameter count is
at least the original layer's saves nothing and only adds approximation error (Tucker-2 at
``theta = 1`` keeps ranks ``57 x 64`` of a ``64 x 64`` 3x3 convolution, relative kernel error
0.33 on random weights). :func:`keeps_original` says when ranks are such a factorization, and
:func:`layer_ranks` (what the compressor uses) maps ``theta >= 1`` and every ``theta`` whose
ranks keep the original to the full ranks, which :class:`~compressbo.compression.compressor.Compressor`
builds as the original module itself: ratio 1, FLOPs ratio 1, no approximation error. The
search box stays the continuous ``[lo, 1]``; only its top face (and, under ``"plain"``, the
thetas whose factorization is no smaller than the layer) is the unchanged layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np
from torch import nn

from compressbo.exceptions import SettingError

__all__ = [
    "METHODS",
    "SCHEMES",
    "LayerGeometry",
    "Ranks",
    "factorized_macs",
    "factorized_params",
    "full_macs",
    "full_params",
    "keeps_original",
    "layer_ranks",
    "max_ranks",
    "rank_breakpoints",
    "ranks_for_theta",
]

Method = Literal["svd", "tucker2", "vh"]
Scheme = Literal["params", "plain"]
Ranks = Union[int, tuple[int, int]]

METHODS: tuple[str, ...] = ("svd", "tucker2", "vh")
SCHEMES: tuple[str, ...] = ("params", "plain")


def check_method(method: str) -> str:
    """``method`` if it is a known factorization, else :class:`SettingError` naming them."""
    if method not in METHODS:
        raise SettingError(f"unknown factorization method {method!r}; choose one of {', '.join(METHODS)}", setting="method")
    return method


def check_scheme(scheme: str) -> str:
    """``scheme`` if it is a known rank scheme, else :class:`SettingError` naming them."""
    if scheme not in SCHEMES:
        raise SettingError(f"unknown rank scheme {scheme!r}; choose one of {', '.join(SCHEMES)}", setting="scheme")
    return scheme


@dataclass(frozen=True)
class LayerGeometry:
    """Channel and kernel sizes of a ``Linear`` or ``Conv2d`` layer.

    Attributes:
        out_channels: ``T`` (``N`` in the vertical/horizontal paper, ``out_features`` of a Linear).
        in_channels: ``S`` (``C``, ``in_features``).
        kernel_size: ``(kh, kw)``; ``(1, 1)`` for a Linear layer.
        bias: Whether the layer has a bias (kept, uncompressed, on the last factor).
    """

    out_channels: int
    in_channels: int
    kernel_size: tuple[int, int] = (1, 1)
    bias: bool = True

    @classmethod
    def of(cls, layer: nn.Module) -> LayerGeometry:
        """The geometry of an ``nn.Linear`` or ``nn.Conv2d`` (``groups == 1``)."""
        if isinstance(layer, nn.Linear):
            return cls(layer.out_features, layer.in_features, (1, 1), layer.bias is not None)
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            return cls(layer.out_channels, layer.in_channels, (kh, kw), layer.bias is not None)
        raise TypeError(f"expected nn.Linear or nn.Conv2d, got {type(layer).__name__}")

    @property
    def kernel_area(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1]

    @property
    def bias_params(self) -> int:
        return self.out_channels if self.bias else 0


def full_params(geometry: LayerGeometry) -> int:
    """Parameters of the original layer: ``T * S * kh * kw`` (+ ``T`` bias)."""
    g = geometry
    return g.out_channels * g.in_channels * g.kernel_area + g.bias_params


def max_ranks(geometry: LayerGeometry, method: str) -> Ranks:
    """Full rank(s) of a layer's factorization.

    ``svd``: ``min(T, S)``; ``vh``: ``min(S * kh, kw * T)`` (rank of the reshaped kernel);
    ``tucker2``: ``(min(T, S * kh * kw), min(S, T * kh * kw))`` (ranks of the two unfoldings).
    """
    g = geometry
    kh, kw = g.kernel_size
    if method == "svd":
        return min(g.out_channels, g.in_channels)
    if method == "vh":
        return min(g.in_channels * kh, kw * g.out_channels)
    if method == "tucker2":
        return (
            min(g.out_channels, g.in_channels * g.kernel_area),
            min(g.in_channels, g.out_channels * g.kernel_area),
        )
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def factorized_params(geometry: LayerGeometry, method: str, ranks: Ranks) -> int:
    """Parameters of the factorized layer at ``ranks`` (bias included).

    ``svd``: ``r * (S + T)``; ``vh``: ``K * (S * kh + T * kw)``;
    ``tucker2``: ``S * R_in + R_in * R_out * kh * kw + R_out * T``.
    """
    g = geometry
    kh, kw = g.kernel_size
    if method == "svd":
        return ranks * (g.in_channels + g.out_channels) + g.bias_params
    if method == "vh":
        return ranks * (g.in_channels * kh + g.out_channels * kw) + g.bias_params
    if method == "tucker2":
        r_out, r_in = ranks
        return (
            g.in_channels * r_in + r_in * r_out * g.kernel_area + r_out * g.out_channels + g.bias_params
        )
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def full_macs(geometry: LayerGeometry, out_hw: tuple[int, int]) -> int:
    """Multiply-accumulates of the original layer for one input (``out_hw``: output positions)."""
    return out_hw[0] * out_hw[1] * (full_params(geometry) - geometry.bias_params)


def factorized_macs(
    geometry: LayerGeometry,
    method: str,
    ranks: Ranks,
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
) -> int:
    """Multiply-accumulates of the factorized layer for one input.

    Args:
        geometry: The original layer's geometry.
        method: ``"svd"``, ``"tucker2"`` or ``"vh"``.
        ranks: The factorization's ranks.
        in_hw: Spatial size ``(H_in, W_in)`` of the layer's input (``(positions, 1)`` for Linear).
        out_hw: Spatial size ``(H_out, W_out)`` of its output.
    """
    g = geometry
    kh, kw = g.kernel_size
    n_in, n_out = in_hw[0] * in_hw[1], out_hw[0] * out_hw[1]
    if method == "svd":
        return n_out * ranks * (g.in_channels + g.out_channels)
    if method == "vh":
        # vertical kh x 1 conv keeps the input width; horizontal 1 x kw conv gives the output.
        return out_hw[0] * in_hw[1] * g.in_channels * ranks * kh + n_out * ranks * g.out_channels * kw
    if method == "tucker2":
        r_out, r_in = ranks
        return n_in * g.in_channels * r_in + n_out * (r_in * r_out * g.kernel_area + r_out * g.out_channels)
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def ranks_for_theta(theta: float, geometry: LayerGeometry, method: str, scheme: str = "params") -> Ranks:
    """Map a layer's continuous ``theta`` to integer ranks.

    Args:
        theta: The layer's parameter (fraction of parameters kept for ``"params"``,
            fraction of the full rank for ``"plain"``).
        geometry: The original layer's geometry.
        method: ``"svd"``, ``"tucker2"`` or ``"vh"``.
        scheme: ``"params"`` or ``"plain"``.

    Returns:
        An ``int`` (``svd``, ``vh``) or ``(R_out, R_in)`` (``tucker2``), each in ``[1, full rank]``.
    """
    if not math.isfinite(theta):
        raise ValueError(f"theta must be finite, got {theta}")
    full = max_ranks(geometry, method)
    if scheme == "plain":
        if method == "tucker2":
            return tuple(max(1, min(r, math.floor(theta * r + 1e-9))) for r in full)  # type: ignore[return-value]
        return max(1, min(full, math.floor(theta * full + 1e-9)))
    if scheme != "params":
        raise ValueError(f"unknown rank scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    # theta exactly at a rank's own ratio keeps that rank despite round-off in theta * params
    budget = theta * full_params(geometry) * (1 + 1e-12)
    if method == "tucker2":
        return _tucker2_ranks_for_budget(geometry, budget)
    per_rank = factorized_params(geometry, method, 1) - geometry.bias_params
    rank = math.floor((budget - geometry.bias_params) / per_rank)
    return max(1, min(full, rank))


def _tucker2_ranks_for_budget(geometry: LayerGeometry, budget: float) -> tuple[int, int]:
    """Largest ``(R_out, R_in)`` on the path ``R_out / R_in = T / S`` within ``budget`` parameters.

    The path is ``(floor(a T), floor(a S))`` clamped to ``[1, full]`` for a growing scale ``a``;
    its breakpoints are ``a = i / T`` and ``a = j / S``. In units of ``1 / (T S)`` a breakpoint
    is the integer ``key``, and ``floor(a T) = key // S``, ``floor(a S) = key // T`` exactly.
    """
    t, s = geometry.out_channels, geometry.in_channels
    full_out, full_in = max_ranks(geometry, "tucker2")
    keys = np.unique(np.concatenate([np.arange(1, t + 1) * s, np.arange(1, s + 1) * t]))
    r_out = np.clip(keys // s, 1, full_out)
    r_in = np.clip(keys // t, 1, full_in)
    params = factorized_params(geometry, "tucker2", (r_out, r_in))  # non-decreasing along the path
    index = max(0, int(np.searchsorted(params, budget, side="right")) - 1)
    return int(r_out[index]), int(r_in[index])


def keeps_original(geometry: LayerGeometry, method: str, ranks: Ranks) -> bool:
    """Whether the factorization at ``ranks`` is no smaller than the layer (then the layer is kept as is).

    Full ranks always are: e.g. ``svd`` at ``r = min(T, S)`` has ``r (S + T) >= S T`` weights.
    """
    return factorized_params(geometry, method, ranks) >= full_params(geometry)


def layer_ranks(theta: float, geometry: LayerGeometry, method: str, scheme: str = "params") -> Ranks:
    """:func:`ranks_for_theta`, but the full ranks where the layer is to stay unchanged.

    The full ranks (:func:`max_ranks`) are returned for ``theta >= 1`` and wherever
    :func:`ranks_for_theta`'s ranks give a factorization no smaller than the layer
    (:func:`keeps_original`); a compressor builds them as the original layer, exactly.

    Args:
        theta: The layer's continuous parameter.
        geometry: The original layer's geometry.
        method: ``"svd"``, ``"tucker2"`` or ``"vh"``.
        scheme: ``"params"`` or ``"plain"``.
    """
    ranks = ranks_for_theta(theta, geometry, method, scheme)
    if theta >= 1.0 or keeps_original(geometry, method, ranks):
        return max_ranks(geometry, method)
    return ranks
def rank_breakpoints(geometry: LayerGeometry, method: str, scheme: str = "params") -> tuple[list[float], list[Ranks]]:
    """The ``theta`` values in ``(0, 1]`` at which :func:`ranks_for_theta` steps up, and the ranks there.

    ``ranks_for_theta`` is a step function of ``theta``: constant on ``[t_k, t_{k+1})`` (and at
    the first ranks below ``t_0``, at the last above ``t_K``). The breakpoints are

    - ``params`` scheme: ``t_k = factorized_params(ranks_k) / full_params`` for every rank
      (Tucker-2: every pair on its ``R_out / R_in = T / S`` path) whose count fits in the layer;
    - ``plain`` scheme: ``t_k = r / r_max`` per mode (Tucker-2: the union of both modes').

    Args:
        geometry: The original layer's geometry.
        method: ``"svd"``, ``"tucker2"`` or ``"vh"``.
        scheme: ``"params"`` or ``"plain"``.

    Returns:
        ``(thetas, ranks)``: ascending breakpoints (``K + 1`` floats, ``thetas[0]`` may exceed
        the box's lower bound) and ``ranks_for_theta(thetas[k])`` at each, all distinct.
    """
    full = max_ranks(geometry, method)
    if scheme == "plain":
        if method == "tucker2":
            keys = sorted({i / full[0] for i in range(1, full[0] + 1)} | {j / full[1] for j in range(1, full[1] + 1)})
        else:
            keys = [r / full for r in range(1, full + 1)]
        steps = [(float(t), ranks_for_theta(t, geometry, method, scheme)) for t in keys]
        steps = [step for k, step in enumerate(steps) if k == 0 or step[1] != steps[k - 1][1]]  # first theta of each
        thetas, ranks = [t for t, _ in steps], [r for _, r in steps]
    elif scheme == "params":
        size = full_params(geometry)
        if method == "tucker2":
            t, s = geometry.out_channels, geometry.in_channels
            keys = np.unique(np.concatenate([np.arange(1, t + 1) * s, np.arange(1, s + 1) * t]))
            r_out, r_in = np.clip(keys // s, 1, full[0]), np.clip(keys // t, 1, full[1])
            counts = factorized_params(geometry, method, (r_out, r_in))  # non-decreasing
            pairs = list(zip(r_out.tolist(), r_in.tolist()))
        else:
            counts = np.arange(1, full + 1) * (factorized_params(geometry, method, 1) - geometry.bias_params) + geometry.bias_params
            pairs = list(range(1, full + 1))
        # equal counts: ranks_for_theta keeps the last ranks of the path with that count
        last = len(counts) - 1 - np.unique(np.asarray(counts)[::-1], return_index=True)[1]
        keep = [int(i) for i in sorted(last) if counts[i] <= size] or [0]  # rank 1 always (clamped)
        thetas = [float(counts[i]) / size for i in keep]
        ranks = [pairs[i] for i in keep]
    else:
        raise ValueError(f"unknown rank scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    return thetas, ranks
