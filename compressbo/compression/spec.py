"""Network specs: the TOML file that names a network, its weights, data and compressible layers.

A spec (``models/<name>.toml``) names an architecture builder, its default weights and
dataset, the input size used for FLOP counts, and the compressible layers with their
factorization and bounds::

    name = "vgg16"
    builder = "torchvision.models:vgg16"     # or "vgg16", or "package.module:function"
    weights = "IMAGENET1K_V1"                # torchvision enum name, a .pth file, "random" or "train"
    dataset = "imagenet"
    input_size = [3, 224, 224]
    method = "tucker2"                       # svd (Linear) | tucker2 | vh (Conv2d)
    bounds = [0.05, 1.0]                     # default [lo, hi] of every layer's theta
    layers = ["features.0", { name = "features.2", method = "vh", bounds = [0.1, 1.0] }]
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from compressbo.exceptions import SettingError, SpecError, SpecNotFoundError
from compressbo.compression.lowrank import (
    METHODS,
    check_method,
    SCHEMES,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


DEFAULT_BOUNDS: tuple[float, float] = (0.05, 1.0)
_SPEC_KEYS = {
    "name", "description", "builder", "builder_kwargs", "weights", "dataset",
    "input_size", "scheme", "method", "bounds", "layers",
}  # fmt: skip
_REQUIRED_KEYS = ("builder", "weights", "dataset", "input_size", "layers")
_EXPORT_FORMAT = "compressbo-compressed-1"
RANDOM_WEIGHTS_SEED = 0  # torch seed of --weights random
# spec and layer names are names, not paths: they become parts of cache file names
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def check_name(name: Any, what: str) -> str:
    """``name`` if it is a plain name (letters, digits, ``._-``, not starting with a dot).

    Raises:
        SpecError: Anything else (a path, ``..``, an empty string, spaces).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SpecError(f"{what} {name!r} is not a plain name; use letters, digits and . _ - only (no path)")
    return name


# ----------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class LayerSpec:
    """One compressible layer: its module name, factorization and ``theta`` bounds ``(lo, hi)``."""

    name: str
    method: str
    bounds: tuple[float, float]


@dataclass(frozen=True)
class NetworkSpec:
    """A network's spec, as read from ``models/<name>.toml``.

    Attributes:
        name: Spec name (the file stem unless given).
        builder: ``"module:function"`` or a torchvision model name.
        weights: Default weights: a torchvision enum name, a ``.pth`` path, ``"random"`` or
            ``"train"`` (the caller trains the network on ``dataset`` first).
        dataset: Dataset the network was trained on (``"digits"``, ``"imagenet"``, ...).
        input_size: One input's shape without the batch dimension, e.g. ``(3, 224, 224)``.
        layers: The compressible layers, in search-space order.
        scheme: Default rank scheme, ``"params"`` or ``"plain"``.
        builder_kwargs: Keyword arguments for the builder.
        description: Free text.
        path: The TOML file the spec was read from (``None`` if built in memory).
        sha256: SHA-256 of that file's bytes (``None`` if built in memory); a run records it
            and ``--resume`` checks it.
    """

    name: str
    builder: str
    weights: str
    dataset: str
    input_size: tuple[int, ...]
    layers: tuple[LayerSpec, ...]
    scheme: str = "params"
    builder_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    path: Path | None = None
    sha256: str | None = field(default=None, compare=False)

    @property
    def bounds(self) -> Tensor:
        """``2 x d`` float64 tensor of lower and upper bounds."""
        return torch.tensor([layer.bounds for layer in self.layers], dtype=torch.float64).T.contiguous()

    def with_method(self, method: str) -> NetworkSpec:
        """The same spec with every layer factorized by ``method``."""
        check_method(method)
        layers = tuple(dataclasses.replace(layer, method=method) for layer in self.layers)
        return dataclasses.replace(self, layers=layers)

    def to_dict(self) -> dict[str, Any]:
        """The spec as TOML/JSON-compatible data (:func:`spec_from_dict` reads it back)."""
        return {
            "name": self.name,
            "description": self.description,
            "builder": self.builder,
            "builder_kwargs": dict(self.builder_kwargs),
            "weights": self.weights,
            "dataset": self.dataset,
            "input_size": list(self.input_size),
            "scheme": self.scheme,
            "layers": [{"name": l.name, "method": l.method, "bounds": list(l.bounds)} for l in self.layers],
        }


