from __future__ import annotations

import pytest
import tensorly as tl
import torch
import torch.nn.functional as F
from tensorly.decomposition import partial_tucker
from torch import nn

from compressbo.compression.lowrank import (
    LayerGeometry,
    factorize_conv,
    max_ranks,
    ranks_for_theta,
    tucker2_factors,
)


def _conv(in_channels, out_channels, kernel=3, stride=1, bias=True, dilation=1, seed=0) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(in_channels, out_channels, kernel, stride, padding=1, dilation=dilation, bias=bias).double()


def _reference(conv: nn.Conv2d, kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, kernel, conv.bias, conv.stride, conv.padding, conv.dilation)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_tucker2_equals_conv_with_reconstructed_kernel(stride: int, bias: bool) -> None:
    conv = _conv(6, 10, stride=stride, bias=bias)
    factors = tucker2_factors(conv.weight)
    x = torch.randn(2, 6, 13, 11, dtype=torch.float64)
    for ranks in [(1, 1), (4, 3), (7, 6)]:
        module = factorize_conv(conv, ranks, method="tucker2")
        expected = _reference(conv, factors.reconstruct(ranks), x)
        torch.testing.assert_close(module(x), expected, rtol=1e-10, atol=1e-10)
        assert [m.kernel_size for m in module] == [(1, 1), (3, 3), (1, 1)]
        assert module[1].stride == (stride, stride) and (module[2].bias is not None) == bias


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_tucker2_full_ranks_reproduce_original(stride: int, bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 12, (3, 5), stride, padding=(1, 2), dilation=(2, 1), bias=bias)
    x = torch.randn(2, 5, 15, 12)
    module = factorize_conv(conv, max_ranks(LayerGeometry.of(conv), "tucker2"))
    torch.testing.assert_close(module(x), conv(x), rtol=1e-4, atol=1e-5)


def test_hosvd_factors_are_orthonormal_and_sorted() -> None:
    factors = tucker2_factors(_conv(16, 24).weight)
    for factor in (factors.out_factor, factors.in_factor):
        torch.testing.assert_close(factor.T @ factor, torch.eye(factor.shape[1], dtype=factor.dtype))
    assert factors.core.shape == (24, 16, 3, 3)
    energy = factors.core.square().sum(dim=(1, 2, 3))  # all-orthogonality: per-slice energy descends
    assert torch.all(energy[:-1] >= energy[1:] - 1e-9)


def _trained_like_kernel(out_channels: int, in_channels: int, seed: int) -> torch.Tensor:
    """A kernel with decaying channel spectra, as trained layers have, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    core = torch.randn(out_channels, in_channels, 3, 3, generator=generator, dtype=torch.float64)
    decay_out = torch.arange(1, out_channels + 1, dtype=torch.float64) ** -0.7
    decay_in = torch.arange(1, in_channels + 1, dtype=torch.float64) ** -0.7
    q_out = torch.linalg.qr(torch.randn(out_channels, out_channels, generator=generator, dtype=torch.float64))[0]
    q_in = torch.linalg.qr(torch.randn(in_channels, in_channels, generator=generator, dtype=torch.float64))[0]
    core = core * decay_out[:, None, None, None] * decay_in[None, :, None, None]
    kernel = torch.einsum("ab...,ta,sb->ts...", core, q_out, q_in)
    return kernel + 0.01 * kernel.std() * torch.randn(kernel.shape, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize(
    "shape", [(64, 3), (128, 64), (128, 128)], ids=["vgg16.features.0", "vgg16.features.5", "resnet50.layer2.1.conv2"]
)
@pytest.mark.parametrize("kind", ["kaiming", "trained_like"])
def test_cached_hosvd_error_within_10_percent_of_partial_tucker(shape: tuple[int, int], kind: str) -> None:
    out_channels, in_channels = shape
    if kind == "kaiming":
        kernel = _conv(in_channels, out_channels, seed=3).weight.detach()
    else:
        kernel = _trained_like_kernel(out_channels, in_channels, seed=4)
    factors = tucker2_factors(kernel)
    geometry = LayerGeometry(out_channels, in_channels, (3, 3))
    norm = torch.linalg.vector_norm(kernel)
    for theta in (0.1, 0.3):
        ranks = ranks_for_theta(theta, geometry, "tucker2")
        with tl.backend_context("pytorch"):
            (core, (u_out, u_in)), _ = partial_tucker(kernel, rank=list(ranks), modes=[0, 1], init="svd", n_iter_max=25)
            hooi = tl.tenalg.multi_mode_dot(core, [u_out, u_in], modes=[0, 1])
        hooi_error = torch.linalg.vector_norm(kernel - hooi) / norm
        cached_error = torch.linalg.vector_norm(kernel - factors.reconstruct(ranks)) / norm
        assert cached_error <= 1.10 * hooi_error, (ranks, cached_error, hooi_error)
        assert cached_error >= hooi_error - 1e-6  # HOOI refines the HOSVD it starts from


def test_rejects_grouped_conv_linear_and_bad_ranks() -> None:
    with pytest.raises(ValueError, match="groups == 1"):
        factorize_conv(nn.Conv2d(4, 4, 3, groups=2), (2, 2))
    with pytest.raises(ValueError, match="svd for Linear"):
        factorize_conv(nn.Linear(4, 4), (2, 2))
    with pytest.raises(ValueError, match=r"1 <= \(R_out, R_in\) <= \(8, 4\)"):
        factorize_conv(nn.Conv2d(4, 8, 3), (9, 2))
    with pytest.raises(ValueError, match="tucker2 needs ranks"):
        factorize_conv(nn.Conv2d(4, 8, 3), 3)
    with pytest.raises(ValueError, match="'tucker2' or 'vh'"):
        factorize_conv(nn.Conv2d(4, 8, 3), 3, method="svd")


def test_hooi_refinement_never_loses_to_the_hosvd_and_matches_partial_tucker() -> None:
    from compressbo.compression.lowrank import LayerFactors, refine_tucker2

    conv = _conv(24, 32, seed=3)
    kernel = conv.weight.detach()
    factors = tucker2_factors(kernel)
    norm = torch.linalg.vector_norm(kernel)
    for ranks in [(4, 3), (12, 8), (20, 16)]:
        refined = refine_tucker2(kernel, factors, ranks, n_iter_max=50)
        assert refined.core.shape == (*ranks, 3, 3)
        hosvd_error = torch.linalg.vector_norm(kernel - factors.reconstruct(ranks)) / norm
        hooi_error = torch.linalg.vector_norm(kernel - refined.reconstruct(ranks)) / norm
        with tl.backend_context("pytorch"):
            (core, (u_out, u_in)), _ = partial_tucker(kernel, rank=list(ranks), modes=[0, 1], init="svd", n_iter_max=50)
            hooi = tl.tenalg.multi_mode_dot(core, [u_out, u_in], modes=[0, 1])
        reference = torch.linalg.vector_norm(kernel - hooi) / norm
        assert hooi_error <= hosvd_error + 1e-12
        assert hooi_error == pytest.approx(reference.item(), rel=1e-3)
        # the refined replacement is the conv with the refined kernel
        module = LayerFactors(conv, "tucker2", factors).build(ranks, refine=True)
        x = torch.randn(1, 24, 7, 7, dtype=torch.float64)
        default = refine_tucker2(kernel, factors, ranks)  # HOOI_ITERATIONS sweeps, as build uses
        torch.testing.assert_close(module(x), _reference(conv, default.reconstruct(ranks), x), rtol=1e-9, atol=1e-9)
