"""The spectral scale of theta: the weight energy each layer's truncation keeps, at its rank knots."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from compressbo.bo.models.warping import KnownScale
from compressbo.compression.energy import activation_knots, conv_patches, layer_log_energies, spectral_knots
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
    knots, values = spectral_knots(compressor)
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


class MLP(torch.nn.Module):
    """Two Linear layers on flattened 1 x 4 x 5 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(20, 16)
        self.fc2 = torch.nn.Linear(16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def mlp() -> torch.nn.Module:
    return MLP()


def _mlp_compressor():
    from compressbo.compression.build import build_network
    from compressbo.compression.compressor import Compressor
    from compressbo.compression.spec import spec_from_dict

    spec = spec_from_dict(
        {
            "builder": f"{__name__}:mlp", "weights": "random", "dataset": "digits", "input_size": [1, 4, 5],
            "method": "svd", "bounds": [0.01, 1.0], "layers": [{"name": "fc1"}, {"name": "fc2"}],
        },
        "mlp",
    )  # fmt: skip
    torch.manual_seed(0)
    return Compressor(build_network(spec, weights="random", trust_code=True), spec, cache_dir=False)


def test_activation_energy_is_the_truncated_layers_share_of_the_output_energy_on_the_inputs():
    compressor = _mlp_compressor()
    g = torch.Generator().manual_seed(1)
    basis = torch.randn(3, 20, generator=g)  # inputs in a 3-dimensional subspace: few directions excited
    batches = [torch.randn(50, 3, generator=g) @ basis for _ in range(2)]
    knots, values = activation_knots(compressor, (b.reshape(-1, 1, 4, 5) for b in batches))
    inputs = {"fc1": torch.cat(batches)}
    inputs["fc2"] = torch.relu(compressor.network.fc1(inputs["fc1"])).detach()
    for name, factors, thetas, logs in zip(compressor.layer_names, compressor.factors, knots, values):
        assert thetas == rank_knots(factors.geometry, "svd", compressor.scheme)[0] and logs[-1] == 0.0
        A = inputs[name].double()
        total = (A @ factors.layer.weight.detach().double().T).square().sum()
        for theta, log_energy in zip(thetas[:-1], logs[:-1]):
            rank = factors.ranks(theta, compressor.scheme)
            kept = (A @ factors.factors.reconstruct(rank).double().T).square().sum()
            assert math.exp(log_energy) == pytest.approx((kept / total).item(), rel=1e-5)
    # inputs along fc1's leading right singular vector only: rank 1 keeps all of its output energy
    v1 = compressor.factors[0].factors.vh[0]
    along = (torch.randn(30, 1, generator=g) * v1).reshape(-1, 1, 4, 5)
    _, aligned = activation_knots(compressor, [along])
    assert aligned[0][0] == pytest.approx(0.0, abs=1e-6) and layer_log_energies(compressor.factors[0])[1][0] < -0.5


class PaddedNet(torch.nn.Module):
    """Convolutions with dilation, reflect padding and PyTorch's 'same' padding of an even kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding="same", dilation=2, padding_mode="reflect")
        self.conv2 = torch.nn.Conv2d(8, 6, (2, 3), padding="same", bias=False)
        self.fc = torch.nn.Linear(6 * 9 * 10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1))


def padded_net() -> torch.nn.Module:
    return PaddedNet()


def _padded_compressor(method: str):
    from compressbo.compression.build import build_network
    from compressbo.compression.compressor import Compressor
    from compressbo.compression.spec import spec_from_dict

    spec = spec_from_dict(
        {
            "builder": f"{__name__}:padded_net", "weights": "random", "dataset": "digits", "input_size": [3, 9, 10],
            "method": method, "bounds": [0.01, 1.0],
            "layers": [{"name": "conv1"}, {"name": "conv2"}, {"name": "fc", "method": "svd"}],
        },
        "padded",
    )  # fmt: skip
    torch.manual_seed(0)
    return Compressor(build_network(spec, weights="random", trust_code=True), spec, cache_dir=False)


def _kernel(factors, rank) -> torch.Tensor:
    """The truncated layer's weight (``T x S [x kh x kw]``) in float64."""
    if factors.method != "vh":
        return factors.factors.reconstruct(rank).double()
    t, s, kh, kw = factors.layer.weight.shape
    return factors.factors.reconstruct(rank).double().reshape(s, kh, kw, t).permute(3, 0, 1, 2)


def _output_energy(layer: torch.nn.Module, weight: torch.Tensor, inputs: torch.Tensor) -> float:
    """``||layer(inputs) - bias||^2`` with ``weight`` for the layer's, in float64 (its own padding)."""
    from torch.func import functional_call

    state = {"weight": weight.double(), **({"bias": torch.zeros_like(layer.bias, dtype=torch.float64)} if layer.bias is not None else {})}
    with torch.no_grad():
        return float(functional_call(layer.double(), state, (inputs.double(),)).square().sum())


@pytest.mark.parametrize("net", ["strided", "padded"])
@pytest.mark.parametrize("method", ["tucker2", "vh"])
def test_a_convolutions_activation_energy_is_its_truncations_share_of_the_output_energy(method, net):
    """Strides, a rectangular kernel, dilation, reflect and 'same' padding: the patch moments
    give every truncation's output energy exactly (all positions taken)."""
    compressor = _compressor(method) if net == "strided" else _padded_compressor(method)
    size = (3, 20, 22) if net == "strided" else (3, 9, 10)
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(6, *size, generator=g) for _ in range(2)]
    recorded = {name: [] for name in compressor.layer_names}
    handles = [
        f.layer.register_forward_hook(lambda m, args, out, name=name: recorded[name].append(args[0].detach()))
        for name, f in zip(compressor.layer_names, compressor.factors)
    ]
    knots, values = activation_knots(compressor, batches, positions=10**6)
    for handle in handles:
        handle.remove()
    for name, factors, thetas, logs in zip(compressor.layer_names, compressor.factors, knots, values):
        inputs = torch.cat(recorded[name])
        layer = copy.deepcopy(factors.layer)
        total = _output_energy(layer, factors.layer.weight, inputs)
        assert thetas == rank_knots(factors.geometry, factors.method, compressor.scheme)[0] and logs[-1] == 0.0
        ranks = [factors.ranks(theta, compressor.scheme) for theta in thetas]
        shares = [1.0 if factors.keeps_original(r) else _output_energy(layer, _kernel(factors, r), inputs) / total for r in ranks]
        # an added component can cancel part of the output: the scale is the running maximum
        expected = torch.tensor(shares, dtype=torch.float64).cummax(0).values
        assert torch.allclose(torch.tensor(logs, dtype=torch.float64).exp(), expected, rtol=1e-4, atol=1e-9)  # float32 factors
    # sampled positions: a fixed choice, the same fractions on every pass
    assert activation_knots(compressor, batches, positions=5) == activation_knots(compressor, batches, positions=5)


def test_conv_patches_are_unfolds_columns_and_sampled_ones_are_among_them():
    conv = torch.nn.Conv2d(3, 5, (3, 2), stride=(2, 3), padding=(1, 2), dilation=(1, 2))
    x = torch.randn(2, 3, 11, 13, generator=torch.Generator().manual_seed(3))
    patches = conv_patches(x, conv)  # (N, L, S kh kw)
    assert torch.equal(patches, torch.nn.functional.unfold(x, (3, 2), dilation=(1, 2), padding=(1, 2), stride=(2, 3)).transpose(1, 2))
    sampled = conv_patches(x, conv, positions=4, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (2, 4, 18)
    for n in range(2):
        assert all(any(torch.equal(p, q) for q in patches[n]) for p in sampled[n])