def spec_from_dict(
    data: dict[str, Any], source: str = "spec", path: Path | None = None, sha256: str | None = None
) -> NetworkSpec:
    """Validate spec data (parsed TOML) and build a :class:`NetworkSpec`.

    Args:
        data: The parsed spec.
        source: How errors name the spec (its file path).
        path: The spec's file, if any.
        sha256: The SHA-256 of that file's bytes.

    Raises:
        SpecError: Unknown or missing keys, bad names, bounds, methods or layer entries.
    """
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a spec must be a table of keys, got {type(data).__name__}")
    unknown = sorted(set(data) - _SPEC_KEYS)
    if unknown:
        raise SpecError(f"{source}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_SPEC_KEYS))}")
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise SpecError(f"{source}: missing required key(s) {', '.join(missing)}")
    scheme = data.get("scheme", "params")
    if scheme not in SCHEMES:
        raise SpecError(f"{source}: scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    input_size = data["input_size"]
    if not (isinstance(input_size, list) and input_size and all(isinstance(n, int) and n > 0 for n in input_size)):
        raise SpecError(f"{source}: input_size must be a list of positive integers such as [3, 224, 224]")
    default_method = data.get("method")
    default_bounds = check_bounds(data.get("bounds", DEFAULT_BOUNDS), f"{source}: bounds")
    if not isinstance(data["layers"], list) or not data["layers"]:
        raise SpecError(f"{source}: layers must be a non-empty list of layer names or tables")
    layers = []
    for entry in data["layers"]:
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise SpecError(f"{source}: each layer must be a name or a table with a name, got {entry!r}")
        name = check_name(entry["name"], f"{source}: layer name")
        extra = sorted(set(entry) - {"name", "method", "bounds"})
        if extra:
            raise SpecError(f"{source}: layer {name!r} has unknown key(s) {', '.join(extra)}")
        method = entry.get("method", default_method)
        if method not in METHODS:
            raise SpecError(
                f"{source}: layer {name!r} needs a method from {', '.join(METHODS)} "
                f"(set 'method' for the spec or the layer), got {method!r}"
            )
        bounds = check_bounds(entry["bounds"], f"{source}: layer {name!r} bounds") if "bounds" in entry else default_bounds
        layers.append(LayerSpec(name, method, bounds))
    names = [layer.name for layer in layers]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SpecError(f"{source}: layer(s) listed twice: {', '.join(duplicates)}")
    builder_kwargs = data.get("builder_kwargs", {})
    if not isinstance(builder_kwargs, dict):
        raise SpecError(f"{source}: builder_kwargs must be a table")
    name = data.get("name") or (path.stem if path else "network")
    return NetworkSpec(
        name=check_name(name, f"{source}: spec name"),
        builder=str(data["builder"]),
        weights=str(data["weights"]),
        dataset=str(data["dataset"]),
        input_size=tuple(input_size),
        layers=tuple(layers),
        scheme=scheme,
        builder_kwargs=dict(builder_kwargs),
        description=str(data.get("description", "")),
        path=path,
        sha256=sha256,
    )


def check_bounds(value: Any, what: str, *, setting: str | None = None) -> tuple[float, float]:
    """``(lo, hi)`` with ``0 < lo < hi <= 1`` (theta is the fraction of a layer's parameters kept).

    Args:
        value: A pair.
        what: Where it comes from, for the message (``"fc3: bounds"``).
        setting: The config setting it comes from; ``None`` for a spec's own bounds.

    Raises:
        SpecError: (``SettingError`` for a setting) the pair is not such a box.
    """
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        lo, hi = float(value[0]), float(value[1])
        if 0.0 < lo < hi <= 1.0:
            return lo, hi
    error = SettingError if setting is not None else SpecError
    raise error(
        f"{what} must be [lo, hi] with 0 < lo < hi <= 1 (theta is the fraction of a layer's parameters kept), got {value!r}",
        setting=setting,
    )


def models_dirs() -> list[Path]:
    """Where spec names are looked up: ``$COMPRESSBO_MODELS`` (``os.pathsep``-separated), then
    the repository's ``models/`` (a source checkout), then ``compressbo/models`` (an installed wheel)."""
    extra = [Path(p) for p in os.environ.get("COMPRESSBO_MODELS", "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parents[1]  # the compressbo package
    return [*extra, here.parent / "models", here / "models"]


def available_specs() -> list[str]:
    """Names of the specs found in :func:`models_dirs`."""
    return sorted({path.stem for directory in models_dirs() if directory.is_dir() for path in directory.glob("*.toml")})


def load_spec(name_or_path: str | os.PathLike) -> NetworkSpec:
    """Read a spec by name (``"vgg16"``, looked up in :func:`models_dirs`) or from a TOML path.

    Raises:
        SpecError: The spec does not exist, is not a UTF-8 TOML file, or is invalid.
    """
    text = os.fspath(name_or_path)
    if text.endswith(".toml") or os.sep in text or (os.altsep and os.altsep in text) or Path(text).is_file():
        path = Path(text)
        if path.is_dir():
            raise SpecError(f"spec file {path} is a directory; give the path of a .toml spec file")
        if not path.is_file():
            raise SpecError(f"spec file {path} does not exist")
    else:
        candidates = [directory / f"{text}.toml" for directory in models_dirs()]
        path = next((candidate for candidate in candidates if candidate.is_file()), None)
        if path is None:
            raise SpecNotFoundError(
                f"no network spec named {text!r}; available: {', '.join(available_specs()) or 'none'} "
                "(or give the path of a .toml spec)"
            )
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise SpecError(f"cannot read spec file {path} ({error.strerror or error}); check its permissions") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise SpecError(f"{path}: not UTF-8 text (byte {error.start}); save the spec as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML ({error})") from None
    return spec_from_dict(data, str(path), path, hashlib.sha256(raw).hexdigest())
