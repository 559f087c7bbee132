from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compressbo.compression.lowrank import (
    LayerGeometry,
    decompose,
    build_factorized,
    factorized_macs,
    factorized_params,
    full_macs,
    full_params,
    keeps_original,
    layer_ranks,
    max_ranks,
    ranks_for_theta,
)

GEOMETRIES = {
    "svd": [LayerGeometry(1000, 784), LayerGeometry(10, 1000), LayerGeometry(24, 40, bias=False)],
    "tucker2": [
        LayerGeometry(64, 3, (3, 3)),
        LayerGeometry(128, 64, (3, 3)),
        LayerGeometry(512, 512, (3, 3)),
        LayerGeometry(96, 40, (3, 5), bias=False),
    ],
    "vh": [LayerGeometry(64, 3, (3, 3)), LayerGeometry(256, 128, (3, 3)), LayerGeometry(48, 20, (5, 3), bias=False)],
}
THETAS = torch.linspace(0.01, 1.0, 41).tolist()


def _next(ranks, full):
    """One rank step up (both Tucker-2 ranks), clamped to full rank."""
    if isinstance(ranks, tuple):
        return tuple(min(r + 1, f) for r, f in zip(ranks, full))
    return min(ranks + 1, full)


@pytest.mark.parametrize("method", ["svd", "tucker2", "vh"])
def test_params_scheme_ratio_within_one_rank_step_of_theta(method: str) -> None:
    for geometry in GEOMETRIES[method]:
        full, original = max_ranks(geometry, method), full_params(geometry)
        smallest = (1, 1) if method == "tucker2" else 1
        for theta in THETAS:
            ranks = ranks_for_theta(theta, geometry, method)
            ratio = factorized_params(geometry, method, ranks) / original
            assert ratio <= theta + 1e-12 or ranks == smallest
            step_up = _next(ranks, full)
            if step_up != ranks:
                assert factorized_params(geometry, method, step_up) / original > theta


@pytest.mark.parametrize("method", ["svd", "vh"])
def test_theta_at_a_ranks_own_ratio_keeps_that_rank(method: str) -> None:
    for geometry in GEOMETRIES[method]:
        original = full_params(geometry)
        for rank in range(1, max_ranks(geometry, method) + 1):
            theta = factorized_params(geometry, method, rank) / original
            if theta <= 1:
                assert ranks_for_theta(theta, geometry, method) == rank, (geometry, rank)


def test_params_scheme_is_monotone_clamped_and_keeps_tucker_proportions() -> None:
    geometry = LayerGeometry(256, 64, (3, 3))
    previous = (0, 0)
    for theta in THETAS:
        r_out, r_in = ranks_for_theta(theta, geometry, "tucker2")
        assert r_out >= previous[0] and r_in >= previous[1]
        assert abs(r_out / 256 - r_in / 64) < 1 / 64 + 1e-12  # R_out / R_in follows T / S
        previous = (r_out, r_in)
    assert ranks_for_theta(1e-6, geometry, "tucker2") == (1, 1)
    assert ranks_for_theta(50.0, geometry, "tucker2") == max_ranks(geometry, "tucker2")
    assert ranks_for_theta(-1.0, LayerGeometry(10, 20), "svd") == 1
    with pytest.raises(ValueError, match="finite"):
        ranks_for_theta(math.nan, geometry, "tucker2")
    with pytest.raises(ValueError, match="unknown rank scheme"):
        ranks_for_theta(0.5, geometry, "tucker2", scheme="energy")


def test_plain_scheme_is_floor_of_theta_times_full_rank() -> None:
    geometry = LayerGeometry(128, 64, (3, 3))
    assert ranks_for_theta(0.5, geometry, "tucker2", "plain") == (64, 32)
    assert ranks_for_theta(0.001, geometry, "tucker2", "plain") == (1, 1)
    assert ranks_for_theta(1.0, geometry, "vh", "plain") == max_ranks(geometry, "vh") == 192
    assert ranks_for_theta(0.3, LayerGeometry(1000, 784), "svd", "plain") == math.floor(0.3 * 784)


