"""Build a spec's network and load its weights (torchvision names, state-dict files, random).

Nothing here unpickles code: every checkpoint, torchvision's included, is read with
``torch.load(..., weights_only=True)`` (only ``argparse.Namespace`` is allowed beside tensors,
for torchvision's reference-script checkpoints), and a builder is imported only if it is on
the allowlist of :mod:`compressbo.compression.trust` or the caller passes ``trust_code=True``.
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from compressbo.exceptions import SpecError, UserInputError, WeightsError
from compressbo.files import file_sha256, one_line
from compressbo.compression.lowrank import (
    factorization_problem,
)
from compressbo.compression.spec import RANDOM_WEIGHTS_SEED, NetworkSpec
from compressbo.compression.trust import is_allowed, resolve_builder

__all__ = ["build_network", "check_layers", "checkpoint_path", "load_checkpoint", "preprocessing", "weights_file", "weights_sha256"]


# ----------------------------------------------------------------------------- networks


def _builder(spec: NetworkSpec, trust_code: bool = False) -> Callable[..., nn.Module]:
    """The architecture builder named by ``spec.builder`` (allowlisted unless ``trust_code``)."""
    return resolve_builder(spec.builder, trust_code=trust_code, what=spec.name)


def _is_weights_file(weights: str) -> bool:
    return weights.endswith((".pth", ".pt")) or os.sep in weights or Path(weights).is_file()


def _torchvision_weights(spec: NetworkSpec, builder: Callable[..., nn.Module], weights: str) -> Any:
    """The torchvision weights enum member named ``weights`` (e.g. ``IMAGENET1K_V1``)."""
    import torchvision.models

    try:
        enum = torchvision.models.get_model_weights(builder)
    except (ValueError, KeyError, AttributeError):
        raise WeightsError(
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

    if not is_allowed(spec.builder):  # only torchvision builders have weights enums: import nothing else
        return None
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


_STATE_KEYS = ("state_dict", "model")  # where training scripts keep the weights in a checkpoint
_DDP_PREFIX = "module."


def load_checkpoint(path: str | os.PathLike, what: str = "weights") -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint file, read with ``weights_only=True``.

    Accepted forms: a state dict; ``{"state_dict": ...}`` or ``{"model": ...}`` with other
    keys beside it (epoch, optimizer, ``args`` as an ``argparse.Namespace`` as torchvision's
    reference scripts save); keys with the ``module.`` prefix of ``DistributedDataParallel``
    (removed). Nothing is unpickled beyond tensors, containers and ``argparse.Namespace``.

    Args:
        path: The ``.pth`` / ``.pt`` file.
        what: Prefix of error messages.

    Raises:
        WeightsError: The file is a directory, missing, unreadable or holds no state dict;
            the message is one line, without terminal colour codes.
    """
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{what}: weights {path} is a directory; pass the .pth state dict file in it", setting="weights")
    if not path.is_file():
        raise WeightsError(f"{what}: weights file {path} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"{what}: cannot read weights file {path} as a state dict: {one_line(str(error))}") from None
    if isinstance(state, Mapping) and not _is_state_dict(state):
        state = next((state[key] for key in _STATE_KEYS if isinstance(state.get(key), Mapping)), state)
    if not isinstance(state, Mapping) or not _is_state_dict(state):
        kind = type(state).__name__ if not isinstance(state, Mapping) else f"dict with keys {sorted(map(str, state))[:5]}"
        raise WeightsError(
            f"{what}: {path} holds a {kind}, not a state dict (nor one under 'state_dict' or 'model'); "
            "save model.state_dict()"
        )
    state = dict(state)
    if state and all(key.startswith(_DDP_PREFIX) for key in state):
        state = {key[len(_DDP_PREFIX) :]: value for key, value in state.items()}
    return state


def _is_state_dict(state: Mapping) -> bool:
    """A non-empty mapping of string keys to tensors."""
    return bool(state) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


def _load_state_dict(network: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Load ``state`` (from ``path``) into ``network``, refusing integer values for float weights."""
    own = network.state_dict()
    integer = [
        f"{name} ({tensor.dtype})" for name, tensor in state.items()
        if name in own and own[name].is_floating_point() and not (tensor.is_floating_point() or tensor.is_complex())
    ]
    if integer:
        raise WeightsError(
            f"{what}: {path} holds integer values for floating-point weights: {', '.join(integer[:3])}; "
            "these are not trained weights (rounded or quantized); save the float state dict"
        )
    try:
        result = network.load_state_dict(state, strict=False)
    except RuntimeError as error:
        detail = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise WeightsError(f"{what}: {path} does not fit the architecture: {one_line(detail)}") from None
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"{what}: {path} does not fit the architecture: missing keys {result.missing_keys[:3]}, "
            f"unexpected keys {result.unexpected_keys[:3]}"
        )


def _call_builder(builder: Callable[..., nn.Module], spec: NetworkSpec, **overrides: Any) -> nn.Module:
    """``builder(**overrides, **spec.builder_kwargs)``; a bad keyword is a one-line SpecError."""
    try:
        network = builder(**{**overrides, **spec.builder_kwargs})
    except TypeError as error:
        raise SpecError(
            f"{spec.name}: builder {spec.builder!r} does not take builder_kwargs "
            f"{sorted(spec.builder_kwargs)} ({one_line(str(error))}); fix builder_kwargs in the spec"
        ) from None
    except (ValueError, RuntimeError) as error:
        raise SpecError(f"{spec.name}: builder {spec.builder!r} failed: {one_line(str(error))}; fix builder_kwargs") from None
    return _built(network, spec)


def weights_file(spec: NetworkSpec, weights: str | os.PathLike | None = None) -> Path | None:
    """The file ``build_network(spec, weights)`` reads, or ``None`` (``"random"``, ``"train"``).

    A torchvision weights name gives its checkpoint in ``$TORCH_HOME/hub/checkpoints``; the
    file need not exist. Nothing is imported unless the builder is on the allowlist.
    """
    weights = os.fspath(weights) if weights is not None else spec.weights
    if weights in ("random", "train"):
        return None
    if _is_weights_file(weights):
        path = Path(weights).expanduser()
        if weights == spec.weights and not path.is_absolute() and spec.path is not None and not path.exists():
            path = spec.path.parent / path  # a spec's own weights path is relative to the spec
        return path
    if not is_allowed(spec.builder):
        return None
    try:
        return checkpoint_path(_torchvision_weights(spec, _builder(spec), weights))
    except WeightsError:
        return None


def weights_sha256(spec: NetworkSpec, weights: str | os.PathLike | None = None) -> str | None:
    """SHA-256 of the weights file the network is built from; ``None`` without one."""
    path = weights_file(spec, weights)
    return file_sha256(path) if path is not None and path.is_file() else None


def build_network(spec: NetworkSpec, weights: str | os.PathLike | None = None, *, trust_code: bool = False) -> nn.Module:
    """Build the spec's architecture with weights, in eval mode, and check its layers.

    Args:
        spec: The network spec.
        weights: ``None`` for ``spec.weights``; ``"random"``; a torchvision weights enum name
            (the checkpoint must already be in ``$TORCH_HOME/hub/checkpoints``: nothing is
            downloaded, and it is read with ``weights_only=True``); or a ``.pth`` checkpoint
            (see :func:`load_checkpoint`). ``"train"`` is refused: train first
            (``compressbo.compression.training``) and pass the resulting file.
        trust_code: Import the spec's builder even if it is not on the allowlist of
            :mod:`compressbo.compression.trust` (torchvision models, compressbo's own
            architectures). Pass it only for a spec you wrote or trust.

    Raises:
        UntrustedCodeError: The builder is not on the allowlist and ``trust_code`` is False.
        UserInputError: Unknown builder or weights, missing checkpoint or file, mismatched keys,
            or a spec layer that is absent or cannot take its factorization.
    """
    weights = os.fspath(weights) if weights is not None else spec.weights
    builder = _builder(spec, trust_code)
    if weights == "train":
        raise WeightsError(
            f"{spec.name} has no pretrained weights: train it on {spec.dataset} first "
            "(compressbo.compression.training) and pass the resulting .pth file"
        )
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)  # one random network per spec: runs and resumes agree
            network = _call_builder(builder, spec)
    elif _is_weights_file(weights):
        path = weights_file(spec, weights)
        state = load_checkpoint(path, spec.name)
        network = _call_builder(builder, spec)
        _load_state_dict(network, state, path, spec.name)
    else:
        member = _torchvision_weights(spec, builder, weights)
        checkpoint = checkpoint_path(member)
        if not checkpoint.is_file():
            raise WeightsError(
                f"{spec.name}: weights {weights} are not available offline; put {checkpoint.name} "
                f"(from {member.url}) in {checkpoint.parent}, or pass a local .pth state dict"
            )
        try:
            state = load_checkpoint(checkpoint, spec.name)
        except WeightsError as error:
            raise WeightsError(f"{spec.name}: cannot load {checkpoint}: {error}") from None
        categories = member.meta.get("categories")
        overrides = {"num_classes": len(categories)} if categories else {}
        network = _call_builder(builder, spec, **overrides)  # what builder(weights=member) builds, unfilled
        _load_state_dict(network, state, checkpoint, spec.name)
    for name, tensor in network.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"{spec.name}: weight {name} holds NaN or infinite values; pass trained, finite weights")
    check_layers(network, spec)
    return network.eval()


def _built(network: Any, spec: NetworkSpec) -> nn.Module:
    """``network`` if the spec's builder returned a module; a one-line SpecError if not."""
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
            raise SpecError(f"{spec.name}: layer '{layer.name}' does not exist in the network{hint}")
        problem = factorization_problem(module, layer.method)
        if problem is not None:
            raise SpecError(f"{spec.name}: layer '{layer.name}' cannot be compressed: {problem}")
        layers.append(module)
    return layers


def _is_compressible(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or isinstance(module, nn.Conv2d) and module.groups == 1
