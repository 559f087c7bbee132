r"""How much of each layer a truncation keeps: the known scales of ``theta`` the GP can start from.

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

:func:`activation_knots` measures the same on the data instead of the weight: the fraction of
the layer's *output* energy on calibration inputs (``--warp activation``). For a Linear layer
``W = U diag(s) V^T`` with inputs ``a``, ``||W_r a||^2 = sum_{i <= r} s_i^2 (v_i^T a)^2`` (``U``
has orthonormal columns), so ``E_data(r) = sum_{i <= r} s_i^2 q_i / sum_i s_i^2 q_i`` with
``q_i`` the mean of ``(v_i^T a)^2`` over the calibration inputs: the directions the data does not
excite count for nothing. Only SVD layers (for a convolution the components' outputs overlap
in space and the sum no longer splits).

:data:`SCALES` maps the name of each such warp to the function that tabulates it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from compressbo.compression.lowrank import LayerFactors, Ranks, rank_knots
from compressbo.exceptions import SettingError

__all__ = ["CALIBRATION_SIZE", "SCALES", "activation_knots", "layer_log_energies", "spectral_knots"]

CALIBRATION_SIZE = 1024  # validation inputs (never their labels) that measure the layers' output energy

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
    return [float(t) for t in thetas], _log_fractions(factors.energies(ranks))


def _log_fractions(energies: Tensor) -> list[float]:
    """Energy fractions at the knots as non-decreasing logs at most 0 (round-off never lets them fall)."""
    return [min(float(v), 0.0) for v in energies.clamp_min(_FLOOR).log().cummax(0).values]


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


def activation_knots(compressor, inputs: Iterable[Tensor]) -> tuple[list[list[float]], list[list[float]]]:
    """Every layer's log output energy fraction on ``inputs`` at its rank knots (SVD layers only).

    Args:
        compressor: A :class:`~compressbo.compression.compressor.Compressor` whose layers are
            all factorized by SVD.
        inputs: Batches of network inputs (no labels), on the network's device.

    Returns:
        ``(knots, values)`` as :func:`spectral_knots`, with ``E_data`` for ``E``.

    Raises:
        SettingError: A layer is not factorized by SVD.
    """
    for name, factors in zip(compressor.layer_names, compressor.factors):
        if factors.method != "svd":
            raise SettingError(
                f"warp 'activation' measures the output energy of SVD layers only, but layer {name!r} is "
                f"{factors.method}; use warp 'spectral'",
                setting="warp",
            )
    moments = [torch.zeros_like(f.factors.s, dtype=torch.float64) for f in compressor.factors]

    def record(index: int) -> Callable:
        def hook(module, args, output) -> None:
            a = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
            vh = compressor.factors[index].factors.vh.to(a)
            moments[index] += (a @ vh.T).square().sum(0).to(moments[index])
        return hook

    handles = [f.layer.register_forward_hook(record(k)) for k, f in enumerate(compressor.factors)]
    try:
        with torch.no_grad():
            for batch in inputs:
                compressor.network(batch)
    finally:
        for handle in handles:
            handle.remove()
    knots, values = [], []
    for factors, q in zip(compressor.factors, moments):
        thetas, ranks = rank_knots(factors.geometry, factors.method, compressor.scheme)
        knots.append([float(t) for t in thetas])
        values.append(_log_fractions(_output_fractions(factors, q, ranks)))
    return knots, values


def _output_fractions(factors: LayerFactors, q: Tensor, ranks: list[Ranks]) -> Tensor:
    """``E_data`` at each of ``ranks`` (1 where the layer is kept) from the projected moments ``q``."""
    kept = (factors.factors.s.to(torch.float64).square() * q).cumsum(0)
    total = kept[-1]
    return torch.tensor(
        [1.0 if factors.keeps_original(r) or total <= 0 else float(kept[int(r) - 1] / total) for r in ranks],
        dtype=torch.float64,
    )


# name of the warp -> its knots from a compressor and a source of calibration batches
SCALES: dict[str, Callable[..., tuple[list[list[float]], list[list[float]]]]] = {
    "spectral": lambda compressor, calibration: spectral_knots(compressor),
    "activation": lambda compressor, calibration: activation_knots(compressor, calibration()),  # lazy batches
}