@pytest.mark.parametrize("scheme", ["params", "plain"])
@pytest.mark.parametrize("method", ["svd", "tucker2", "vh"])
def test_layer_ranks_give_the_full_ranks_exactly_where_the_layer_is_kept(method: str, scheme: str) -> None:
    for geometry in GEOMETRIES[method]:
        full = max_ranks(geometry, method)
        assert keeps_original(geometry, method, full)  # a full-rank factorization is never smaller
        assert layer_ranks(1.0, geometry, method, scheme) == full
        for theta in THETAS[:-1]:
            ranks, plain = layer_ranks(theta, geometry, method, scheme), ranks_for_theta(theta, geometry, method, scheme)
            if keeps_original(geometry, method, plain):
                assert ranks == full
            else:
                assert ranks == plain and factorized_params(geometry, method, ranks) < full_params(geometry)
    # Tucker-2 at theta = 1 under "params" would keep 57 x 57 of a 64 x 64 conv (all its weights' worth)
    geometry = LayerGeometry(64, 64, (3, 3))
    assert ranks_for_theta(1.0, geometry, "tucker2") != (64, 64) and layer_ranks(1.0, geometry, "tucker2") == (64, 64)


def test_full_ranks() -> None:
    assert max_ranks(LayerGeometry(64, 3, (3, 3)), "tucker2") == (27, 3)
    assert max_ranks(LayerGeometry(10, 1000), "svd") == 10
    assert max_ranks(LayerGeometry(64, 3, (3, 3)), "vh") == 9


def _layer(geometry: LayerGeometry, method: str) -> nn.Module:
    torch.manual_seed(0)
    if method == "svd":
        return nn.Linear(geometry.in_channels, geometry.out_channels, bias=geometry.bias)
    g = geometry
    return nn.Conv2d(g.in_channels, g.out_channels, g.kernel_size, stride=2, padding=1, bias=g.bias)


@pytest.mark.parametrize("method", ["svd", "tucker2", "vh"])
def test_built_modules_match_parameter_and_mac_formulas(method: str) -> None:
    for geometry in GEOMETRIES[method][:2] + GEOMETRIES[method][-1:]:
        layer = _layer(geometry, method)
        factors = decompose(layer, method)
        is_conv = isinstance(layer, nn.Conv2d)
        x = torch.randn(1, geometry.in_channels, 9, 10) if is_conv else torch.randn(1, geometry.in_channels)
        in_hw = tuple(x.shape[-2:]) if x.ndim == 4 else (1, 1)
        out_hw = tuple(layer(x).shape[-2:]) if x.ndim == 4 else (1, 1)
        assert full_macs(geometry, out_hw) == _count_macs(layer, x)
        for theta in (0.05, 0.3, 0.9):
            ranks = ranks_for_theta(theta, geometry, method)
            module = build_factorized(layer, method, factors, ranks)
            assert sum(p.numel() for p in module.parameters()) == factorized_params(geometry, method, ranks)
            assert _count_macs(module, x) == factorized_macs(geometry, method, ranks, in_hw, out_hw)


def _count_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every Conv2d/Linear, counted from the actual outputs."""
    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        total += output[0].numel() * layer.weight[0].numel()

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        module(x)
    for handle in handles:
        handle.remove()
    return total


@pytest.mark.parametrize("scheme", ["params", "plain"])
def test_tucker2_ranks_never_exceed_what_the_core_can_use(scheme: str) -> None:
    """R_out <= R_in kh kw and R_in <= R_out kh kw: the core's unfoldings bound each rank."""
    for geometry in GEOMETRIES["tucker2"] + [LayerGeometry(512, 3, (1, 1)), LayerGeometry(3, 256, (3, 3))]:
        area = geometry.kernel_area
        previous = (0, 0)
        for theta in THETAS:
            r_out, r_in = layer_ranks(theta, geometry, "tucker2", scheme)
            assert isinstance(r_out, int) and isinstance(r_in, int)
            assert r_out <= r_in * area and r_in <= r_out * area, (geometry, theta, (r_out, r_in))
            assert r_out >= previous[0] and r_in >= previous[1]
            previous = (r_out, r_in)
    # VGG-16's first conv (3 -> 64 channels, 3 x 3): an output rank above 9 per input rank is useless
    assert ranks_for_theta(0.5, LayerGeometry(64, 3, (3, 3)), "tucker2", "plain") == (9, 1)


def test_hooi_at_the_first_convs_ranks_is_exact_in_shape_and_silent() -> None:
    import warnings

    from compressbo.compression.lowrank.tucker import TUCKER2

    torch.manual_seed(0)
    conv = nn.Conv2d(3, 64, 3, padding=1)
    geometry = LayerGeometry(64, 3, (3, 3))
    factors = TUCKER2.decompose(conv.weight.detach())
    for scheme in ("params", "plain"):
        for theta in (0.2, 0.35, 0.5):
            ranks = ranks_for_theta(theta, geometry, "tucker2", scheme)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                refined = TUCKER2.refine(conv.weight.detach(), factors, ranks)
            assert refined.core.shape == (*ranks, 3, 3)
            assert refined.out_factor.shape == (64, ranks[0]) and refined.in_factor.shape == (3, ranks[1])
