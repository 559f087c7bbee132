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
the layer's *output* energy on calibration inputs (``--warp activation``), the directions the
data does not excite counting for nothing. For a Linear layer ``W = U diag(s) V^T`` with inputs
``a``, ``||W_r a||^2 = sum_{i <= r} s_i^2 (v_i^T a)^2`` (``U`` has orthonormal columns), so
``E_data(r) = sum_{i <= r} s_i^2 q_i / sum_i s_i^2 q_i`` with ``q_i`` the summed
``(v_i^T a)^2``. A convolution's output at each position is its kernel, reshaped to
``T x (S kh kw)``, times the input patch there, so its energy is a quadratic form in the
patches' second moments ``C``: exact for every truncation from ``C`` alone, Tucker-2's by the
orthonormal factors' prefix sums, the vertical/horizontal split's by the overlaps of its
components (:func:`tucker2_output_energies`, :func:`vh_output_energies`).

:data:`SCALES` maps the name of each such warp to the function that tabulates it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from compressbo.compression.lowrank import LayerFactors, Ranks, SVDFactors, TuckerFactors, rank_knots
from compressbo.compression.lowrank.geometry import HW

__all__ = [
    "CALIBRATION_SIZE",
    "PATCH_POSITIONS",
    "SCALES",
    "activation_knots",
    "conv_patches",
    "layer_log_energies",
    "linear_output_energies",
    "prefix_energies",
    "spectral_knots",
    "tucker2_output_energies",
    "vh_output_energies",
]

CALIBRATION_SIZE = 1024  # validation inputs (never their labels) that measure the layers' output energy
PATCH_POSITIONS = 16  # output positions per calibration input whose patches a convolution's moments take

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
    """Energy fractions at the knots as non-decreasing logs at most 0: their running maximum
    (round-off, or on data a component that cancels part of the output, never lets them fall)."""
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


def activation_knots(
    compressor, inputs: Iterable[Tensor], positions: int = PATCH_POSITIONS
) -> tuple[list[list[float]], list[list[float]]]:
    """Every layer's log output energy fraction on ``inputs`` at its rank knots.

    One pass of ``inputs`` through the original network records each layer's inputs by a
    forward hook: a Linear layer's projections on its right singular vectors, a convolution's
    patch second moments (:func:`conv_patches`, at most ``positions`` output positions per
    input, a fixed seeded choice). The fractions are then exact functions of those moments
    (:func:`linear_output_energies`, :func:`tucker2_output_energies`, :func:`vh_output_energies`).

    Args:
        compressor: A :class:`~compressbo.compression.compressor.Compressor`.
        inputs: Batches of network inputs (no labels), on the network's device.
        positions: Output positions per input whose patches a convolution's moments take.

    Returns:
        ``(knots, values)`` as :func:`spectral_knots`, with ``E_data`` for ``E``.
    """
    recorders = [_RECORDERS[f.method](f, positions) for f in compressor.factors]
    handles = [
        f.layer.register_forward_hook(lambda module, args, output, record=r: record(args[0].detach()))
        for f, r in zip(compressor.factors, recorders)
    ]
    try:
        with torch.no_grad():
            for batch in inputs:
                compressor.network(batch)
    finally:
        for handle in handles:
            handle.remove()
    knots, values = [], []
    for factors, recorder in zip(compressor.factors, recorders):
        thetas, ranks = rank_knots(factors.geometry, factors.method, compressor.scheme)
        knots.append([float(t) for t in thetas])
        values.append(_log_fractions(factors.kept_fractions(ranks, recorder.fractions)))
    return knots, values


# -- the math: output energies from a layer's input moments ------------------------------------


def linear_output_energies(factors: SVDFactors, moments: Tensor, ranks: Sequence[int]) -> Tensor:
    r"""``E_data(r) = sum_{i <= r} s_i^2 q_i / sum_i s_i^2 q_i`` of a Linear layer's SVD.

    Args:
        factors: The thin SVD of the ``T x S`` weight (``k`` components).
        moments: ``q`` (``k``): the summed squares of the inputs' projections on the right
            singular vectors, ``sum_a (v_i^T a)^2``.
        ranks: Ranks ``1 <= r <= k``.

    Returns:
        ``len(ranks)`` float64 fractions (1 where the inputs give the layer no output energy).
    """
    kept = (factors.s.to(torch.float64).square() * moments.to(torch.float64)).cumsum(0)
    return _at(kept, [int(r) - 1 for r in ranks])


def prefix_energies(rows: Tensor, moments: Tensor) -> Tensor:
    r"""``E[o, m] = a_o[:m+1]^T C[:m+1, :m+1] a_o[:m+1]`` for every row ``a_o`` and prefix length.

    The energy of ``a_o^T p`` when only the first ``m + 1`` coordinates of the inputs ``p``
    (second moments ``C``) are kept, for every ``m`` at once: each coordinate adds
    ``2 a_om sum_{l < m} C_ml a_ol + a_om^2 C_mm``.

    Args:
        rows: ``A`` (``R x n``).
        moments: ``C`` (``n x n``), symmetric.

    Returns:
        ``E`` (``R x n``), cumulative along the second dimension.
    """
    below = rows @ moments.tril(-1).T  # (R, n): sum_{l < m} C_ml a_ol
    return (2 * rows * below + rows.square() * moments.diagonal()).cumsum(1)


