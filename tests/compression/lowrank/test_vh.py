from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compressbo.compression.lowrank import LayerGeometry, factorize_conv, max_ranks, vh_factors
from compressbo.compression.lowrank.vh import vh_kernels, vh_matrix


def _reconstructed_kernel(kernel: torch.Tensor, rank: int) -> torch.Tensor:
    """Best rank-K kernel of the vertical/horizontal structure, from an independent SVD."""
    t, s, kh, kw = kernel.shape
    u, sigma, vh = torch.linalg.svd(vh_matrix(kernel), full_matrices=False)
    matrix = u[:, :rank] @ torch.diag(sigma[:rank]) @ vh[:rank]  # (S kh) x (kw T)
    return matrix.reshape(s, kh, kw, t).permute(3, 0, 1, 2)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_vh_equals_conv_with_reconstructed_kernel(stride: int, bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 7, (3, 5), (stride, 1), padding=(1, 2), dilation=(1, 2), bias=bias).double()
    x = torch.randn(2, 4, 12, 14, dtype=torch.float64)
    for rank in (1, 3, 8):
        module = factorize_conv(conv, rank, method="vh")
        kernel = _reconstructed_kernel(conv.weight.detach(), rank)
        expected = F.conv2d(x, kernel, conv.bias, conv.stride, conv.padding, conv.dilation)
        torch.testing.assert_close(module(x), expected, rtol=1e-10, atol=1e-10)
        assert [m.kernel_size for m in module] == [(3, 1), (1, 5)]


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_vh_full_rank_reproduces_original(stride: int, bias: bool) -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 9, 3, stride, padding=1, bias=bias)
    x = torch.randn(2, 6, 11, 11)
    module = factorize_conv(conv, max_ranks(LayerGeometry.of(conv), "vh"), method="vh")
    torch.testing.assert_close(module(x), conv(x), rtol=1e-4, atol=1e-5)


def test_vh_kernels_rebuild_the_rank_k_matrix() -> None:
    torch.manual_seed(2)
    kernel = torch.randn(8, 5, 3, 3, dtype=torch.float64)
    factors = vh_factors(kernel)
    vertical, horizontal = vh_kernels(factors, 4, kernel.shape)
    rebuilt = torch.einsum("kci,nkj->ncij", vertical[..., 0], horizontal[:, :, 0])
    torch.testing.assert_close(rebuilt, _reconstructed_kernel(kernel, 4))
    assert torch.linalg.matrix_rank(vh_matrix(rebuilt)) == 4


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("method", ["vh", "tucker2"])
def test_padding_modes_are_exact(padding_mode: str, method: str) -> None:
    torch.manual_seed(3)
    conv = nn.Conv2d(4, 6, 3, padding=1, padding_mode=padding_mode).double()
    x = torch.randn(1, 4, 9, 8, dtype=torch.float64)
    module = factorize_conv(conv, max_ranks(LayerGeometry.of(conv), method), method=method)
    torch.testing.assert_close(module(x), conv(x), rtol=1e-10, atol=1e-10)
