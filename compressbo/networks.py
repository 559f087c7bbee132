"""Network specs, builders and weights, and the compressor that turns ``theta`` into a network.

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

:class:`Compressor` decomposes every listed layer once (or loads the factors from the disk
cache) and then builds :class:`CompressedNetwork` objects for any ``theta`` by truncation.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .errors import UserInputError
from .lowrank import (
    METHODS,
    SCHEMES,
    FactorCache,
    LayerFactors,
    Ranks,
    check_ranks,
    empty_factorized,
    factorization_problem,
    factorized_macs,
    full_macs,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "DEFAULT_BOUNDS",
    "CompressedNetwork",
    "Compressor",
    "LayerRecord",
    "LayerSpec",
    "NetworkSpec",
    "available_specs",
    "build_network",
    "check_layers",
    "checkpoint_path",
    "load_compressed",
    "load_spec",
    "parameter_dtype",
    "models_dirs",
    "preprocessing",
    "replace_layers",
    "save_compressed",
    "spec_from_dict",
]

DEFAULT_BOUNDS: tuple[float, float] = (0.05, 1.0)
_SPEC_KEYS = {
    "name", "description", "builder", "builder_kwargs", "weights", "dataset",
    "input_size", "scheme", "method", "bounds", "layers",
}  # fmt: skip
_REQUIRED_KEYS = ("builder", "weights", "dataset", "input_size", "layers")
_EXPORT_FORMAT = "compressbo-compressed-1"
RANDOM_WEIGHTS_SEED = 0  # torch seed of --weights random


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

    @property
    def bounds(self) -> Tensor:
        """``2 x d`` float64 tensor of lower and upper bounds."""
        return torch.tensor([layer.bounds for layer in self.layers], dtype=torch.float64).T.contiguous()

    def with_method(self, method: str) -> NetworkSpec:
        """The same spec with every layer factorized by ``method``."""
        if method not in METHODS:
            raise UserInputError(f"unknown factorization method {method!r}; choose one of {', '.join(METHODS)}")
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


def spec_from_dict(data: dict[str, Any], source: str = "spec", path: Path | None = None) -> NetworkSpec:
    """Validate spec data (parsed TOML) and build a :class:`NetworkSpec`.

    Args:
        data: The parsed spec.
        source: How errors name the spec (its file path).
        path: The spec's file, if any.

    Raises:
        UserInputError: Unknown or missing keys, bad bounds, methods or layer entries.
    """
    unknown = sorted(set(data) - _SPEC_KEYS)
    if unknown:
        raise UserInputError(f"{source}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_SPEC_KEYS))}")
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise UserInputError(f"{source}: missing required key(s) {', '.join(missing)}")
    scheme = data.get("scheme", "params")
    if scheme not in SCHEMES:
        raise UserInputError(f"{source}: scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    input_size = data["input_size"]
    if not (isinstance(input_size, list) and input_size and all(isinstance(n, int) and n > 0 for n in input_size)):
        raise UserInputError(f"{source}: input_size must be a list of positive integers such as [3, 224, 224]")
    default_method = data.get("method")
    default_bounds = _bounds(data.get("bounds", DEFAULT_BOUNDS), f"{source}: bounds")
    if not isinstance(data["layers"], list) or not data["layers"]:
        raise UserInputError(f"{source}: layers must be a non-empty list of layer names or tables")
    layers = []
    for entry in data["layers"]:
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise UserInputError(f"{source}: each layer must be a name or a table with a name, got {entry!r}")
        name = entry["name"]
        extra = sorted(set(entry) - {"name", "method", "bounds"})
        if extra:
            raise UserInputError(f"{source}: layer {name!r} has unknown key(s) {', '.join(extra)}")
        method = entry.get("method", default_method)
        if method not in METHODS:
            raise UserInputError(
                f"{source}: layer {name!r} needs a method from {', '.join(METHODS)} "
                f"(set 'method' for the spec or the layer), got {method!r}"
            )
        bounds = _bounds(entry["bounds"], f"{source}: layer {name!r} bounds") if "bounds" in entry else default_bounds
        layers.append(LayerSpec(name, method, bounds))
    names = [layer.name for layer in layers]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserInputError(f"{source}: layer(s) listed twice: {', '.join(duplicates)}")
    builder_kwargs = data.get("builder_kwargs", {})
    if not isinstance(builder_kwargs, dict):
        raise UserInputError(f"{source}: builder_kwargs must be a table")
    return NetworkSpec(
        name=str(data.get("name") or (path.stem if path else "network")),
        builder=str(data["builder"]),
        weights=str(data["weights"]),
        dataset=str(data["dataset"]),
        input_size=tuple(input_size),
        layers=tuple(layers),
        scheme=scheme,
        builder_kwargs=dict(builder_kwargs),
        description=str(data.get("description", "")),
        path=path,
    )


def _bounds(value: Any, what: str) -> tuple[float, float]:
    """``(lo, hi)`` with ``0 < lo < hi <= 1``."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        lo, hi = float(value[0]), float(value[1])
        if 0.0 < lo < hi <= 1.0:
            return lo, hi
    raise UserInputError(f"{what} must be [lo, hi] with 0 < lo < hi <= 1, got {value!r}")


