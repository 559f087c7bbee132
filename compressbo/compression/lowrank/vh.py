"""``Conv2d -> vertical/horizontal`` (Tai et al. 2016): ``kh x 1 (S -> K)`` then ``1 x kw (K -> T)``.

The kernel ``W`` (``T x S x kh x kw``) reshaped to the ``(S kh) x (kw T)`` matrix
``M[(s, i), (j, t)] = W[t, s, i, j]`` is factorized by SVD; its best rank-``K`` approximation
is the best kernel of this separable structure.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._params import set_parameters
from .geometry import HW, LayerGeometry
from .svd import SVDFactorization, SVDFactors, svd_factors

__all__ = ["VH", "VHFactorization", "build_vh", "vh_factors", "vh_kernels", "vh_matrix", "vh_module"]


def vh_matrix(kernel: Tensor) -> Tensor:
    """Reshape a ``T x S x kh x kw`` kernel to the ``(S kh) x (kw T)`` matrix of Tai et al."""
    t, s, kh, kw = kernel.shape
    return kernel.permute(1, 2, 3, 0).reshape(s * kh, kw * t)


def vh_factors(kernel: Tensor) -> SVDFactors:
    """Thin SVD of :func:`vh_matrix` (computed once per layer)."""
    return svd_factors(vh_matrix(kernel))


def vh_kernels(factors: SVDFactors, rank: int, kernel_shape: torch.Size) -> tuple[Tensor, Tensor]:
    """Vertical (``K x S x kh x 1``) and horizontal (``T x K x 1 x kw``) kernels at rank ``K``."""
    t, s, kh, kw = kernel_shape
    left, right = factors.split(rank)  # (S kh) x K, K x (kw T)
    vertical = left.T.reshape(rank, s, kh, 1)
    horizontal = right.reshape(rank, kw, t).permute(2, 0, 1).reshape(t, rank, 1, kw)
    return vertical, horizontal


def vh_module(conv: nn.Conv2d, rank: int, device: torch.device | str | None = None) -> nn.Sequential:
    """The vertical/horizontal replacement's structure for ``conv`` at rank ``K``.

    Stride, padding and dilation are split per axis: the vertical ``kh x 1`` convolution
    takes the height ones, the horizontal ``1 x kw`` convolution the width ones.
    """
    (sh, sw), (dh, dw) = conv.stride, conv.dilation
    if isinstance(conv.padding, str):
        pad_v = pad_h = conv.padding
    else:
        pad_v, pad_h = (conv.padding[0], 0), (0, conv.padding[1])
    factory = {"device": device if device is not None else conv.weight.device, "dtype": conv.weight.dtype}
    common = {"padding_mode": conv.padding_mode, **factory}
    return nn.Sequential(
        nn.Conv2d(
            conv.in_channels, rank, (conv.kernel_size[0], 1), stride=(sh, 1), padding=pad_v,
            dilation=(dh, 1), bias=False, **common,
        ),
        nn.Conv2d(
            rank, conv.out_channels, (1, conv.kernel_size[1]), stride=(1, sw), padding=pad_h,
            dilation=(1, dw), bias=conv.bias is not None, **common,
        ),
    )


def build_vh(conv: nn.Conv2d, factors: SVDFactors, rank: int) -> nn.Sequential:
    """Vertical/horizontal replacement of ``conv`` at rank ``K`` from its cached SVD."""
    module = vh_module(conv, rank, device="meta")
    vertical, horizontal = vh_kernels(factors, rank, conv.weight.shape)
    like = {"device": conv.weight.device, "dtype": conv.weight.dtype}
    set_parameters(module[0], vertical.to(**like))
    set_parameters(module[1], horizontal.to(**like), conv.bias)
    return module


class VHFactorization(SVDFactorization):
    """``vh``: a Conv2d kernel as a rank-``K`` product of its ``(S kh) x (kw T)`` matrix (:func:`vh_matrix`).

    Full rank ``min(S kh, kw T)``, ``K (S kh + T kw)`` weights.
    """

    name = "vh"
    layer_type = nn.Conv2d

    def matrix_shape(self, geometry: LayerGeometry) -> tuple[int, int]:
        """``(S kh, kw T)``: the shape of :func:`vh_matrix`."""
        kh, kw = geometry.kernel_size
        return geometry.in_channels * kh, kw * geometry.out_channels

    def macs(self, geometry: LayerGeometry, ranks: int, in_hw: HW, out_hw: HW) -> int:
        """The vertical ``kh x 1`` convolution keeps the input width; the horizontal ``1 x kw`` one gives the output."""
        kh, kw = geometry.kernel_size
        vertical = out_hw[0] * in_hw[1] * geometry.in_channels * ranks * kh
        return vertical + out_hw[0] * out_hw[1] * ranks * geometry.out_channels * kw

    def decompose(self, weight: Tensor) -> SVDFactors:
        return vh_factors(weight)

    def build(self, layer: nn.Module, factors: SVDFactors, ranks: int) -> nn.Sequential:
        return build_vh(layer, factors, ranks)

    def empty(self, layer: nn.Module, ranks: int, device: torch.device | str | None = None) -> nn.Sequential:
        return vh_module(layer, ranks, device)


VH = VHFactorization()
