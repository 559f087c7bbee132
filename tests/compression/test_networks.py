from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call

from compressbo.exceptions import UserInputError
from compressbo.compression.compressor import Compressor
from compressbo.compression.spec import available_specs, load_spec, spec_from_dict
from compressbo.compression.build import build_network, check_layers
from compressbo.compression.export import load_compressed, save_compressed


@pytest.fixture(scope="module")
def factor_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("factors")


@pytest.fixture(scope="module")
def fc3():
    torch.manual_seed(0)
    spec = load_spec("fc3")
    return spec, build_network(spec, weights="random")


def _random_compressor(name: str, factor_dir):
    """``(spec, network, compressor)`` of the built-in spec ``name`` with seeded random weights."""
    torch.manual_seed(0)
    spec = load_spec(name)
    network = build_network(spec, weights="random")
    return spec, network, Compressor(network, spec, cache_dir=factor_dir)


@pytest.fixture(scope="module")
def vgg16(factor_dir):
    return _random_compressor("vgg16", factor_dir)


@pytest.fixture(scope="module")
def resnet50(factor_dir):
    return _random_compressor("resnet50", factor_dir)


def _spec_data(**changes) -> dict:
    data = {
        "builder": "compressbo.compression.architectures:fc3",
        "weights": "random",
        "dataset": "digits",
        "input_size": [1, 28, 28],
        "method": "svd",
        "layers": ["fc1", "fc2"],
    }
    return {**data, **changes}


