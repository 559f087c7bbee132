from __future__ import annotations

import pytest
import torch
from torch import nn

from compressbo.compression.lowrank import factorize_linear, factorized_params, LayerGeometry, svd_factors


@pytest.fixture
def layer() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(40, 24).double()


@pytest.mark.parametrize("rank", [1, 5, 17])
def test_output_is_input_times_rank_r_reconstruction(layer: nn.Linear, rank: int) -> None:
    u, s, vh = torch.linalg.svd(layer.weight.detach(), full_matrices=False)
    reconstruction = u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]
    x = torch.randn(7, 40, dtype=torch.float64)
    module = factorize_linear(layer, rank)
    torch.testing.assert_close(module(x), x @ reconstruction.T + layer.bias, rtol=1e-10, atol=1e-10)
    assert [type(m) for m in module] == [nn.Linear, nn.Linear]
    assert module[0].bias is None and module[1].in_features == rank


def test_eckart_young_error(layer: nn.Linear) -> None:
    factors = svd_factors(layer.weight)
    for rank in (1, 8, 23):
        error = torch.linalg.matrix_norm(layer.weight.detach() - factors.reconstruct(rank))
        torch.testing.assert_close(error, factors.s[rank:].square().sum().sqrt())


@pytest.mark.parametrize("bias", [True, False])
def test_full_rank_reproduces_original(bias: bool) -> None:
    torch.manual_seed(1)
    layer = nn.Linear(30, 50, bias=bias)
    x = torch.randn(5, 30)
    module = factorize_linear(layer, 30)
    torch.testing.assert_close(module(x), layer(x), rtol=1e-4, atol=1e-5)
    assert (module[1].bias is not None) == bias


def test_parameter_count_matches_formula(layer: nn.Linear) -> None:
    for rank in (1, 9, 24):
        module = factorize_linear(layer, rank)
        assert sum(p.numel() for p in module.parameters()) == factorized_params(LayerGeometry.of(layer), "svd", rank)


def test_rank_out_of_range_and_wrong_type(layer: nn.Linear) -> None:
    with pytest.raises(ValueError, match=r"rank must be in \[1, 24\]"):
        factorize_linear(layer, 25)
    with pytest.raises(TypeError, match="nn.Linear"):
        factorize_linear(nn.Conv2d(3, 3, 3), 1)
