"""Checkpoint files: the common forms load with ``weights_only=True``; anything else is one line."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch

from compressbo.compression.build import build_network, load_checkpoint
from compressbo.compression.spec import load_spec
from compressbo.exceptions import WeightsError


@pytest.fixture(scope="module")
def fc3():
    spec = load_spec("fc3")
    return spec, build_network(spec, "random")


class _Payload:
    """Unpickling this would write a marker file: a checkpoint that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize(
    "form",
    ["plain", "state_dict", "model_with_epoch", "ddp_prefix", "torchvision_reference"],
)
def test_common_checkpoint_forms_load_with_weights_only(form, fc3, tmp_path: Path) -> None:
    spec, network = fc3
    state = network.state_dict()
    saved = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model_with_epoch": {"model": state, "epoch": 90, "optimizer": {"lr": 0.1}},
        "ddp_prefix": {f"module.{key}": value for key, value in state.items()},
        # what torchvision's references/classification/train.py saves
        "torchvision_reference": {
            "model": state, "optimizer": {}, "lr_scheduler": {}, "epoch": 89,
            "args": argparse.Namespace(lr=0.5, epochs=90, model="fc3"),
        },
    }[form]
    path = tmp_path / "checkpoint.pth"
    torch.save(saved, path)
    loaded = build_network(spec, path)
    assert _same_weights(loaded, network)


def test_a_checkpoint_that_would_run_code_is_refused_on_one_line_without_colour(fc3, tmp_path: Path) -> None:
    spec, network = fc3
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"model": network.state_dict(), "payload": _Payload(marker)}, path)
    with pytest.raises(WeightsError) as info:
        build_network(spec, path)
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message and str(path) in message
    assert "weights_only" in message.lower() or "unpickl" in message.lower()  # the whole reason, not its first line
    assert not marker.exists()


def test_integer_weights_are_refused(fc3, tmp_path: Path) -> None:
    spec, network = fc3
    path = tmp_path / "int32.pth"
    torch.save({k: (v * 100).to(torch.int32) for k, v in network.state_dict().items()}, path)
    with pytest.raises(WeightsError, match=r"integer values for floating-point weights: fc1.weight \(torch.int32\)"):
        build_network(spec, path)


def test_a_checkpoint_without_a_state_dict_names_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "acc": 0.9}, path)
    with pytest.raises(WeightsError, match=r"holds a dict with keys \['acc', 'epoch'\], not a state dict"):
        load_checkpoint(path, "fc3")
    os.mkdir(tmp_path / "folder.pth")
    with pytest.raises(WeightsError, match="is a directory"):
        load_checkpoint(tmp_path / "folder.pth", "fc3")