def _one_line_error(call, *fragments: str) -> str:
    with pytest.raises(UserInputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ----------------------------------------------------------------------------- specs


def test_shipped_specs() -> None:
    assert {"fc3", "vgg16", "resnet50"} <= set(available_specs())
    fc3, vgg16, resnet50 = load_spec("fc3"), load_spec("vgg16"), load_spec("resnet50")
    assert [len(s.layers) for s in (fc3, vgg16, resnet50)] == [3, 13, 16]
    assert {l.method for l in fc3.layers} == {"svd"} and {l.method for l in vgg16.layers} == {"tucker2"}
    assert [l.name for l in fc3.layers] == ["fc1", "fc2", "fc3"]
    assert all(l.name.endswith("conv2") for l in resnet50.layers)
    assert (fc3.dataset, fc3.weights, fc3.input_size) == ("digits", "train", (1, 28, 28))
    assert (vgg16.dataset, vgg16.weights, vgg16.input_size) == ("imagenet", "IMAGENET1K_V1", (3, 224, 224))
    assert resnet50.weights.startswith("IMAGENET1K_")
    bounds = vgg16.bounds
    assert bounds.shape == (2, 13) and bounds.dtype == torch.float64 and bool((bounds[0] < bounds[1]).all())


def test_spec_by_path_and_by_env_directory(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(
        'builder = "compressbo.compression.architectures:fc3"\nweights = "random"\ndataset = "digits"\n'
        'input_size = [1, 28, 28]\nmethod = "svd"\nbounds = [0.1, 0.9]\n'
        'layers = ["fc1", { name = "fc3", bounds = [0.2, 1.0] }]\n'
    )
    spec = load_spec(path)
    assert spec.name == "tiny" and spec.path == path
    assert [l.bounds for l in spec.layers] == [(0.1, 0.9), (0.2, 1.0)]
    monkeypatch.setenv("COMPRESSBO_MODELS", str(tmp_path))
    assert load_spec("tiny") == spec and "tiny" in available_specs()


@pytest.mark.parametrize(
    "changes, fragments",
    [
        ({"bounds": [0.5, 0.2]}, ["bounds", "0 < lo < hi <= 1"]),
        ({"bounds": [0.0, 1.0]}, ["0 < lo < hi <= 1"]),
        ({"bounds": [0.1, 1.5]}, ["0 < lo < hi <= 1"]),
        ({"layers": [{"name": "fc1", "bounds": [0.3, 0.3]}]}, ["layer 'fc1' bounds"]),
        ({"method": "cp"}, ["layer 'fc1' needs a method"]),
        ({"layers": ["fc1", "fc1"]}, ["listed twice: fc1"]),
        ({"wieghts": "random"}, ["unknown key(s) wieghts"]),
        ({"scheme": "energy"}, ["scheme must be one of params, plain"]),
        ({"input_size": [0, 28]}, ["input_size"]),
    ],
)
def test_spec_errors(changes, fragments) -> None:
    _one_line_error(lambda: spec_from_dict(_spec_data(**changes), "my.toml"), "my.toml", *fragments)


def test_missing_keys_and_unknown_spec() -> None:
    data = _spec_data()
    del data["dataset"]
    _one_line_error(lambda: spec_from_dict(data, "my.toml"), "missing required key(s) dataset")
    _one_line_error(lambda: load_spec("vgg61"), "no network spec named 'vgg61'", "vgg16")
    _one_line_error(lambda: load_spec("nowhere/net.toml"), "does not exist")


@pytest.mark.parametrize(
    "builder, layer, method, fragments",
    [
        ("compressbo.compression.architectures:fc3", "fc4", "svd", ["layer 'fc4' does not exist", "did you mean"]),
        ("compressbo.compression.architectures:fc3", "relu1", "tucker2", ["layer 'relu1'", "tucker2 factorizes nn.Conv2d", "ReLU"]),
        ("mobilenet_v2", "features.0.0", "svd", ["layer 'features.0.0'", "svd factorizes nn.Linear", "Conv2d"]),
        ("compressbo.compression.architectures:fc3", "fc2", "tucker2", ["layer 'fc2'", "use svd for Linear"]),
        ("mobilenet_v2", "features.1.conv.0.0", "tucker2", ["layer 'features.1.conv.0.0'", "groups=32"]),
    ],
)
def test_layer_errors_name_the_layer(builder, layer, method, fragments) -> None:
    spec = spec_from_dict(_spec_data(builder=builder, layers=[layer], method=method, input_size=[3, 32, 32]), "t")
    _one_line_error(lambda: build_network(spec), *fragments)


# ----------------------------------------------------------------------------- weights


def test_missing_torchvision_checkpoint_names_file_and_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = load_spec("vgg16")
    _one_line_error(
        lambda: build_network(spec),
        "vgg16-397923af.pth",
        str(tmp_path / "hub" / "checkpoints"),
        "not available offline",
    )
    _one_line_error(lambda: build_network(spec, weights="IMAGENET9K"), "unknown weights 'IMAGENET9K'", "IMAGENET1K_V1")


def test_torchvision_checkpoint_is_loaded_from_torch_home(tmp_path: Path, monkeypatch, resnet50) -> None:
    spec, network, _ = resnet50
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(network.state_dict(), checkpoints / "resnet50-0676ba61.pth")
    loaded = build_network(spec, weights="IMAGENET1K_V1")
    assert torch.equal(loaded.layer4[2].conv2.weight, network.layer4[2].conv2.weight) and not loaded.training
    (checkpoints / "resnet50-0676ba61.pth").write_bytes(b"truncated")
    _one_line_error(lambda: build_network(spec, weights="IMAGENET1K_V1"), "cannot load", "resnet50-0676ba61.pth")


def test_train_weights_are_refused_with_instructions() -> None:
    _one_line_error(lambda: build_network(load_spec("fc3")), "train it on digits first", "compressbo.compression.training")
    _one_line_error(lambda: build_network(load_spec("fc3"), weights="IMAGENET1K_V1"), "no torchvision weights")


def test_state_dict_weights(tmp_path: Path, fc3) -> None:
    spec, network = fc3
    path = tmp_path / "fc3.pth"
    torch.save(network.state_dict(), path)
    loaded = build_network(spec, weights=path)
    assert not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), network.state_dict().values()))
    _one_line_error(lambda: build_network(spec, weights=tmp_path / "nope.pth"), "nope.pth does not exist")
    _one_line_error(lambda: build_network(spec, weights=tmp_path), "is a directory; pass the .pth state dict file in it")
    torch.save({"fc1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    _one_line_error(lambda: build_network(spec, weights=tmp_path / "bad.pth"), "does not fit the architecture")


def test_non_finite_weights_are_refused(tmp_path: Path, fc3) -> None:
    spec, network = fc3
    state = {k: v.clone() for k, v in network.state_dict().items()}
    state["fc2.weight"][3, 5] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    _one_line_error(lambda: build_network(spec, weights=tmp_path / "nan.pth"), "fc2.weight holds NaN or infinite")


def test_random_weights_are_one_network_per_spec() -> None:
    spec = load_spec("fc3")
    torch.manual_seed(1)
    first = build_network(spec, weights="random")
    torch.manual_seed(2)
    second = build_network(spec, weights="random")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    after_build = torch.rand(3)
    torch.manual_seed(2)
    assert torch.equal(after_build, torch.rand(3))  # the caller's random stream is untouched


def test_a_builder_that_returns_no_module_is_named() -> None:
    spec = dataclasses.replace(load_spec("fc3"), builder="os:getcwd")
    _one_line_error(lambda: build_network(spec, weights="random", trust_code=True), "builder 'os:getcwd' returned a str")


# ----------------------------------------------------------------------------- compression


def test_fc3_compressor(fc3, factor_dir) -> None:
    spec, network = fc3
    compressor = Compressor(network, spec, cache_dir=factor_dir)
    assert compressor.layer_names == ["fc1", "fc2", "fc3"] and compressor.dim == 3
    assert compressor.decomposed == ["fc1", "fc2", "fc3"] and compressor.loaded == []
    theta = [0.2, 0.5, 0.9]
    compressed = compressor.compress(theta)
    assert all(isinstance(r, int) for r in compressed.ranks)
    for record, value in zip(compressed.layers, theta):
        assert record.ratio == record.params_after / record.params_before
        assert record.ratio <= value  # within one rank step below theta (see tests/lowrank/test_ranks.py)
        layer = network.get_submodule(record.name)
        one_step_up = record.params_after + layer.in_features + layer.out_features
        assert one_step_up > value * record.params_before or record.ranks == record.full_ranks
    total_before = sum(r.params_before for r in compressed.layers)
    assert compressed.ratio == pytest.approx(sum(r.params_after for r in compressed.layers) / total_before)
    assert compressed.model_ratio == pytest.approx(compressed.ratio)  # FC3's parameters are all in fc1-3
    x = torch.randn(4, 1, 28, 28)
    assert compressed.module(x).shape == (4, 10)
    macs_ratio = _macs(compressed.module, spec.input_size) / _macs(network, spec.input_size)
    assert macs_ratio == pytest.approx(compressed.flops_ratio)
    _one_line_error(lambda: compressor.compress([0.5, 0.5]), "theta has 2 values", "3 layers")
    _one_line_error(lambda: Compressor(network, spec, method="vh", cache_dir=False), "layer 'fc1'", "vh factorizes")


def test_second_compressor_loads_cached_factors(fc3, tmp_path: Path) -> None:
    spec, network = fc3
    first = Compressor(network, spec, cache_dir=tmp_path)
    assert first.decomposed == first.layer_names and len(list(tmp_path.glob("svd-*.pt"))) == 3
    second = Compressor(network, spec, cache_dir=tmp_path)
    assert second.decomposed == [] and second.loaded == second.layer_names
    x = torch.randn(2, 1, 28, 28)
    theta = [0.3, 0.3, 0.3]
    assert torch.equal(first.compress(theta).module(x), second.compress(theta).module(x))


def test_compression_leaves_original_untouched(fc3) -> None:
    spec, network = fc3
    compressor = Compressor(network, spec, cache_dir=False)
    before = {name: p.clone() for name, p in network.named_parameters()}
    compressed = compressor.compress([0.1, 0.1, 0.1])
    compressed.module.train()
    assert isinstance(network.fc1, nn.Linear) and not network.training and not network.fc1.training
    assert isinstance(compressed.module.fc1, nn.Sequential)
    assert all(torch.equal(p, before[name]) for name, p in network.named_parameters())


def test_converting_or_hooking_the_compressed_network_leaves_the_original_alone() -> None:
    spec = spec_from_dict(_spec_data(), "fc1-fc2")  # fc3 is not compressed: shared with the original
    network = build_network(spec, weights="random")
    compressed = Compressor(network, spec, cache_dir=False).compress([0.1, 0.1])
    calls = []
    compressed.module.fc3.register_forward_hook(lambda *args: calls.append(1))
    compressed.module.double()
    x = torch.randn(2, 1, 28, 28)
    assert network.fc3.weight.dtype == torch.float32 and network(x).dtype == torch.float32
    assert calls == []  # the hook belongs to the compressed network only
    assert compressed.module(x.double()).dtype == torch.float64 and calls == [1]


class TiedNet(nn.Module):
    """A conv net in float64 with a weight tied between two layers and a layer called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)  # called twice
        self.head = nn.Linear(8, 8)
        self.tied = nn.Linear(8, 8)
        self.tied.weight = self.head.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv2(self.conv1(x))).mean(dim=(2, 3))
        return self.tied(self.head(x))


def tied_net() -> nn.Module:
    return TiedNet().double()


def test_ratios_count_tied_weights_once_and_every_call_of_a_layer() -> None:
    spec = spec_from_dict(
        _spec_data(builder=f"{__name__}:tied_net", input_size=[3, 6, 6], method="tucker2",
                   layers=[{"name": "conv2"}, {"name": "head", "method": "svd"}]),
        "tied",
    )  # fmt: skip
    network = build_network(spec, weights="random", trust_code=True)
    compressed = Compressor(network, spec, cache_dir=False).compress([0.3, 0.5])
    unique = lambda m: sum({p.data_ptr(): p.numel() for p in m.parameters()}.values())  # noqa: E731
    assert compressed.model_ratio == pytest.approx(unique(compressed.module) / unique(network))
    # tied.weight keeps the head's original weight alive: only the head's bias is saved
    saved = network.head.bias.numel() + network.conv2.weight.numel() + network.conv2.bias.numel()
    factors = sum(p.numel() for m in (compressed.module.head, compressed.module.conv2) for p in m.parameters())
    assert unique(compressed.module) == unique(network) - saved + factors
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    assert compressed.module(x).dtype == torch.float64  # a float64 conv net compresses and runs
    macs = lambda m: _macs(m, spec.input_size, torch.float64)  # noqa: E731
    assert compressed.flops_ratio == pytest.approx(macs(compressed.module) / macs(network))


def test_vgg16_and_resnet50_dimensions_and_forward(vgg16, resnet50) -> None:
    x = torch.randn(1, 3, 64, 64)
    for (spec, network, compressor), d in ((vgg16, 13), (resnet50, 16)):
        assert compressor.dim == d and compressor.bounds.shape == (2, d)
        theta = compressor.bounds[0] + 0.3 * (compressor.bounds[1] - compressor.bounds[0])
        compressed = compressor.compress(theta)
        assert all(isinstance(r, tuple) and len(r) == 2 for r in compressed.ranks)
        assert 0 < compressed.ratio < 1 and compressed.ratio < compressed.model_ratio < 1
        assert 0 < compressed.flops_ratio < 1
        with torch.no_grad():
            out = compressed.module(x)
        assert out.shape == (1, 1000) and torch.isfinite(out).all()
        assert _macs(compressed.module, spec.input_size) / _macs(network, spec.input_size) == pytest.approx(
            compressed.flops_ratio
        )
        params = sum(p.numel() for p in compressed.module.parameters())
        assert params / sum(p.numel() for p in network.parameters()) == pytest.approx(compressed.model_ratio)


def test_full_ranks_reproduce_vgg16_and_resnet50(vgg16, resnet50) -> None:
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 64)
    for _, network, compressor in (vgg16, resnet50):
        full = compressor.build([factors.max_ranks for factors in compressor.factors])
        with torch.no_grad():
            torch.testing.assert_close(full.module(x), network(x), rtol=1e-3, atol=1e-4)


def test_theta_one_keeps_the_original_layers_exactly(fc3, vgg16, resnet50) -> None:
    """The top of the box leaves every layer unchanged: same module, exact outputs, ratios exactly 1."""
    spec, network = fc3
    cases = [(spec, network, Compressor(network, spec, cache_dir=False), torch.randn(3, 1, 28, 28)),
             *((*case, torch.randn(1, 3, 64, 64)) for case in (vgg16, resnet50))]
    for spec, network, compressor, x in cases:
        compressed = compressor.compress(torch.ones(compressor.dim))
        assert compressed.ratio == compressed.model_ratio == compressed.flops_ratio == 1.0
        assert all(r.kept and r.ranks == r.full_ranks and r.ratio == 1.0 and r.macs_after == r.macs_before
                   for r in compressed.layers)
        for layer in spec.layers:  # the original module type, viewing the original's storage
            kept, original = compressed.module.get_submodule(layer.name), network.get_submodule(layer.name)
            assert type(kept) is type(original) and kept.weight.data_ptr() == original.weight.data_ptr()
        with torch.no_grad():
            assert torch.equal(compressed.module(x), network(x))


def test_only_the_layers_at_the_top_are_kept(fc3, tmp_path: Path) -> None:
    spec, network = fc3
    compressor = Compressor(network, spec, cache_dir=False)
    compressed = compressor.compress([0.3, 1.0, 0.999])
    assert [r.kept for r in compressed.layers] == [False, True, False]
    assert isinstance(compressed.module.fc1, nn.Sequential) and isinstance(compressed.module.fc2, nn.Linear)
    assert compressed.layers[2].ranks == 9 and compressed.layers[2].ratio < 1  # just below the top: factorized, smaller
    save_compressed(tmp_path / "out", spec, compressed)  # a kept layer round-trips as itself
    loaded = load_compressed(tmp_path / "out")
    x = torch.randn(2, 1, 28, 28)
    assert isinstance(loaded.fc2, nn.Linear) and torch.equal(loaded(x), compressed.module(x))
    # "plain": fc2 at rank 500 of 1000 x 1000 is as large as the layer, fc3 at its full rank larger: both kept
    plain = Compressor(network, spec, scheme="plain", cache_dir=False).compress([0.5, 0.4, 1.0])
    assert [r.kept for r in plain.layers] == [False, False, True] and plain.layers[2].params_after == 10010
    halves = Compressor(network, spec, scheme="plain", cache_dir=False).compress([0.5, 0.5, 0.5])
    assert [r.kept for r in halves.layers] == [False, True, False]
    refined = compressor.build(compressed.ranks, refine=True)
    assert isinstance(refined.module.fc2, nn.Linear)


def test_cached_networks_second_compressor_does_not_decompose(vgg16, factor_dir) -> None:
    spec, network, first = vgg16
    second = Compressor(network, spec, cache_dir=factor_dir)
    assert second.decomposed == [] and second.loaded == first.layer_names


def test_vh_method_override(vgg16) -> None:
    spec, network, _ = vgg16
    subset = dataclasses.replace(spec, layers=spec.layers[:3])
    compressor = Compressor(network, subset, method="vh", cache_dir=False)
    compressed = compressor.compress([0.3, 0.3, 0.3])
    assert all(isinstance(r, int) for r in compressed.ranks)
    assert [m.kernel_size for m in compressed.module.features[2]] == [(3, 1), (1, 3)]
    assert compressed.module(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_plain_scheme(fc3) -> None:
    spec, network = fc3
    compressor = Compressor(network, spec, scheme="plain", cache_dir=False)
    assert compressor.ranks([0.5, 0.25, 0.01]) == [392, 250, 1]
    _one_line_error(lambda: Compressor(network, spec, scheme="energy", cache_dir=False), "unknown rank scheme")


# ----------------------------------------------------------------------------- export


def test_export_round_trip_fc3(fc3, tmp_path: Path) -> None:
    spec, network = fc3
    compressed = Compressor(network, spec, cache_dir=False).compress([0.2, 0.4, 0.6])
    json_path = save_compressed(tmp_path / "out", spec, compressed)
    assert json_path == tmp_path / "out" / "compressed.json" and (tmp_path / "out" / "compressed.pth").is_file()
    document = json.loads(json_path.read_text())
    assert [layer["ranks"] for layer in document["layers"]] == compressed.ranks
    loaded = load_compressed(tmp_path / "out")
    x = torch.randn(5, 1, 28, 28)
    assert torch.equal(loaded(x), compressed.module(x)) and not loaded.training
    document["layers"][0]["ranks"] += 1
    json_path.write_text(json.dumps(document))
    _one_line_error(lambda: load_compressed(json_path), "does not fit the saved ranks")


def test_export_round_trip_resnet50(resnet50, tmp_path: Path) -> None:
    spec, _, compressor = resnet50
    compressed = compressor.compress(torch.full((16,), 0.25))
    save_compressed(tmp_path / "resnet.pth", spec, compressed)
    loaded = load_compressed(tmp_path / "resnet.json")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), compressed.module(x))
    assert isinstance(loaded.layer2[0].conv2, nn.Sequential) and loaded.layer2[0].conv2[1].stride == (2, 2)


def test_check_layers_returns_modules(fc3) -> None:
    spec, network = fc3
    assert check_layers(network, spec) == [network.fc1, network.fc2, network.fc3]


def _macs(module: nn.Module, input_size, dtype: torch.dtype = torch.float32) -> int:
    """Conv2d/Linear multiply-accumulates for one input, counted from shapes on the meta device."""
    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        total += output[0].numel() * layer.weight[0].numel()

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    state = {n: torch.empty_like(t, device="meta") for n, t in [*module.named_parameters(), *module.named_buffers()]}
    functional_call(module, state, (torch.empty(1, *input_size, device="meta", dtype=dtype),))
    for handle in handles:
        handle.remove()
    return total


def test_preprocessing_follows_the_torchvision_weights():
    from torchvision.models import ResNet50_Weights

    from compressbo.compression.build import preprocessing

    resnet = load_spec("resnet50")
    v2 = ResNet50_Weights.IMAGENET1K_V2.transforms()
    assert preprocessing(resnet, "IMAGENET1K_V2").resize_size == v2.resize_size == [232]
    assert preprocessing(resnet, "random").resize_size == [256]  # the spec default, V1
    assert preprocessing(load_spec("fc3")) is None
