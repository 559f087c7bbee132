"""Build a spec's network and load its weights (torchvision names, state-dict files, random)."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from compressbo.exceptions import SpecError, UserInputError, WeightsError
from compressbo.compression.lowrank import (
    factorization_problem,
)
from compressbo.compression.spec import RANDOM_WEIGHTS_SEED, NetworkSpec

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass


# ----------------------------------------------------------------------------- networks


# builders of compressbo's own architectures under their names before the package was laid out
# by role, so compressed models and run directories saved then still load
_RENAMED_BUILDERS = {"compressbo.architectures:fc3": "compressbo.compression.architectures:fc3"}


def _builder(spec: NetworkSpec) -> Callable[..., nn.Module]:
    """The architecture builder named by ``spec.builder``."""
    module_name, _, function_name = _RENAMED_BUILDERS.get(spec.builder, spec.builder).rpartition(":")
    if not module_name:
        import torchvision.models

        try:
            return torchvision.models.get_model_builder(function_name)
        except ValueError:
            raise SpecError(
                f"{spec.name}: builder {spec.builder!r} is not a torchvision model name; "
                "use a torchvision name such as 'vgg16' or 'package.module:function'"
            ) from None
    try:
        return getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError):
        raise SpecError(f"{spec.name}: cannot import builder {spec.builder!r}; check 'module:function'") from None


def _is_weights_file(weights: str) -> bool:
    return weights.endswith((".pth", ".pt")) or os.sep in weights or Path(weights).is_file()


def _torchvision_weights(spec: NetworkSpec, builder: Callable[..., nn.Module], weights: str) -> Any:
    """The torchvision weights enum member named ``weights`` (e.g. ``IMAGENET1K_V1``)."""
    import torchvision.models

    try:
        enum = torchvision.models.get_model_weights(builder)
    except (ValueError, KeyError, AttributeError):
        raise SpecError(
            f"{spec.name}: builder {spec.builder!r} has no torchvision weights named {weights!r}; "
            "pass a .pth state dict file or 'random'"
        ) from None
    member = weights.rpartition(".")[2]
    if member not in enum.__members__:
        raise WeightsError(
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
        raise WeightsError(f"{what}: weights {path} is a directory; pass the .pth state dict file in it", setting="weights")
    if not path.is_file():
        raise WeightsError(f"{what}: weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        message = f"{what}: cannot read weights file {path} as a state dict ({error})"
        raise WeightsError(message.split("\n")[0]) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{what}: {path} holds a {type(state).__name__}, not a state dict")
    try:
        result = network.load_state_dict(state, strict=False)
    except RuntimeError as error:
        detail = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise WeightsError(f"{what}: {path} does not fit the architecture: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
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
            (``compressbo.compression.training``) and pass the resulting file.

    Raises:
        UserInputError: Unknown builder or weights, missing checkpoint or file, mismatched keys,
            or a spec layer that is absent or cannot take its factorization.
    """
    weights = os.fspath(weights) if weights is not None else spec.weights
    builder = _builder(spec)
    if weights == "train":
        raise WeightsError(
            f"{spec.name} has no pretrained weights: train it on {spec.dataset} first "
            "(compressbo.compression.training) and pass the resulting .pth file"
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
            raise WeightsError(
                f"{spec.name}: weights {weights} are not available offline; put {checkpoint.name} "
                f"(from {member.url}) in {checkpoint.parent}, or pass a local .pth state dict"
            )
        try:
            network = builder(weights=member, **spec.builder_kwargs)
        except Exception as error:
            raise WeightsError(f"{spec.name}: cannot load {checkpoint} ({error})".split("\n")[0]) from None
        network = _built(network, spec)
    for name, tensor in network.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"{spec.name}: weight {name} holds NaN or infinite values; pass trained, finite weights")
    check_layers(network, spec)
    return network.eval()


def _built(network: Any, spec: NetworkSpec) -> nn.Module:
    """``network`` if the spec's builder returned a module; a one-line UserInputError if not."""
    if not isinstance(network, nn.Module):
        raise SpecError(
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
            raise WeightsError(f"{spec.name}: layer '{layer.name}' does not exist in the network{hint}")
        problem = factorization_problem(module, layer.method)
        if problem is not None:
            raise WeightsError(f"{spec.name}: layer '{layer.name}' cannot be compressed: {problem}")
        layers.append(module)
    return layers


def _is_compressible(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or isinstance(module, nn.Conv2d) and module.groups == 1
