"""``Conv2d -> Tucker-2`` (Kim et al. 2016): ``1x1 (S -> R_in)``, ``kh x kw (R_in -> R_out)``, ``1x1 (R_out -> T)``.

The kernel ``W`` (``T x S x kh x kw``) is decomposed once along its two channel modes by a
higher-order SVD with tensorly: ``W = G x_0 U_out x_1 U_in`` with orthonormal ``U_out``
(``T x T'``), ``U_in`` (``S x S'``) and a full core ``G`` (``T' x S' x kh x kw``). Because the
factors are orthonormal, the truncated core for ranks ``(R_out, R_in)`` is the block
``G[:R_out, :R_in]``, so building any ranks is slicing, no decomposition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorly as tl
import torch
from tensorly.decomposition import partial_tucker
from tensorly.tenalg import multi_mode_dot
from tensorly.tenalg.svd import svd_interface
from torch import Tensor, nn

from ._params import compute_dtype, set_parameters
from .factorization import Factorization
from .geometry import HW, LayerGeometry

__all__ = [
    "HOOI_ITERATIONS",
    "TUCKER2",
    "Tucker2Factorization",
    "TuckerFactors",
    "build_tucker2",
    "refine_tucker2",
    "tucker2_factors",
    "tucker2_module",
]

HOOI_ITERATIONS = 10  # alternating sweeps of the final refinement (tensorly stops earlier on convergence)


@dataclass(frozen=True)
class TuckerFactors:
    """Higher-order SVD of a kernel along its output and input channel modes.

    Attributes:
        core: ``T' x S' x kh x kw`` core, ``T' = min(T, S kh kw)``, ``S' = min(S, T kh kw)``.
        out_factor: ``T x T'`` orthonormal columns (leading left singular vectors of mode 0).
        in_factor: ``S x S'`` orthonormal columns (mode 1).
    """

    core: Tensor
    out_factor: Tensor
    in_factor: Tensor

    def truncate(self, ranks: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        """``(core R_out x R_in x kh x kw, out_factor T x R_out, in_factor S x R_in)``."""
        r_out, r_in = ranks
        return self.core[:r_out, :r_in], self.out_factor[:, :r_out], self.in_factor[:, :r_in]

    def reconstruct(self, ranks: tuple[int, int]) -> Tensor:
        """The kernel ``G_r x_0 U_out,r x_1 U_in,r`` (``T x S x kh x kw``)."""
        core, out_factor, in_factor = self.truncate(ranks)
        return torch.einsum("ab...,ta,sb->ts...", core, out_factor, in_factor)

    def energies(self, ranks: Sequence[tuple[int, int]]) -> Tensor:
        r"""The fraction of ``||W||_F^2`` each truncation keeps: ``||G[:R_out, :R_in]||_F^2 / ||G||_F^2``.

        The factors are orthonormal and the core is full, so ``||G||_F = ||W||_F`` and the
        truncated kernel's energy is its core block's.

        Args:
            ranks: ``(R_out, R_in)`` pairs, each at least 1 and at most the core's size.

        Returns:
            A float64 tensor of ``len(ranks)`` values in ``[0, 1]`` (all 1 for a zero kernel).
        """
        kept = self.core.to(torch.float64).square().sum(dim=(2, 3)).cumsum(0).cumsum(1)
        total = kept[-1, -1]
        rows = torch.tensor([int(r_out) - 1 for r_out, _ in ranks], dtype=torch.long)
        cols = torch.tensor([int(r_in) - 1 for _, r_in in ranks], dtype=torch.long)
        return kept[rows, cols] / total if total > 0 else torch.ones(len(rows), dtype=torch.float64)

    def state(self) -> dict[str, Tensor]:
        return {"core": self.core, "out_factor": self.out_factor, "in_factor": self.in_factor}

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> TuckerFactors:
        return cls(state["core"], state["out_factor"], state["in_factor"])


def tucker2_factors(kernel: Tensor) -> TuckerFactors:
    """HOSVD of a ``T x S x kh x kw`` kernel along modes 0 and 1 (tensorly, full ranks).

    Truncating it gives the HOSVD at any ranks, the usual initialization of tensorly's
    ``partial_tucker`` (HOOI), which refines it by alternating updates.
    """
    weight = kernel.detach().to(compute_dtype(kernel))
    full_out, full_in = TUCKER2.max_ranks(LayerGeometry(*weight.shape[:2], tuple(weight.shape[2:])))
    with tl.backend_context("pytorch"):
        out_factor, _, _ = svd_interface(tl.unfold(weight, 0), n_eigenvecs=full_out)
        in_factor, _, _ = svd_interface(tl.unfold(weight, 1), n_eigenvecs=full_in)
        core = multi_mode_dot(weight, [out_factor, in_factor], modes=[0, 1], transpose=True)
    return TuckerFactors(core.contiguous(), out_factor.contiguous(), in_factor.contiguous())


def refine_tucker2(
    kernel: Tensor, factors: TuckerFactors, ranks: tuple[int, int], n_iter_max: int = HOOI_ITERATIONS
) -> TuckerFactors:
    """HOOI (tensorly's ``partial_tucker``) at ``ranks``, started from the truncated HOSVD.

    Each sweep re-fits one channel factor to the kernel projected on the other, so the
    reconstruction error never exceeds the truncated HOSVD's. Too slow for the search loop
    (seconds per network); meant for the final model.

    Args:
        kernel: The ``T x S x kh x kw`` kernel.
        factors: Its cached HOSVD (:func:`tucker2_factors`).
        ranks: ``(R_out, R_in)``.
        n_iter_max: Most alternating sweeps.

    Returns:
        Factors at exactly ``ranks``: ``core`` ``R_out x R_in x kh x kw``, ``out_factor``
        ``T x R_out``, ``in_factor`` ``S x R_in`` (truncating them to ``ranks`` is a no-op).
    """
    weight = kernel.detach().to(compute_dtype(kernel))
    core, out_factor, in_factor = (t.to(weight) for t in factors.truncate(ranks))
    with tl.backend_context("pytorch"):
        (core, (out_factor, in_factor)), _ = partial_tucker(
            weight, rank=list(ranks), modes=[0, 1], init=(core, [out_factor, in_factor]), n_iter_max=n_iter_max
        )
    return TuckerFactors(core.contiguous(), out_factor.contiguous(), in_factor.contiguous())


def tucker2_module(
    conv: nn.Conv2d, ranks: tuple[int, int], device: torch.device | str | None = None
) -> nn.Sequential:
    """The Tucker-2 replacement's structure for ``conv`` at ``(R_out, R_in)``.

    The middle convolution keeps ``conv``'s kernel size, stride, padding, dilation and padding
    mode (the 1x1 convolutions around it are pointwise, so they commute with any padding).
    """
    r_out, r_in = ranks
    factory = {"device": device if device is not None else conv.weight.device, "dtype": conv.weight.dtype}
    return nn.Sequential(
        nn.Conv2d(conv.in_channels, r_in, 1, bias=False, **factory),
        nn.Conv2d(
            r_in,
            r_out,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            padding_mode=conv.padding_mode,
            bias=False,
            **factory,
        ),
        nn.Conv2d(r_out, conv.out_channels, 1, bias=conv.bias is not None, **factory),
    )


def build_tucker2(conv: nn.Conv2d, factors: TuckerFactors, ranks: tuple[int, int]) -> nn.Sequential:
    """Tucker-2 replacement of ``conv`` at ``(R_out, R_in)`` from its cached HOSVD."""
    module = tucker2_module(conv, ranks, device="meta")
    core, out_factor, in_factor = factors.truncate(ranks)
    like = {"device": conv.weight.device, "dtype": conv.weight.dtype}
    set_parameters(module[0], in_factor.T[:, :, None, None].to(**like))
    set_parameters(module[1], core.to(**like))
    set_parameters(module[2], out_factor[:, :, None, None].to(**like), conv.bias)
    return module


class Tucker2Factorization(Factorization):
    """``tucker2``: a Conv2d kernel by its HOSVD along the two channel modes, ranks ``(R_out, R_in)``.

    Full ranks ``(min(T, S kh kw), min(S, T kh kw))`` (the ranks of the two unfoldings);
    ``S R_in + R_in R_out kh kw + R_out T`` weights. The ``params`` scheme moves along
    ``R_out / R_in = T / S``; HOOI (:func:`refine_tucker2`) refines the truncated HOSVD.
    """

    name = "tucker2"
    layer_type = nn.Conv2d
    rank_names = ("R_out", "R_in")
    refinable = True

    def max_ranks(self, geometry: LayerGeometry) -> tuple[int, int]:
        g = geometry
        return (
            min(g.out_channels, g.in_channels * g.kernel_area),
            min(g.in_channels, g.out_channels * g.kernel_area),
        )

    def weight_params(self, geometry: LayerGeometry, ranks):
        r_out, r_in = ranks
        g = geometry
        return g.in_channels * r_in + r_in * r_out * g.kernel_area + r_out * g.out_channels

    def macs(self, geometry: LayerGeometry, ranks: tuple[int, int], in_hw: HW, out_hw: HW) -> int:
        """The first 1x1 convolution runs at the input's positions, the other two at the output's."""
        g = geometry
        r_out, r_in = ranks
        n_in, n_out = in_hw[0] * in_hw[1], out_hw[0] * out_hw[1]
        return n_in * g.in_channels * r_in + n_out * (r_in * r_out * g.kernel_area + r_out * g.out_channels)

    def rank_path(self, geometry: LayerGeometry) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """``(floor(a T), floor(a S))`` clamped to ``[1, full]`` for a growing scale ``a``, each rank
        raised to at least ``ceil(other / (kh kw))`` so that neither exceeds :meth:`useful_ranks`.

        Its breakpoints are ``a = i / T`` and ``a = j / S``. In units of ``1 / (T S)`` a
        breakpoint is the integer ``key``, and ``floor(a T) = key // S``, ``floor(a S) = key // T``
        exactly. Parameter counts are non-decreasing along the path.
        """
        t, s = geometry.out_channels, geometry.in_channels
        full_out, full_in = self.max_ranks(geometry)
        keys = np.unique(np.concatenate([np.arange(1, t + 1) * s, np.arange(1, s + 1) * t]))
        r_out, r_in = np.clip(keys // s, 1, full_out), np.clip(keys // t, 1, full_in)
        # where T / S is far from 1 one rank outgrows what the other lets the core use; the
        # other rank rises to match (ceil(R / kh kw)), so no rank on the path is wasted
        area = geometry.kernel_area
        r_out, r_in = (
            np.minimum(full_out, np.maximum(r_out, -(-r_in // area))),
            np.minimum(full_in, np.maximum(r_in, -(-r_out // area))),
        )
        return self.params(geometry, (r_out, r_in)), list(zip(r_out.tolist(), r_in.tolist()))

    def useful_ranks(self, geometry: LayerGeometry, ranks):
        """``(min(R_out, R_in kh kw), min(R_in, R_out kh kw))``: the core's unfoldings bound each rank.

        The core ``(R_out, R_in, kh, kw)`` has mode-1 unfolding ``R_out x R_in kh kw``, so an output
        rank above ``R_in kh kw`` (e.g. ``(22, 1)`` on a 3-channel input) adds weights and no
        expressiveness, and HOOI cannot fill it. Both bounds are non-decreasing in both ranks, so
        a non-decreasing path stays non-decreasing.
        """
        r_out, r_in = ranks
        area = geometry.kernel_area
        return np.minimum(r_out, r_in * area), np.minimum(r_in, r_out * area)

    def ranks_within(self, geometry: LayerGeometry, budget: float) -> tuple[int, int]:
        counts, ranks = self.rank_path(geometry)
        return ranks[max(0, int(np.searchsorted(counts, budget, side="right")) - 1)]

    def decompose(self, weight: Tensor) -> TuckerFactors:
        return tucker2_factors(weight)

    def factors_from_state(self, state: dict[str, Tensor]) -> TuckerFactors:
        return TuckerFactors.from_state(state)

    def factor_shapes(self, geometry: LayerGeometry) -> dict[str, tuple[int, ...]]:
        """``core (R_out, R_in, kh, kw)``, ``out_factor (T, R_out)``, ``in_factor (S, R_in)`` at full ranks."""
        r_out, r_in = self.max_ranks(geometry)
        return {
            "core": (r_out, r_in, *geometry.kernel_size),
            "out_factor": (geometry.out_channels, r_out),
            "in_factor": (geometry.in_channels, r_in),
        }

    def build(self, layer: nn.Module, factors: TuckerFactors, ranks: tuple[int, int]) -> nn.Sequential:
        return build_tucker2(layer, factors, ranks)

    def empty(self, layer: nn.Module, ranks: tuple[int, int], device: torch.device | str | None = None) -> nn.Sequential:
        return tucker2_module(layer, ranks, device)

    def refine(self, weight: Tensor, factors: TuckerFactors, ranks: tuple[int, int]) -> TuckerFactors:
        """HOOI at ``ranks`` from the truncated HOSVD (:func:`refine_tucker2`)."""
        return refine_tucker2(weight, factors, ranks)


TUCKER2 = Tucker2Factorization()
