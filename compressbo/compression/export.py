"""Save a compressed network (state dict + ranks) and load it back as a plain ``nn.Module``.

A compressed model is two files: ``compressed.pth`` (the state dict) and ``compressed.json``
(the spec, the ranks and the state dict's SHA-256). Both are written atomically, the state
dict first, so a finished ``.json`` never names a torn ``.pth``. Loading builds the
architecture the embedded spec names only if its builder is on the allowlist of
:mod:`compressbo.compression.trust` (or ``trust_code=True``), checks the SHA-256, and reads the
weights with ``weights_only=True``: a shared compressed model runs no code of its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressbo.exceptions import SpecError, WeightsError
from compressbo.files import file_sha256, one_line, torch_save_atomic, write_json_atomic
from compressbo.compression.lowrank import (
    check_ranks,
    empty_factorized,
)
from compressbo.compression.spec import _EXPORT_FORMAT, NetworkSpec, check_name, spec_from_dict
from compressbo.compression.build import build_network
from compressbo.compression.compressor import CompressedNetwork

__all__ = ["export_paths", "load_compressed", "save_compressed", "verify_export"]


# ----------------------------------------------------------------------------- export


def export_paths(target: str | os.PathLike) -> tuple[Path, Path]:
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
    weights_path, json_path = export_paths(directory_or_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    torch_save_atomic(weights_path, compressed.module.state_dict())  # first: the .json marks a whole export
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
        "state_dict_sha256": file_sha256(weights_path),
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
    write_json_atomic(json_path, document)
    return json_path


def verify_export(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """Check a compressed model's files without building anything: the ``.json`` is whole and
    the state dict it names is there, inside its folder, with the recorded SHA-256.

    Returns:
        ``(state dict path, the .json document)``.

    Raises:
        WeightsError: A file is missing, torn or altered (the message names it).
    """
    json_path = export_paths(path)[1]
    if not json_path.is_file():
        raise WeightsError(f"{json_path} does not exist; give the .json written by save_compressed")
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"{json_path} is torn or not JSON ({one_line(str(error))}); export the model again") from None
    if not isinstance(document, dict) or document.get("format") != _EXPORT_FORMAT:
        raise WeightsError(f"{json_path} is not a compressbo compressed-network file")
    try:
        name = check_name(document.get("state_dict"), f"{json_path}: state_dict")
    except SpecError as error:
        raise WeightsError(str(error)) from None
    weights_path = json_path.parent / name
    if not weights_path.is_file():
        raise WeightsError(f"{json_path}: state dict {weights_path} does not exist; export the model again")
    expected = document.get("state_dict_sha256")
    if expected is not None and file_sha256(weights_path) != expected:
        raise WeightsError(
            f"{weights_path} is torn or altered (its SHA-256 is not the one {json_path.name} records); "
            "export the model again"
        )
    return weights_path, document


def load_compressed(path: str | os.PathLike, *, trust_code: bool = False) -> nn.Module:
    """Rebuild a network written by :func:`save_compressed` (eval mode).

    The architecture is built from the embedded spec, each compressed layer is replaced by an
    empty factorized module of the saved ranks (layers saved as ``kept`` stay the original's),
    and the state dict (``weights_only=True``) fills every parameter, so outputs match the
    saved network exactly.

    Args:
        path: The ``.json`` file, its ``.pth`` or the directory holding ``compressed.json``.
        trust_code: Import the embedded spec's builder even if it is not on the allowlist
            (torchvision models and compressbo's own architectures). A compressed model
            from elsewhere can name any ``module:function``: pass this only if you trust it.

    Raises:
        UntrustedCodeError: The builder is not on the allowlist; nothing was imported.
        WeightsError: Missing, torn or altered files, or weights that do not fit the ranks.
    """
    weights_path, document = verify_export(path)
    json_path = export_paths(path)[1]
    try:
        spec = spec_from_dict(document["spec"], str(json_path))
        layers = [(layer["name"], layer["method"], layer["ranks"], layer.get("kept", False)) for layer in document["layers"]]
    except (KeyError, TypeError) as error:
        raise WeightsError(f"{json_path} is incomplete ({type(error).__name__}: {error}); export the model again") from None
    network = build_network(spec, weights="random", trust_code=trust_code)
    for name, method, ranks, kept in layers:
        if kept:
            continue  # the original layer, unchanged: its parameters are in the state dict as they are
        original = network.get_submodule(name)
        ranks = tuple(ranks) if isinstance(ranks, list) else ranks
        ranks = check_ranks(original, method, ranks)
        network.set_submodule(name, empty_factorized(original, method, ranks, device="meta"))
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"cannot read {weights_path}: {one_line(str(error))}; export the model again") from None
    try:
        network.load_state_dict(state, assign=True)
    except RuntimeError as error:
        raise WeightsError(f"{weights_path} does not fit the saved ranks: {str(error).splitlines()[0]}") from None
    return network.eval()
