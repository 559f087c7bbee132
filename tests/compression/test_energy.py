"""The spectral scale of theta: the weight energy each layer's truncation keeps, at its rank knots."""

from __future__ import annotations

import math

import pytest
import torch

from compressbo.bo.models.warping import KnownScale
from compressbo.compression.energy import layer_log_energies
from compressbo.compression.lowrank import rank_knots
from tests.compression.test_cost import _compressor


@pytest.mark.parametrize("scheme", ["params", "plain"])
@pytest.mark.parametrize("method", ["tucker2", "vh"])
def test_the_energy_fraction_is_the_truncated_weights_share_of_the_squared_norm(method, scheme):
    compressor = _compressor(method, scheme)  # three convs by method, a Linear by SVD
    for factors in compressor.factors:
        _, ranks = rank_knots(factors.geometry, factors.method, scheme)
        energies = factors.energies(ranks)
        total = factors.layer.weight.detach().double().square().sum()
        for rank, energy in zip(ranks, energies.tolist()):
            if factors.keeps_original(rank):
                assert energy == 1.0
                continue
            kept = factors.factors.reconstruct(rank).double().square().sum()
            assert energy == pytest.approx((kept / total).item(), rel=1e-5)  # float32 factors
        assert bool((energies.diff() >= -1e-12).all())  # more rank keeps more energy


@pytest.mark.parametrize("method", ["tucker2", "vh"])
def test_spectral_knots_are_the_cost_knots_with_log_energies_ending_at_zero(method):
    compressor = _compressor(method)
    knots, values = compressor.spectral_knots()
    cost = compressor.cost_function("params")
    assert len(knots) == len(values) == compressor.dim
    for layer, (thetas, logs) in enumerate(zip(knots, values)):
        assert torch.equal(torch.tensor(thetas, dtype=torch.float64), cost.breakpoints(layer))
        assert thetas[-1] == 1.0 and logs[-1] == 0.0  # the layer kept: all of its energy
        assert all(math.isfinite(v) and v <= 0.0 for v in logs)
        assert all(b >= a for a, b in zip(logs, logs[1:]))
    scale = KnownScale(knots, values)  # what the BO side is given: it validates itself
    theta = torch.tensor([[t[len(t) // 2] for t in knots]], dtype=torch.float64)
    ranks = compressor.ranks(theta[0])
    expected = [math.log(f.energies([r]).item()) for f, r in zip(compressor.factors, ranks)]
    assert torch.allclose(scale(theta)[0], torch.tensor(expected, dtype=torch.float64))  # at a knot: its rank's


def test_a_decaying_spectrum_spreads_the_low_ranks_over_the_scale():
    """Where the singular values decay, the first ranks span most of the log energy scale."""
    fc = _compressor("vh").factors[-1]  # Linear 540 -> 10 by SVD: rank r at theta = 0.102 r
    s = 0.5 ** torch.arange(fc.factors.s.numel(), dtype=fc.factors.s.dtype)
    fc.factors.s.copy_(s)  # a geometric spectrum in place of the random layer's flat one
    thetas, logs = layer_log_energies(fc)
    assert thetas[2] < 0.35  # rank 3: a third of theta ...
    assert (logs[2] - logs[0]) > 0.9 * (0.0 - logs[0])  # ... and nine tenths of the scale
