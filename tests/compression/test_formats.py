"""Export to ONNX, TorchScript and state dicts: the files reproduce PyTorch's outputs."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from compressbo.compression import Compressor, build_network, load_spec
from compressbo.compression.formats import ExportCheckError, _compare, export_network
from compressbo.compression.spec import spec_from_dict
from compressbo.exceptions import SettingError


class SmallConv(nn.Module):
    """Two 3x3 convolutions (one strided) and a classifier: room for Tucker-2 and vh."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(24)
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv2(torch.relu(self.conv1(x)))))
        return self.head(x.mean(dim=(2, 3)))


def small_conv() -> nn.Module:
    return SmallConv()


@pytest.fixture(scope="module")
def fc3_compressed():
    spec = load_spec("fc3")
    return spec, Compressor(build_network(spec, "random"), spec, cache_dir=False).compress([0.1, 0.2, 0.5]).module


@pytest.fixture(scope="module")
def conv_compressed():
    spec = spec_from_dict(
        {"builder": f"{__name__}:small_conv", "weights": "random", "dataset": "imagenet", "input_size": [3, 12, 12],
         "method": "tucker2", "layers": ["conv1", {"name": "conv2", "method": "vh"}]},
        "small",
    )  # fmt: skip
    compressed = Compressor(build_network(spec, "random", trust_code=True), spec, cache_dir=False).compress([0.4, 0.4])
    assert [r.method for r in compressed.layers] == ["tucker2", "vh"]
    return spec, compressed.module


def _onnx_outputs(path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("network", ["fc3_compressed", "conv_compressed"])
def test_onnx_matches_pytorch_under_onnx_runtime_at_batch_1_and_7(network, request, tmp_path) -> None:
    import onnx

    spec, module = request.getfixturevalue(network)
    result = export_network(module, spec.input_size, "onnx", tmp_path / "m.onnx")
    assert result.path.is_file() and result.bytes > 0 and result.max_abs_diff <= 1e-4
    model = onnx.load(str(result.path))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a symbolic (dynamic) batch dimension
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 7):  # inputs of the test's own, not the exporter's
        x = torch.randn((batch, *spec.input_size), generator=generator)
        with torch.inference_mode():
            expected = module(x).numpy()
        got = _onnx_outputs(result.path, x)
        assert got.shape == expected.shape == (batch, 10 if network == "fc3_compressed" else 5)
        assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("format", ["torchscript", "state-dict"])
def test_torchscript_and_state_dict_reload_to_the_same_network(fc3_compressed, format, tmp_path) -> None:
    spec, module = fc3_compressed
    result = export_network(module, spec.input_size, format, tmp_path / "m.pt")
    assert result.max_abs_diff == 0.0
    x = torch.randn(7, *spec.input_size)
    with torch.inference_mode():
        if format == "torchscript":
            reloaded = torch.jit.load(str(result.path))(x)
        else:
            state = torch.load(result.path, weights_only=True)
            assert state.keys() == module.state_dict().keys()
            reloaded = torch.func.functional_call(module, state, (x,))
        assert torch.equal(reloaded, module(x))


def test_unknown_format_and_a_missing_extra_are_setting_errors(fc3_compressed, tmp_path, monkeypatch) -> None:
    spec, module = fc3_compressed
    with pytest.raises(SettingError, match="unknown export format 'tflite'; choose one of onnx"):
        export_network(module, spec.input_size, "tflite", tmp_path / "m")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: import fails
    with pytest.raises(SettingError, match=r"onnxruntime.*compressbo\[export\]"):
        export_network(module, spec.input_size, "onnx", tmp_path / "m.onnx")


def test_an_output_difference_above_the_tolerance_fails() -> None:
    module = nn.Linear(4, 3)
    batches = [torch.randn(2, 4)]
    assert _compare(module, module, batches, 1e-4, "same")[0] == 0.0
    with pytest.raises(ExportCheckError, match="above the tolerance"):
        _compare(module, lambda x: module(x) + 1e-2, batches, 1e-4, "shifted")
