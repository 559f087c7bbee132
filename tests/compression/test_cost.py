"""The known cost: exact params/FLOPs ratios and their relaxation, for SVD, Tucker-2 and vh."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from compressbo.compression.build import build_network
from compressbo.compression.compressor import Compressor
from compressbo.compression.lowrank import rank_breakpoints, ranks_for_theta
from compressbo.compression.spec import spec_from_dict
from compressbo.exceptions import SettingError

LAYERS = ["conv1", "conv2", "conv3", "fc"]


class StridedNet(nn.Module):
    """Convs with strides (square, rectangular), padding, a non-square kernel, and a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(12, 16, (3, 5), stride=(2, 1), padding=(1, 2))
        self.conv3 = nn.Conv2d(16, 20, 3, stride=1, padding=0, bias=False)
        self.fc = nn.Linear(20 * 3 * 9, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x))))))
        return self.fc(x.flatten(1))


def strided_net() -> nn.Module:
    return StridedNet()


def _compressor(method: str, scheme: str = "params") -> Compressor:
    spec = spec_from_dict(
        {
            "builder": f"{__name__}:strided_net",
            "weights": "random",
            "dataset": "digits",
            "input_size": [3, 20, 22],
            "method": method,
            "scheme": scheme,
            "bounds": [0.01, 1.0],
            "layers": [{"name": name, **({"method": "svd"} if name == "fc" else {})} for name in LAYERS],
        },
        "strided",
    )
    torch.manual_seed(0)
    return Compressor(build_network(spec, weights="random", trust_code=True), spec, cache_dir=False)


def _hook_macs(module: nn.Module, names: list[str] | None, input_size) -> int:
    """MACs of the Conv2d/Linear modules inside the named submodules (all: None), by forward hooks."""
    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        total += output[0].numel() * layer.weight[0].numel()

    inside = [
        m for name, m in module.named_modules()
        if names is None or any(name == n or name.startswith(n + ".") for n in names)
    ]  # fmt: skip
    handles = [m.register_forward_hook(hook) for m in inside if isinstance(m, (nn.Conv2d, nn.Linear))]
    state = {n: torch.empty_like(t, device="meta") for n, t in [*module.named_parameters(), *module.named_buffers()]}
    functional_call(module, state, (torch.empty(1, *input_size, device="meta"),))
    for handle in handles:
        handle.remove()
    return total


@pytest.mark.parametrize("scheme", ["params", "plain"])
@pytest.mark.parametrize("method", ["tucker2", "vh"])
@pytest.mark.parametrize("metric", ["params", "flops"])
def test_relaxed_cost_equals_the_exact_cost_at_the_rank_breakpoints(method, scheme, metric):
    compressor = _compressor(method, scheme)
    cost = compressor.cost_function(metric)
    g = torch.Generator().manual_seed(0)
    breakpoints = [cost.breakpoints(i) for i in range(compressor.dim)]
    X = torch.stack(
        [torch.stack([b[torch.randint(len(b), (), generator=g)] for b in breakpoints]) for _ in range(40)]
    )
    exact = torch.tensor([compressor.cost(x, metric) for x in X], dtype=torch.float64)
    assert torch.allclose(cost(X), exact, rtol=1e-12, atol=0)
    # and the exact cost is the one the compressed network reports
    assert compressor.cost(X[0], metric) == pytest.approx(compressor.compress(X[0]).cost(metric), rel=1e-12)
    # along theta_0 (the other layers at breakpoints) it is monotone and lies between the
    # exact costs of the ranks at the breakpoints on either side
    others = [b[len(b) // 2].item() for b in breakpoints[1:]]
    t = torch.linspace(0.01, 1.0, 301, dtype=torch.float64)
    line = torch.stack([t, *[torch.full_like(t, v) for v in others]], dim=-1)
    relaxed = cost(line)
    if metric == "params" or method == "tucker2":  # vh's MACs can exceed the layer's before theta = 1 keeps it
        assert bool((relaxed.diff() >= -1e-15).all())
    exact_line = torch.tensor([compressor.cost(x, metric) for x in line], dtype=torch.float64)
    b = breakpoints[0]
    after = [b[min(int((b <= v).sum()), len(b) - 1)].item() for v in t]  # the next breakpoint
    upper = torch.tensor([compressor.cost([a, *others], metric) for a in after], dtype=torch.float64)
    low, high = torch.minimum(exact_line, upper), torch.maximum(exact_line, upper)
    assert bool((relaxed >= low - 1e-12).all()) and bool((relaxed <= high + 1e-12).all())


@pytest.mark.parametrize("method", ["tucker2", "vh"])
def test_flops_cost_matches_a_forward_hook_mac_count(method):
    compressor = _compressor(method)
    input_size = compressor.spec.input_size
    assert {call for layer in compressor.layer_geometries() for call in layer[2]} >= {((10, 11), (5, 11))}  # strided
    original = _hook_macs(compressor.network, LAYERS, input_size)
    for theta in ([0.05, 0.2, 0.5, 0.1], [0.3, 0.01, 1.0, 0.6], [1.0, 1.0, 1.0, 1.0]):
        compressed = compressor.compress(theta)
        hooked = _hook_macs(compressed.module, LAYERS, input_size)
        assert compressor.cost(theta, "flops") == pytest.approx(hooked / original, rel=1e-12)
        assert compressor.cost(theta, "params") == pytest.approx(compressed.ratio, rel=1e-12)
        whole = _hook_macs(compressed.module, None, input_size) / _hook_macs(compressor.network, None, input_size)
        assert compressed.flops_ratio == pytest.approx(whole, rel=1e-12)


def test_relaxed_cost_is_differentiable_and_batched():
    compressor = _compressor("tucker2")
    cost = compressor.cost_function("flops")
    X = torch.tensor([[[0.1, 0.2, 0.3, 0.4]], [[0.5, 0.05, 0.7, 0.2]]], dtype=torch.float64, requires_grad=True)
    value = cost(X)  # b x q x d -> b x q
    assert value.shape == (2, 1)
    value.sum().backward()
    assert bool(torch.isfinite(X.grad).all()) and bool((X.grad >= 0).all()) and bool((X.grad > 0).any())
    assert cost.minimum() == pytest.approx(compressor.cost([1e-6] * 4, "flops"))
    with pytest.raises(SettingError, match="unknown cost 'macs'"):
        compressor.cost_function("macs")


def test_params_cost_under_the_params_scheme_is_theta_between_the_breakpoints():
    compressor = _compressor("vh")
    cost = compressor.cost_function("params")
    t0 = max(cost.breakpoints(i)[0].item() for i in range(4))
    t1 = min(cost.breakpoints(i)[-1].item() for i in range(4))
    x = torch.full((1, 4), (t0 + t1) / 2, dtype=torch.float64)
    assert cost(x).item() == pytest.approx(x[0, 0].item(), rel=1e-12)  # sum theta_l p_l / sum p_l


def test_breakpoints_are_where_the_ranks_step():
    geometry = _compressor("tucker2").factors[1].geometry
    for method in ("svd", "vh", "tucker2"):
        for scheme in ("params", "plain"):
            thetas, ranks = rank_breakpoints(geometry, method, scheme)
            assert thetas == sorted(thetas) and len(set(map(str, ranks))) == len(ranks)
            for k, (t, r) in enumerate(zip(thetas, ranks)):
                assert ranks_for_theta(t, geometry, method, scheme) == r
                if k + 1 < len(thetas):
                    assert ranks_for_theta((t + thetas[k + 1]) / 2, geometry, method, scheme) == r
