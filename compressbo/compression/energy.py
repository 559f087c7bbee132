r"""How much of each layer's weight a truncation keeps: the spectral scale of ``theta``.

A layer factorized at ranks ``r`` keeps the fraction ``E(r) = ||W_r||_F^2 / ||W||_F^2`` of
its weight's energy: ``sum_{i <= r} s_i^2 / sum_i s_i^2`` for SVD and the vertical/horizontal
split (the singular values of the layer's matrix or of its reshaped kernel), the core block's
share ``||G[:R_out, :R_in]||_F^2 / ||G||_F^2`` for Tucker-2 (orthonormal factors, full core),
1 where the layer is kept. :func:`spectral_knots` tabulates ``log E`` at each layer's rank
knots (:func:`~compressbo.compression.lowrank.rank_knots`): plain numbers, which the BO side
interpolates in ``theta`` as the GP's known input scale (``--warp spectral``,
``compressbo.bo.models.warping.KnownScale``). Where a layer's spectrum decays, its error cliff
(the ranks below which the network breaks) spans a large part of that scale however low in
``theta`` it lies.
"""

from __future__ import annotations

from compressbo.compression.lowrank import LayerFactors, rank_knots

__all__ = ["layer_log_energies", "spectral_knots"]

_FLOOR = 1e-300  # a zero fraction (a layer of zeros' first ranks) stays finite on the log scale


def layer_log_energies(factors: LayerFactors, scheme: str = "params") -> tuple[list[float], list[float]]:
    """One layer's ``(thetas, log E(ranks(theta)))`` at its rank knots.

    Args:
        factors: The layer's decomposition.
        scheme: The compressor's rank scheme (``params`` or ``plain``).

    Returns:
        Ascending ``theta`` knots, the last 1 (the layer kept, ``log E = 0``), and the
        non-decreasing log energy fractions there.
    """
    thetas, ranks = rank_knots(factors.geometry, factors.method, scheme)
    energies = factors.energies(ranks).clamp_min(_FLOOR).log().cummax(0).values  # round-off: never falls
    return [float(t) for t in thetas], [min(float(v), 0.0) for v in energies]


def spectral_knots(compressor) -> tuple[list[list[float]], list[list[float]]]:
    """Every compressible layer's :func:`layer_log_energies`, in the spec's order.

    Args:
        compressor: A :class:`~compressbo.compression.compressor.Compressor`.

    Returns:
        ``(knots, values)``: per layer, its ``theta`` knots and log energy fractions.

    Example:
        >>> knots, values = spectral_knots(compressor)
        >>> values[0][-1]  # theta = 1 keeps the layer: all of its energy
        0.0
    """
    pairs = [layer_log_energies(factors, compressor.scheme) for factors in compressor.factors]
    return [thetas for thetas, _ in pairs], [values for _, values in pairs]
