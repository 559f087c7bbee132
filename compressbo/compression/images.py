"""Image preprocessing in two stages: uint8 crops on the CPU, normalization on the evaluation device.

torchvision's evaluation transform of a weights enum (``weights.transforms()``, an
``ImageClassification``) resizes a PIL image, center-crops it, converts it to a tensor and
normalizes it. :func:`split_transform` cuts it after the crop::

    decode:    PIL image -> resize -> center crop -> C x H x W uint8        (per image, CPU, cached)
    normalize: B x C x H x W uint8 -> float32 / 255 -> (x - mean) / std    (per batch, on the device)

Both stages call the same torchvision functions, on the same kinds of input (the resize and
the crop still act on the PIL image), as the transform itself, so a batch of normalized crops
equals the transform applied to each image (bit for bit on the CPU; within float32 rounding
on a GPU). A uint8 crop takes a quarter of the float32 tensor's memory (150 KB against 602 KB
at 224 x 224), and the host-to-device copy shrinks alike.

A transform with no registered splitter (a user's own ``Compose``) is kept whole: it decodes
to its float tensor, and normalization is the identity (:data:`WHOLE`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from compressbo.exceptions import SettingError

__all__ = [
    "MAX_DATA_WORKERS",
    "ImageStages",
    "check_data_workers",
    "default_data_workers",
    "register_splitter",
    "split_transform",
]

MAX_DATA_WORKERS = 8  # default decode threads at most (PIL decoding scales to a few cores)


@dataclass(frozen=True)
class ImageStages:
    """A per-image transform as a cached decode stage and a per-batch normalization stage.

    Attributes:
        decode: PIL image -> ``C x H x W`` tensor, the form the cache keeps (uint8 when split).
        normalize: ``B x C x H x W`` decoded batch (on any device) -> float32 network inputs.
        split: Whether ``decode`` stops before the float conversion (uint8 crops).
    """

    decode: Callable[[Any], Tensor]
    normalize: Callable[[Tensor], Tensor]
    split: bool


def _identity(batch: Tensor) -> Tensor:
    return batch


def _whole(transform: Callable) -> ImageStages:
    return ImageStages(decode=transform, normalize=_identity, split=False)


@dataclass(frozen=True)
class _ClassificationDecode:
    """``ImageClassification``'s resize and center crop, on the PIL image, then ``pil_to_tensor``."""

    resize_size: list[int]
    crop_size: list[int]
    interpolation: Any
    antialias: bool | None

    def __call__(self, image: Any) -> Tensor:
        from torchvision.transforms import functional as F

        image = F.resize(image, self.resize_size, interpolation=self.interpolation, antialias=self.antialias)
        image = F.center_crop(image, self.crop_size)
        return image if isinstance(image, Tensor) else F.pil_to_tensor(image)


@dataclass(frozen=True)
class _ClassificationNormalize:
    """``ImageClassification``'s float conversion and normalization, on a whole batch."""

    mean: list[float]
    std: list[float]

    def __call__(self, batch: Tensor) -> Tensor:
        from torchvision.transforms import functional as F

        return F.normalize(F.convert_image_dtype(batch, torch.float), mean=self.mean, std=self.std)


def _split_classification(transform: Any) -> ImageStages:
    decode = _ClassificationDecode(
        list(transform.resize_size), list(transform.crop_size), transform.interpolation, transform.antialias
    )
    return ImageStages(decode=decode, normalize=_ClassificationNormalize(list(transform.mean), list(transform.std)), split=True)


_SPLITTERS: dict[type, Callable[[Any], ImageStages]] = {}


def register_splitter(kind: type, splitter: Callable[[Any], ImageStages]) -> None:
    """Split transforms of type ``kind`` (exactly) with ``splitter`` (transform -> :class:`ImageStages`)."""
    _SPLITTERS[kind] = splitter


def _register_torchvision() -> None:
    from torchvision.transforms._presets import ImageClassification

    register_splitter(ImageClassification, _split_classification)


def split_transform(transform: Callable) -> ImageStages:
    """The two stages of ``transform``: split when a splitter is registered for its type, else whole.

    Args:
        transform: PIL image -> ``C x H x W`` float tensor, e.g. ``weights.transforms()``.
    """
    if not _SPLITTERS:
        _register_torchvision()
    splitter = _SPLITTERS.get(type(transform))
    return splitter(transform) if splitter is not None else _whole(transform)


def default_data_workers() -> int:
    """Decode threads by default: this process's torch threads (its share of the cores), at most 8.

    A parallel worker limits its torch threads to its share of the cores, and so its decoders
    never run on the cores its siblings evaluate on; neither do they exceed the cores this
    process may run on.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_DATA_WORKERS, cores, torch.get_num_threads()))


def check_data_workers(workers: int | None) -> None:
    """Raise :class:`SettingError` unless ``workers`` is ``None`` or an integer >= 1."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise SettingError(
            f"data_workers must be an integer >= 1 (threads decoding images), got {workers!r}", setting="data_workers"
        )