def tucker2_output_energies(factors: TuckerFactors, moments: Tensor, ranks: Sequence[tuple[int, int]]) -> Tensor:
    r"""``E_data(R_out, R_in)`` of a Tucker-2 truncation from the layer's patch moments.

    With ``W = G x_0 U_out x_1 U_in``, the truncated layer's output on a patch ``p`` is, in the
    orthonormal basis ``U_out``, the first ``R_out`` rows of ``G[:, :R_in] p'`` with
    ``p' = (U_in^T (x) I) p`` the patch in ``U_in``'s channel basis. Its energy is
    :func:`prefix_energies` of the core's rows on the rotated moments ``C'``, summed over the
    first ``R_out`` rows, at the prefix of ``R_in`` channels.

    Args:
        factors: The HOSVD: core ``T' x S' x kh x kw``, ``U_in`` (``S x S'``).
        moments: ``C`` (``S kh kw x S kh kw``): the summed outer products of the layer's input
            patches, in :func:`conv_patches`' ``(s, i, j)`` order.
        ranks: ``(R_out, R_in)`` pairs within the core's size.

    Returns:
        ``len(ranks)`` float64 fractions.
    """
    core = factors.core.to(torch.float64)
    t, s, kh, kw = core.shape
    u_in = factors.in_factor.to(core)
    patch = moments.to(core).reshape(u_in.shape[0], kh * kw, u_in.shape[0], kh * kw)
    rotated = torch.einsum("ac,apbq,bd->cpdq", u_in, patch, u_in).reshape(s * kh * kw, s * kh * kw)
    per_channel = prefix_energies(core.reshape(t, -1), rotated)[:, kh * kw - 1 :: kh * kw]  # (T', S')
    kept = per_channel.cumsum(0)
    return _at(kept, [(int(r_out) - 1, int(r_in) - 1) for r_out, r_in in ranks])


def vh_output_energies(factors: SVDFactors, moments: Tensor, ranks: Sequence[int], kernel_size: HW) -> Tensor:
    r"""``E_data(K)`` of a vertical/horizontal truncation from the layer's patch moments.

    The rank-``K`` kernel is ``sum_{k <= K} s_k u_k v_k^T`` of :func:`~.lowrank.vh.vh_matrix`;
    component ``k`` maps a patch ``P`` (as an ``S kh x kw`` matrix) to
    ``y_t = sum_j v_k[(j, t)] (u_k^T P)_j``. So the energy is ``sum_{k, k' <= K} Q_kk'`` with
    ``Q_kk' = s_k s_k' sum_{j, j'} B_kk'(j, j') D_kk'(j, j')``, ``B`` the overlaps of the
    horizontal factors over output channels and ``D`` the moments of the vertical outputs
    ``(U^T (x) I) C (U (x) I)``; each component adds ``2 sum_{k < K} Q_Kk + Q_KK``.

    Args:
        factors: The thin SVD of the ``S kh x kw T`` matrix (``k`` components).
        moments: ``C`` (``S kh kw x S kh kw``), as for :func:`tucker2_output_energies`.
        ranks: Ranks ``1 <= K <= k``.
        kernel_size: ``(kh, kw)``.

    Returns:
        ``len(ranks)`` float64 fractions.
    """
    u, s, vh = (x.to(torch.float64) for x in (factors.u, factors.s, factors.vh))
    kw = kernel_size[1]
    k = s.numel()
    patch = moments.to(u).reshape(u.shape[0], kw, u.shape[0], kw)
    vertical = torch.einsum("ak,ajbl,bm->kjml", u, patch, u)  # (k, kw, k, kw)
    horizontal = vh.reshape(k, kw, -1)
    overlaps = torch.einsum("kjt,mlt->kjml", horizontal, horizontal)
    q = s[:, None] * s[None, :] * (overlaps * vertical).sum(dim=(1, 3))  # (k, k)
    kept = (2 * q.tril(-1).sum(1) + q.diagonal()).cumsum(0)
    return _at(kept, [int(r) - 1 for r in ranks])


