"""Save a compressed network (state dict + ranks) and load it back as a plain ``nn.Module``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from compressbo.exceptions import UserInputError
from compressbo.compression.lowrank import (
    check_ranks,
    empty_factorized,
)
from compressbo.compression.spec import _EXPORT_FORMAT, NetworkSpec, spec_from_dict
from compressbo.compression.build import build_network
from compressbo.compression.compressor import CompressedNetwork

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass


# ----------------------------------------------------------------------------- export


def _export_paths(target: str | os.PathLike) -> tuple[Path, Path]:
    """``(state dict .pth, ranks .json)`` for a ``.pth``/``.json`` path or a directory."""
    path = Path(target)
    if path.suffix in (".pth", ".json"):
        return path.with_suffix(".pth"), path.with_suffix(".json")
    return path / "compressed.pth", path / "compressed.json"


def save_compressed(directory_or_path: str | os.PathLike, spec: NetworkSpec, compressed: CompressedNetwork) -> Path:
    """Write a compressed network as a state dict (``.pth``) plus its spec and ranks (``.json``).

    Args:
        directory_or_path: A directory (gets ``compressed.pth`` and ``compressed.json``) or a
            ``.pth`` path (the JSON goes next to it).
        spec: The spec the network was compressed from (with the methods actually used).
        compressed: The compressed network.

    Returns:
        The JSON file's path (what :func:`load_compressed` takes).
    """
    weights_path, json_path = _export_paths(directory_or_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(compressed.module.state_dict(), weights_path)
    methods = {record.name: record.method for record in compressed.layers}
    spec_data = spec.to_dict()
    for layer in spec_data["layers"]:
        layer["method"] = methods.get(layer["name"], layer["method"])
    document = {
        "format": _EXPORT_FORMAT,
        "spec_name": spec.name,
        "spec_path": str(spec.path) if spec.path else None,
        "spec": spec_data,
        "state_dict": weights_path.name,
        "layers": [
            {
                "name": r.name,
                "method": r.method,
                "ranks": list(r.ranks) if isinstance(r.ranks, tuple) else r.ranks,
                "kept": r.kept,
            }
            for r in compressed.layers
        ],
        "ratio": compressed.ratio,
        "model_ratio": compressed.model_ratio,
        "flops_ratio": compressed.flops_ratio,
    }
    json_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return json_path


def load_compressed(path: str | os.PathLike) -> nn.Module:
    """Rebuild a network written by :func:`save_compressed` (eval mode).

    The architecture is built from the embedded spec, each compressed layer is replaced by an
    empty factorized module of the saved ranks (layers saved as ``kept`` stay the original's),
    and the state dict (``weights_only=True``) fills every parameter, so outputs match the
    saved network exactly.

    Args:
        path: The ``.json`` file, its ``.pth`` or the directory holding ``compressed.json``.
    """
    json_path = _export_paths(path)[1]
    if not json_path.is_file():
        raise UserInputError(f"{json_path} does not exist; give the .json written by save_compressed")
    document = json.loads(json_path.read_text(encoding="utf-8"))
    if document.get("format") != _EXPORT_FORMAT:
        raise UserInputError(f"{json_path} is not a compressbo compressed-network file")
    spec = spec_from_dict(document["spec"], str(json_path))
    weights_path = json_path.parent / document["state_dict"]
    network = build_network(spec, weights="random")
    for layer in document["layers"]:
        if layer.get("kept", False):
            continue  # the original layer, unchanged: its parameters are in the state dict as they are
        original = network.get_submodule(layer["name"])
        ranks = tuple(layer["ranks"]) if isinstance(layer["ranks"], list) else layer["ranks"]
        ranks = check_ranks(original, layer["method"], ranks)
        network.set_submodule(layer["name"], empty_factorized(original, layer["method"], ranks, device="meta"))
    if not weights_path.is_file():
        raise UserInputError(f"{json_path}: state dict {weights_path} does not exist")
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    try:
        network.load_state_dict(state, assign=True)
    except RuntimeError as error:
        raise UserInputError(f"{weights_path} does not fit the saved ranks: {str(error).splitlines()[0]}") from None
    return network.eval()