def models_dirs() -> list[Path]:
    """Where spec names are looked up: ``$COMPRESSBO_MODELS`` (``os.pathsep``-separated), then
    the repository's ``models/`` (a source checkout), then ``compressbo/models`` (an installed wheel)."""
    extra = [Path(p) for p in os.environ.get("COMPRESSBO_MODELS", "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parent
    return [*extra, here.parent / "models", here / "models"]


def available_specs() -> list[str]:
    """Names of the specs found in :func:`models_dirs`."""
    return sorted({path.stem for directory in models_dirs() if directory.is_dir() for path in directory.glob("*.toml")})


def load_spec(name_or_path: str | os.PathLike) -> NetworkSpec:
    """Read a spec by name (``"vgg16"``, looked up in :func:`models_dirs`) or from a TOML path.

    Raises:
        UserInputError: The spec does not exist or is invalid.
    """
    text = os.fspath(name_or_path)
    if text.endswith(".toml") or os.sep in text or (os.altsep and os.altsep in text) or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise UserInputError(f"spec file {path} does not exist")
    else:
        candidates = [directory / f"{text}.toml" for directory in models_dirs()]
        path = next((candidate for candidate in candidates if candidate.is_file()), None)
        if path is None:
            raise UserInputError(
                f"no network spec named {text!r}; available: {', '.join(available_specs()) or 'none'} "
                "(or give the path of a .toml spec)"
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise UserInputError(f"{path}: not valid TOML ({error})") from None
    return spec_from_dict(data, str(path), path)


# ----------------------------------------------------------------------------- networks


def _builder(spec: NetworkSpec) -> Callable[..., nn.Module]:
    """The architecture builder named by ``spec.builder``."""
    module_name, _, function_name = spec.builder.rpartition(":")
    if not module_name:
        import torchvision.models

        try:
            return torchvision.models.get_model_builder(function_name)
        except ValueError:
            raise UserInputError(
                f"{spec.name}: builder {spec.builder!r} is not a torchvision model name; "
                "use a torchvision name such as 'vgg16' or 'package.module:function'"
            ) from None
    try:
        return getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError):
        raise UserInputError(f"{spec.name}: cannot import builder {spec.builder!r}; check 'module:function'") from None


def _is_weights_file(weights: str) -> bool:
    return weights.endswith((".pth", ".pt")) or os.sep in weights or Path(weights).is_file()


def _torchvision_weights(spec: NetworkSpec, builder: Callable[..., nn.Module], weights: str) -> Any:
    """The torchvision weights enum member named ``weights`` (e.g. ``IMAGENET1K_V1``)."""
    import torchvision.models

    try:
        enum = torchvision.models.get_model_weights(builder)
    except (ValueError, KeyError, AttributeError):
        raise UserInputError(
            f"{spec.name}: builder {spec.builder!r} has no torchvision weights named {weights!r}; "
            "pass a .pth state dict file or 'random'"
        ) from None
    member = weights.rpartition(".")[2]
    if member not in enum.__members__:
        raise UserInputError(
            f"{spec.name}: unknown weights {weights!r}; choose one of {', '.join(enum.__members__)}, "
            "a .pth file or 'random'"
        )
    return enum[member]


def preprocessing(spec: NetworkSpec, weights: str | os.PathLike | None = None) -> Callable | None:
    """The eval preprocessing of the torchvision weights (``weights.transforms()``), or ``None``.

    ``weights`` (a torchvision weights name) wins; with ``"random"``, a ``.pth`` file or
    ``None``, the spec's default weights name the preprocessing the architecture was trained
    with. ``None`` when neither is a torchvision weights name (e.g. FC3).
    """
    import torchvision.models

    try:
        enum = torchvision.models.get_model_weights(_builder(spec))
    except (UserInputError, ValueError, KeyError, AttributeError):
        return None
    for name in (weights, spec.weights):
        member = os.fspath(name).rpartition(".")[2] if name is not None else None
        if member in enum.__members__:
            return enum[member].transforms()
    return None


def checkpoint_path(weights: Any) -> Path:
    """Where torchvision looks for a weights enum's checkpoint: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _load_state_dict(network: nn.Module, path: Path, what: str) -> None:
    """Load a ``.pth`` state dict (``weights_only=True``) into ``network``, with clear errors."""
    if path.is_dir():
        raise UserInputError(f"{what}: --weights {path} is a directory; pass the .pth state dict file in it")
    if not path.is_file():
        raise UserInputError(f"{what}: weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        message = f"{what}: cannot read weights file {path} as a state dict ({error})"
        raise UserInputError(message.split("\n")[0]) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserInputError(f"{what}: {path} holds a {type(state).__name__}, not a state dict")
    try:
        result = network.load_state_dict(state, strict=False)
    except RuntimeError as error:
        detail = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise UserInputError(f"{what}: {path} does not fit the architecture: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        raise UserInputError(
            f"{what}: {path} does not fit the architecture: missing keys {result.missing_keys[:3]}, "
            f"unexpected keys {result.unexpected_keys[:3]}"
        )


def build_network(spec: NetworkSpec, weights: str | os.PathLike | None = None) -> nn.Module:
    """Build the spec's architecture with weights, in eval mode, and check its layers.

    Args:
        spec: The network spec.
        weights: ``None`` for ``spec.weights``; ``"random"``; a torchvision weights enum name
            (the checkpoint must already be in ``$TORCH_HOME/hub/checkpoints``: nothing is
            downloaded); or a ``.pth`` state dict path. ``"train"`` is refused: train first
            (``compressbo.training``) and pass the resulting file.

    Raises:
        UserInputError: Unknown builder or weights, missing checkpoint or file, mismatched keys,
            or a spec layer that is absent or cannot take its factorization.
    """
    weights = os.fspath(weights) if weights is not None else spec.weights
    builder = _builder(spec)
    if weights == "train":
        raise UserInputError(
            f"{spec.name} has no pretrained weights: train it on {spec.dataset} first "
            "(compressbo.training) and pass the resulting .pth file"
        )
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)  # one random network per spec: runs and resumes agree
            network = _built(builder(**spec.builder_kwargs), spec)
    elif _is_weights_file(weights):
        path = Path(weights).expanduser()
        if weights == spec.weights and not path.is_absolute() and spec.path is not None and not path.exists():
            path = spec.path.parent / path  # a spec's own weights path is relative to the spec
        network = _built(builder(**spec.builder_kwargs), spec)
        _load_state_dict(network, path, spec.name)
    else:
        member = _torchvision_weights(spec, builder, weights)
        checkpoint = checkpoint_path(member)
        if not checkpoint.is_file():
            raise UserInputError(
                f"{spec.name}: weights {weights} are not available offline; put {checkpoint.name} "
                f"(from {member.url}) in {checkpoint.parent}, or pass a local .pth state dict"
            )
        try:
            network = builder(weights=member, **spec.builder_kwargs)
        except Exception as error:
            raise UserInputError(f"{spec.name}: cannot load {checkpoint} ({error})".split("\n")[0]) from None
        network = _built(network, spec)
    for name, tensor in network.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserInputError(f"{spec.name}: weight {name} holds NaN or infinite values; pass trained, finite weights")
    check_layers(network, spec)
    return network.eval()


def _built(network: Any, spec: NetworkSpec) -> nn.Module:
    """``network`` if the spec's builder returned a module; a one-line UserInputError if not."""
    if not isinstance(network, nn.Module):
        raise UserInputError(
            f"{spec.name}: builder {spec.builder!r} returned a {type(network).__name__}, not a torch.nn.Module"
        )
    return network


def check_layers(network: nn.Module, spec: NetworkSpec) -> list[nn.Module]:
    """The spec's layers as modules of ``network``; one-line UserInputError naming a bad layer."""
    modules = dict(network.named_modules())
    layers = []
    for layer in spec.layers:
        module = modules.get(layer.name)
        if module is None or not layer.name:
            close = difflib.get_close_matches(layer.name, [n for n, m in modules.items() if _is_compressible(m)], 3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UserInputError(f"{spec.name}: layer '{layer.name}' does not exist in the network{hint}")
        problem = factorization_problem(module, layer.method)
        if problem is not None:
            raise UserInputError(f"{spec.name}: layer '{layer.name}' cannot be compressed: {problem}")
        layers.append(module)
    return layers


def _is_compressible(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or isinstance(module, nn.Conv2d) and module.groups == 1


# ----------------------------------------------------------------------------- compression


@dataclass(frozen=True)
class LayerRecord:
    """What happened to one compressible layer.

    Attributes:
        name: Module name.
        method: ``"svd"``, ``"tucker2"`` or ``"vh"``.
        full_ranks: Full rank(s) of the factorization.
        ranks: Chosen rank(s).
        params_before: Parameters of the original layer.
        params_after: Parameters of the replacement.
        ratio: ``params_after / params_before``.
        macs_before: Multiply-accumulates of the original layer for ``spec.input_size``.
        macs_after: Multiply-accumulates of the replacement.
    """

    name: str
    method: str
    full_ranks: Ranks
    ranks: Ranks
    params_before: int
    params_after: int
    ratio: float
    macs_before: int
    macs_after: int


@dataclass(frozen=True)
class CompressedNetwork:
    """A compressed network and its compression figures.

    Attributes:
        module: Plain ``nn.Module`` in eval mode. Layers that were not replaced SHARE their
            parameters with the original network: ``copy.deepcopy`` it before fine-tuning.
        ranks: Rank(s) per compressible layer (``int`` or ``(R_out, R_in)``).
        ratio: Parameters of the compressed layers / the same layers originally (the objective's ratio).
        model_ratio: Parameters of the whole compressed model / the original model.
        flops_ratio: Conv/Linear multiply-accumulates of the whole model for ``spec.input_size``,
            compressed / original.
        layers: Per-layer records.
    """

    module: nn.Module
    ranks: list[Ranks]
    ratio: float
    model_ratio: float
    flops_ratio: float
    layers: tuple[LayerRecord, ...]


class Compressor:
    """Turns ``theta`` (one continuous parameter per compressible layer) into compressed networks.

    Every layer is decomposed once (or its factors are read from the disk cache, keyed by
    the weights' hash); :meth:`compress` and :meth:`build` then only truncate the factors.

    Args:
        network: The network (as returned by :func:`build_network`).
        spec: Its spec.
        scheme: Rank scheme (``"params"`` or ``"plain"``); ``None`` for ``spec.scheme``.
        method: Factorization for all layers (e.g. ``"vh"`` for VGG-16); ``None`` for the spec's.
        cache_dir: Factor cache directory; ``None`` for ``factors/`` in :func:`compressbo.files.user_cache_dir`,
            ``False`` for no disk cache.

    Attributes:
        decomposed: Names of the layers whose factors were computed by this constructor.
        loaded: Names of the layers whose factors came from the disk cache.
    """

    def __init__(
        self,
        network: nn.Module,
        spec: NetworkSpec,
        *,
        scheme: str | None = None,
        method: str | None = None,
        cache_dir: str | os.PathLike | None | bool = None,
    ) -> None:
        self.spec = spec.with_method(method) if method is not None else spec
        self.scheme = scheme or self.spec.scheme
        if self.scheme not in SCHEMES:
            raise UserInputError(f"unknown rank scheme {self.scheme!r}; choose one of {', '.join(SCHEMES)}")
        self.network = network
        modules = check_layers(network, self.spec)
        cache = FactorCache(cache_dir)
        self.factors: list[LayerFactors] = []
        self.decomposed: list[str] = []
        self.loaded: list[str] = []
        for layer, module in zip(self.spec.layers, modules):
            computed = cache.computed
            self.factors.append(cache.get(module, layer.method))
            (self.decomposed if cache.computed > computed else self.loaded).append(layer.name)
        self._io = _io_sizes(network, self.spec)
        for layer, module in zip(self.spec.layers, modules):
            if module not in self._io:
                raise UserInputError(
                    f"{self.spec.name}: layer '{layer.name}' is not called by the network's forward pass; "
                    "compress only layers the network uses"
                )
        self._total_params = _unique_params(network)
        self._total_macs = sum(
            _positions(out_hw) * m.weight.numel() for m, calls in self._io.items() for _, out_hw in calls
        )

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.spec.layers]

    @property
    def dim(self) -> int:
        """Number of compressible layers (the search space's dimension ``d``)."""
        return len(self.spec.layers)

    @property
    def bounds(self) -> Tensor:
        """``2 x d`` float64 tensor of per-layer ``theta`` bounds."""
        return self.spec.bounds

    def ranks(self, theta: Sequence[float] | Tensor) -> list[Ranks]:
        """Integer rank(s) per layer for ``theta`` (``d``), under the compressor's scheme."""
        values = torch.as_tensor(theta, dtype=torch.float64).reshape(-1).tolist()
        if len(values) != self.dim:
            raise UserInputError(f"theta has {len(values)} values but {self.spec.name} has {self.dim} layers")
        return [factors.ranks(value, self.scheme) for factors, value in zip(self.factors, values)]

    def compress(self, theta: Sequence[float] | Tensor) -> CompressedNetwork:
        """The compressed network for ``theta`` (``d``)."""
        return self.build(self.ranks(theta))

    @property
    def refinable(self) -> bool:
        """Whether :meth:`build` with ``refine=True`` can differ (some layer is Tucker-2)."""
        return any(factors.method == "tucker2" for factors in self.factors)

    def build(self, ranks: Sequence[Ranks], *, refine: bool = False) -> CompressedNetwork:
        """The compressed network at explicit per-layer ranks.

        Args:
            ranks: Rank(s) per compressible layer.
            refine: Refine the Tucker-2 layers' factors by HOOI (seconds per network: for the
                final model, not the search loop). Same ranks, same parameter counts.
        """
        if len(ranks) != self.dim:
            raise UserInputError(f"got {len(ranks)} ranks but {self.spec.name} has {self.dim} layers")
        replacements, records = {}, []
        for spec, factors, layer_ranks in zip(self.spec.layers, self.factors, ranks):
            layer_ranks = check_ranks(factors.layer, factors.method, layer_ranks)
            replacements[spec.name] = factors.build(layer_ranks, refine=refine)
            calls = self._io[factors.layer]
            before, after = factors.full_params, factors.params(layer_ranks)
            records.append(
                LayerRecord(
                    name=spec.name,
                    method=factors.method,
                    full_ranks=factors.max_ranks,
                    ranks=layer_ranks,
                    params_before=before,
                    params_after=after,
                    ratio=after / before,
                    macs_before=sum(full_macs(factors.geometry, out_hw) for _, out_hw in calls),
                    macs_after=sum(
                        factorized_macs(factors.geometry, factors.method, layer_ranks, in_hw, out_hw)
                        for in_hw, out_hw in calls
                    ),
                )
            )
        params_before = sum(r.params_before for r in records)
        params_after = sum(r.params_after for r in records)
        macs_delta = sum(r.macs_after - r.macs_before for r in records)
        module = replace_layers(self.network, replacements).eval()
        return CompressedNetwork(
            module=module,
            ranks=[r.ranks for r in records],
            ratio=params_after / params_before,
            model_ratio=_unique_params(module) / self._total_params,
            flops_ratio=(self._total_macs + macs_delta) / self._total_macs,
            layers=tuple(records),
        )


def _positions(hw: tuple[int, int]) -> int:
    return hw[0] * hw[1]


def parameter_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module``'s first floating-point parameter (float32 if none): its inputs' dtype."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


def _unique_params(module: nn.Module) -> int:
    """Parameters of ``module``, each storage counted once (tied weights, shared aliases)."""
    return sum({p.data_ptr(): p.numel() for p in module.parameters()}.values())


def _io_sizes(network: nn.Module, spec: NetworkSpec) -> dict[nn.Module, list[tuple[tuple[int, int], tuple[int, int]]]]:
    """Input and output spatial sizes of every call of every Conv2d/Linear for one ``spec.input_size`` input.

    Runs the network once on the ``meta`` device (shapes only, no arithmetic), in the dtype of
    its parameters. A Linear's size is ``(positions, 1)``, ``positions`` being the product of
    its inner dimensions. A module called twice has two entries.
    """
    sizes: dict[nn.Module, list[tuple[tuple[int, int], tuple[int, int]]]] = {}

    def spatial(tensor: Tensor, module: nn.Module) -> tuple[int, int]:
        if isinstance(module, nn.Conv2d):
            return tuple(tensor.shape[-2:])
        return (math.prod(tensor.shape[1:-1]), 1)

    def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        sizes.setdefault(module, []).append((spatial(inputs[0], module), spatial(output, module)))

    handles = [m.register_forward_hook(record) for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    tensors = [*network.named_parameters(), *network.named_buffers()]
    state = {name: torch.empty_like(tensor, device="meta") for name, tensor in tensors}
    try:
        with torch.no_grad():
            functional_call(network, state, (torch.empty(1, *spec.input_size, device="meta", dtype=parameter_dtype(network)),))
    except Exception as error:
        raise UserInputError(
            f"{spec.name}: input_size {list(spec.input_size)} does not fit the network ({error})".split("\n")[0]
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def replace_layers(module: nn.Module, replacements: dict[str, nn.Module], prefix: str = "") -> nn.Module:
    """A structural copy of ``module`` with submodules replaced; parameters are shared, not copied.

    Args:
        module: The original network (left unchanged).
        replacements: New submodules by dotted name, e.g. ``{"features.0": nn.Sequential(...)}``.
        prefix: Dotted name of ``module`` inside the root (recursion).

    Every module object is shallow-copied: its own ``_modules``, ``_buffers`` and hook dicts,
    and its own ``nn.Parameter`` objects viewing the original's storage. So ``.train()``,
    ``.to(...)``, ``.double()``, hooks or replacing children on the copy leave the original
    untouched, and building costs microseconds per module; in-place updates of the shared
    storage (an optimizer step) do reach the original.
    """
    clone = copy.copy(module)
    clone._parameters = {name: _alias(p) for name, p in module._parameters.items()}
    clone._buffers = dict(module._buffers)
    for name, value in vars(module).items():
        if "hooks" in name and isinstance(value, dict):
            setattr(clone, name, type(value)(value))
    clone._modules = {}
    for name, child in module._modules.items():
        path = f"{prefix}{name}"
        if path in replacements:
            clone._modules[name] = replacements[path]
        elif child is not None:
            clone._modules[name] = replace_layers(child, replacements, f"{path}.")
        else:
            clone._modules[name] = None
    return clone


def _alias(parameter: nn.Parameter | None) -> nn.Parameter | None:
    """A new ``nn.Parameter`` on the same storage (``None`` stays ``None``)."""
    return None if parameter is None else nn.Parameter(parameter.data, requires_grad=parameter.requires_grad)


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
            {"name": r.name, "method": r.method, "ranks": list(r.ranks) if isinstance(r.ranks, tuple) else r.ranks}
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
    empty factorized module of the saved ranks, and the state dict (``weights_only=True``)
    fills every parameter, so outputs match the saved network exactly.

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