def conv_patches(inputs: Tensor, conv: nn.Conv2d, positions: int | None = None, generator=None) -> Tensor:
    """The input patches ``conv`` takes its dot products with, zero or ``padding_mode`` padded.

    Args:
        inputs: ``N x S x H x W``.
        conv: The convolution (``groups == 1``); its stride, padding and dilation.
        positions: Output positions per input to take, drawn uniformly (with replacement) by
            ``generator``; all of them where there are no more (and by default).
        generator: A CPU ``torch.Generator`` for the positions.

    Returns:
        ``N x P x (S kh kw)`` (``P`` positions per input, row-major over the output), each patch
        in ``(s, i, j)`` order, as ``conv``'s kernel reshaped to ``T x (S kh kw)`` holds them.
    """
    (kh, kw), (dh, dw), (sh, sw) = conv.kernel_size, conv.dilation, conv.stride
    if isinstance(conv.padding, str):  # 'valid' or 'same' (stride 1): PyTorch puts the odd pixel last
        total_h, total_w = (0, 0) if conv.padding == "valid" else (dh * (kh - 1), dw * (kw - 1))
        pads = (total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2)
    else:
        pads = (conv.padding[1], conv.padding[1], conv.padding[0], conv.padding[0])
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    padded = nn.functional.pad(inputs, pads, mode=mode) if any(pads) else inputs
    n, _, height, width = padded.shape
    out_h, out_w = (height - dh * (kh - 1) - 1) // sh + 1, (width - dw * (kw - 1) - 1) // sw + 1
    if positions is None or positions >= out_h * out_w:
        flat = torch.arange(out_h * out_w).expand(n, -1)
    else:
        flat = torch.randint(out_h * out_w, (n, positions), generator=generator)
    flat = flat.to(padded.device)
    rows = (flat // out_w * sh)[..., None] + torch.arange(kh, device=padded.device) * dh  # (N, P, kh)
    cols = (flat % out_w * sw)[..., None] + torch.arange(kw, device=padded.device) * dw  # (N, P, kw)
    batch = torch.arange(n, device=padded.device)[:, None, None, None]
    patches = padded.permute(0, 2, 3, 1)[batch, rows[..., None], cols[:, :, None, :]]  # (N, P, kh, kw, S)
    return patches.permute(0, 1, 4, 2, 3).reshape(n, flat.shape[1], -1)


def _at(kept: Tensor, index: list) -> Tensor:
    """``kept[index] / kept[-1...]``: cumulative energies as fractions of the full layer's (1 if zero)."""
    total = kept.reshape(-1)[-1]
    if total <= 0:
        return torch.ones(len(index), dtype=torch.float64)
    picked = torch.stack([kept[i] for i in index]) if index else kept.new_zeros(0)
    return (picked / total).to(torch.float64)


# -- the recorders the forward hooks feed -------------------------------------------------------


class _LinearRecorder:
    """``q``: a Linear layer's inputs projected on its right singular vectors, squared and summed."""

    def __init__(self, factors: LayerFactors, positions: int) -> None:
        self.factors = factors
        self.moments = torch.zeros_like(factors.factors.s, dtype=torch.float64)

    def __call__(self, inputs: Tensor) -> None:
        a = inputs.reshape(-1, inputs.shape[-1]).to(torch.float64)
        vh = self.factors.factors.vh.to(a)
        self.moments += (a @ vh.T).square().sum(0).to(self.moments)

    def fractions(self, ranks: list[Ranks]) -> Tensor:
        return linear_output_energies(self.factors.factors, self.moments, ranks)


class _PatchRecorder:
    """``C``: a convolution's input patches' summed outer products, at most ``positions`` per input."""

    def __init__(self, factors: LayerFactors, positions: int) -> None:
        self.factors, self.positions = factors, positions
        self.moments: Tensor | None = None  # on the inputs' device, float64
        self.generator = torch.Generator().manual_seed(0)  # the same positions on every pass

    def __call__(self, inputs: Tensor) -> None:
        p = conv_patches(inputs, self.factors.layer, self.positions, self.generator).flatten(0, 1).float()
        outer = (p.T @ p).double()  # one product per batch in float32, summed in float64
        self.moments = outer if self.moments is None else self.moments + outer

    @property
    def second_moments(self) -> Tensor:
        """``C`` on the CPU (zeros before any input)."""
        size = self.factors.layer.weight[0].numel()
        return torch.zeros(size, size, dtype=torch.float64) if self.moments is None else self.moments.cpu()


class _Tucker2Recorder(_PatchRecorder):
    def fractions(self, ranks: list[Ranks]) -> Tensor:
        return tucker2_output_energies(self.factors.factors, self.second_moments, ranks)


class _VHRecorder(_PatchRecorder):
    def fractions(self, ranks: list[Ranks]) -> Tensor:
        return vh_output_energies(self.factors.factors, self.second_moments, ranks, self.factors.geometry.kernel_size)


# method -> what its layer's forward hook records, and the fractions from it
_RECORDERS: dict[str, type] = {"svd": _LinearRecorder, "tucker2": _Tucker2Recorder, "vh": _VHRecorder}


# name of the warp -> its knots from a compressor and a source of calibration batches
SCALES: dict[str, Callable[..., tuple[list[list[float]], list[list[float]]]]] = {
    "spectral": lambda compressor, calibration: spectral_knots(compressor),
    "activation": lambda compressor, calibration: activation_knots(compressor, calibration()),  # lazy batches
}
