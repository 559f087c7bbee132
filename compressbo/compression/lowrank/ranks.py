"""Continuous rank scaling: parameter and FLOP counts, and ``theta -> ranks``.

Every compressible layer is described by its :class:`~.geometry.LayerGeometry`; what differs
between methods comes from its :class:`~.factorization.Factorization` in the registry
(:func:`~.registry.factorization`). Ranks are an ``int`` for ``"svd"`` and ``"vh"`` and a
pair ``(R_out, R_in)`` for ``"tucker2"``.

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
from collections.abc import Callable
from typing import Literal

import numpy as np

from compressbo.exceptions import SettingError

from .geometry import HW, LayerGeometry, Ranks, full_macs, full_params
from .registry import METHODS, check_method, factorization

__all__ = [
    "METHODS",
    "SCHEMES",
    "LayerGeometry",
    "Ranks",
    "check_method",
    "check_scheme",
    "factorized_macs",
    "factorized_params",
    "full_macs",
    "full_params",
    "keeps_original",
    "layer_ranks",
    "max_ranks",
    "rank_breakpoints",
    "rank_knots",
    "ranks_for_theta",
]

Method = Literal["svd", "tucker2", "vh"]
Scheme = Literal["params", "plain"]

SCHEMES: tuple[str, ...] = ("params", "plain")


def _unknown_scheme(scheme: object) -> str:
    return f"unknown rank scheme {scheme!r}; choose one of {', '.join(SCHEMES)}"


def check_scheme(scheme: str) -> str:
    """``scheme`` if it is a known rank scheme, else :class:`SettingError` naming them."""
    if scheme not in SCHEMES:
        raise SettingError(_unknown_scheme(scheme), setting="scheme")
    return scheme


def max_ranks(geometry: LayerGeometry, method: str) -> Ranks:
    """Full rank(s) of a layer's factorization.

    ``svd``: ``min(T, S)``; ``vh``: ``min(S * kh, kw * T)`` (rank of the reshaped kernel);
    ``tucker2``: ``(min(T, S * kh * kw), min(S, T * kh * kw))`` (ranks of the two unfoldings).
    """
    return factorization(method).max_ranks(geometry)


def factorized_params(geometry: LayerGeometry, method: str, ranks: Ranks) -> int:
    """Parameters of the factorized layer at ``ranks`` (bias included).

    ``svd``: ``r * (S + T)``; ``vh``: ``K * (S * kh + T * kw)``;
    ``tucker2``: ``S * R_in + R_in * R_out * kh * kw + R_out * T``.
    """
    return factorization(method).params(geometry, ranks)


def factorized_macs(geometry: LayerGeometry, method: str, ranks: Ranks, in_hw: HW, out_hw: HW) -> int:
    """Multiply-accumulates of the factorized layer for one input.

    Args:
        geometry: The original layer's geometry.
        method: ``"svd"``, ``"tucker2"`` or ``"vh"``.
        ranks: The factorization's ranks.
        in_hw: Spatial size ``(H_in, W_in)`` of the layer's input (``(positions, 1)`` for Linear).
        out_hw: Spatial size ``(H_out, W_out)`` of its output.
    """
    return factorization(method).macs(geometry, ranks, in_hw, out_hw)


def _plain_rank(theta: float) -> Callable[[int], int]:
    """``r_max -> max(1, floor(theta * r_max))`` clamped to ``r_max``: the ``plain`` scheme per mode."""
    return lambda full: max(1, min(full, math.floor(theta * full + 1e-9)))


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
    method_ = factorization(method)
    full = method_.max_ranks(geometry)
    if scheme == "plain":
        ranks = method_.useful_ranks(geometry, method_.per_mode(full, _plain_rank(theta)))
        return tuple(int(r) for r in ranks) if isinstance(ranks, tuple) else int(ranks)
    if scheme != "params":
        raise ValueError(_unknown_scheme(scheme))
    # theta exactly at a rank's own ratio keeps that rank despite round-off in theta * params
    return method_.ranks_within(geometry, theta * full_params(geometry) * (1 + 1e-12))


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
    method_ = factorization(method)
    if scheme == "plain":
        keys = sorted({r / full for full in method_.modes(method_.max_ranks(geometry)) for r in range(1, full + 1)})
        steps = [(float(t), ranks_for_theta(t, geometry, method, scheme)) for t in keys]
        steps = [step for k, step in enumerate(steps) if k == 0 or step[1] != steps[k - 1][1]]  # first theta of each
        return [t for t, _ in steps], [r for _, r in steps]
    if scheme != "params":
        raise ValueError(_unknown_scheme(scheme))
    size = full_params(geometry)
    counts, path = method_.rank_path(geometry)
    # equal counts: ranks_for_theta keeps the last ranks of the path with that count
    last = len(counts) - 1 - np.unique(np.asarray(counts)[::-1], return_index=True)[1]
    keep = [int(i) for i in sorted(last) if counts[i] <= size] or [0]  # rank 1 always (clamped)
    return [float(counts[i]) / size for i in keep], [path[i] for i in keep]


def rank_knots(geometry: LayerGeometry, method: str, scheme: str = "params") -> tuple[list[float], list[Ranks]]:
    """:func:`rank_breakpoints` and ``theta = 1``, where the layer is kept (:func:`layer_ranks`).

    The knots of every function of a layer's ranks that is interpolated in ``theta`` (the
    relaxed cost, the GP's spectral scale): ``(thetas, ranks)``, the last ``theta`` 1 with the
    layer's full ranks.
    """
    thetas, ranks = rank_breakpoints(geometry, method, scheme)
    if thetas[-1] < 1.0:
        thetas, ranks = [*thetas, 1.0], [*ranks, max_ranks(geometry, method)]
    return thetas, ranks
