"""Validation (and training) data: digits, MNIST and ImageNet as preprocessed pools.

Every dataset is a :class:`ValidationSet`: ``len(dataset)`` examples, their ``labels``
(``N``) and ``get(indices) -> (inputs, labels)`` returning preprocessed tensors. The
evaluator draws a random subsample of indices per evaluation and asks for exactly those.

* ``digits`` (offline default): scikit-learn's bundled 1,797 handwritten digits (8x8,
  intensities 0..16), resized to 28x28 with bilinear interpolation so FC3
  (784-1000-1000-10) applies unchanged, split into train/validation by a fixed seeded
  stratified split. Held in memory as a :class:`TensorSet`.
* ``mnist``: the standard IDX files (``t10k-images-idx3-ubyte[.gz]`` etc.) read by a small
  reader of our own; validation is the 10,000-image test split. Held as a :class:`TensorSet`.
* ``imagenet``: ILSVRC2012 validation images as ``root/val/<wnid>/*.JPEG`` (torchvision
  ``ImageFolder``; class index = position of the wnid in sorted order, as the pretrained
  weights expect). Images are decoded, resized and center-cropped on first use and kept as
  uint8 crops in a bounded in-memory cache (:class:`ImageFolderSet`), so repeated subsamples
  skip JPEG decoding; each batch is normalized on the evaluation device
  (:mod:`compressbo.compression.images`), and a GPU can hold the whole pool.
  The folder is checked when the pool is built (:func:`load_imagenet_val`): hidden folders
  and files are ignored, the class folders must be the expected ones (the 1,000 wnids
  ``n`` + 8 digits for the ImageNet specs, or the count a spec names with
  ``builder_kwargs.num_classes``: :func:`expected_class_folders`), a root holding only
  ``train/`` is refused, and every image's header is decoded once, so a corrupt file is
  reported with its path before any evaluation.

Every pool has a :meth:`ValidationSet.fingerprint` (its class list, its number of files or
examples, and a SHA-256 of the sorted relative paths and sizes, or of the tensors), which a
run records and :func:`check_fingerprint` compares on resume.

Normalization of the grey-scale sets (digits and MNIST): intensities are scaled to [0, 1]
(digits: ``/16``, MNIST: ``/255``) and standardized with the MNIST constants
``(x - 0.1307) / 0.3081``, so a network trained on one sees the same input scale on the other.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import struct
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from threading import Lock
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from compressbo.compression.images import check_data_workers, default_data_workers, split_transform
from compressbo.exceptions import DataError, SettingError
from compressbo.progress import progress_bar

if TYPE_CHECKING:
    from compressbo.compression.spec import NetworkSpec

__all__ = [
    "DATASET_NAMES",
    "IMAGENET_CLASSES",
    "MNIST_MEAN",
    "MNIST_STD",
    "ClassFolders",
    "ImageFolderSet",
    "TensorSet",
    "ValidationSet",
    "check_fingerprint",
    "check_images",
    "expected_class_folders",
    "imagenet_eval_transform",
    "load_digits_split",
    "load_imagenet_val",
    "load_mnist",
    "imagenet_train_transform",
    "load_imagenet_train",
    "load_train",
    "load_training_set",
    "load_validation",
    "read_idx",
]

DATASET_NAMES = ("digits", "mnist", "imagenet")
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
DEFAULT_CACHE_BYTES = 8 * 2**30  # ImageNet cache bound: ~57k 3x224x224 uint8 crops (all 50k validation images)
BULK_DECODE = 256  # a pass decoding at least this many images shows a progress bar
IMAGENET_CLASSES = 1000
WNID = re.compile(r"n\d{8}")  # an ImageNet class folder: WordNet id, e.g. n01440764
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's


class ValidationSet:
    """A labelled set of preprocessed examples addressed by integer indices.

    Subclasses implement ``labels`` (``N``, int64) and ``get``. A set may keep its examples
    in a stored form other than the network's inputs (uint8 image crops): then ``gather``
    returns that form, ``normalize`` turns a batch of it into inputs on whatever device it is
    (the evaluator calls it on the evaluation device) and ``batches`` prepares the next batch
    while the caller computes on the current one. By default the stored form is the inputs.
    """

    labels: Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def get(self, indices: Tensor, *, pin_memory: bool = False) -> tuple[Tensor, Tensor]:
        """Preprocessed inputs and labels of ``indices``.

        Args:
            indices: ``k`` int64 indices into the set.
            pin_memory: Return the inputs in page-locked memory (for non-blocking GPU copies).

        Returns:
            ``(inputs, labels)``: ``k x ...`` float inputs and ``k`` int64 labels.
        """
        raise NotImplementedError

    def gather(self, indices: Tensor, *, pin_memory: bool = False) -> tuple[Tensor, Tensor]:
        """Stored examples and labels of ``indices`` (``normalize`` of them is ``get``'s inputs)."""
        return self.get(indices, pin_memory=pin_memory)

    def normalize(self, stored: Tensor) -> Tensor:
        """A batch of stored examples (on any device) as float32 network inputs, on that device."""
        return stored

    def batches(self, chunks: Sequence[Tensor], *, pin_memory: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
        """``gather`` of each of ``chunks`` in turn (a set may prepare the next while one is used)."""
        for chunk in chunks:
            yield self.gather(chunk, pin_memory=pin_memory)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the data: ``classes`` (list), ``files`` (count) and ``sha256`` (hex)."""
        raise NotImplementedError


class TensorSet(ValidationSet, torch.utils.data.Dataset):
    """An in-memory pool of preprocessed examples (digits, MNIST).

    Also a ``torch.utils.data.Dataset`` (``dataset[i] -> (x, y)``), so it trains FC3 too.

    Args:
        inputs: ``N x ...`` float32 preprocessed inputs (``N x 1 x 28 x 28`` for digits/MNIST).
        labels: ``N`` int64 class indices.
    """

    def __init__(self, inputs: Tensor, labels: Tensor) -> None:
        if inputs.shape[0] != labels.shape[0]:
            raise ValueError(f"{inputs.shape[0]} inputs but {labels.shape[0]} labels")
        self.inputs = inputs
        self.labels = labels.long()

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.inputs[index], self.labels[index]

    def get(self, indices: Tensor, *, pin_memory: bool = False) -> tuple[Tensor, Tensor]:
        indices = indices.to(self.inputs.device)
        if not pin_memory or self.inputs.is_cuda:
            return self.inputs.index_select(0, indices), self.labels.index_select(0, indices)
        out = torch.empty((indices.numel(), *self.inputs.shape[1:]), dtype=self.inputs.dtype, pin_memory=True)
        return torch.index_select(self.inputs, 0, indices, out=out), self.labels.index_select(0, indices)

    def to(self, device: torch.device | str) -> TensorSet:
        """The same pool with its tensors on ``device`` (the evaluator keeps small pools on the GPU)."""
        return TensorSet(self.inputs.to(device), self.labels.to(device))

    @property
    def device(self) -> torch.device:
        """Where the pool's tensors are."""
        return self.inputs.device

    @property
    def nbytes(self) -> int:
        return self.inputs.numel() * self.inputs.element_size()

    def fingerprint(self) -> dict[str, Any]:
        """The class indices present, the number of examples and a SHA-256 of inputs and labels."""
        digest = hashlib.sha256(f"{self.inputs.dtype}|{tuple(self.inputs.shape)}".encode())
        for tensor in (self.inputs, self.labels):
            digest.update(memoryview(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))
        classes = [int(c) for c in torch.unique(self.labels.cpu()).tolist()]
        return {"classes": classes, "files": len(self), "sha256": digest.hexdigest()}


class ImageFolderSet(ValidationSet):
    """Images on disk, decoded at most once while they fit in the cache, normalized per batch.

    The transform is split (:func:`~compressbo.compression.images.split_transform`): the cache
    keeps each image's uint8 center crop (``3 x 224 x 224`` is 150 KB, so the 8 GiB default holds
    about 57,000 images: all of ILSVRC2012's 50,000 validation images) and :meth:`normalize`
    converts a whole batch to float32 and standardizes it on the evaluation device. A transform
    that cannot be split is applied whole and its float tensors are cached (4x the memory).

    The cache adds tensors until ``cache_bytes`` is reached and then stops (no eviction): for
    uniform random subsamples every kept set of images gives the same hit rate, and a full cache
    does not churn. Cache misses are decoded by ``workers`` threads (PIL releases the GIL);
    :meth:`batches` submits the next batch's misses before handing out the current batch, so
    decoding overlaps the caller's forward pass. An image being decoded is never submitted twice.
    :meth:`load_onto` puts the whole pool on a device as one tensor (the evaluator's
    ``data_on_device``).

    Args:
        samples: ``(path, class_index)`` pairs, e.g. ``ImageFolder(root).samples``.
        transform: PIL image -> ``C x H x W`` float tensor, e.g. ``weights.transforms()``.
        cache_bytes: Memory bound of the cache of decoded images.
        workers: Decoding threads (default :func:`~compressbo.compression.images.default_data_workers`).
        fingerprint: The folder's :func:`folder_fingerprint` when the caller has it (else
            computed from ``samples`` on first use).
        progress: Show a bar when a pass decodes at least :data:`BULK_DECODE` images
            (``None``: follow the log level).
        prefetch: Batches :meth:`batches` submits ahead of the one it hands out (0: none).
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        transform: Callable,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        workers: int | None = None,
        fingerprint: dict[str, Any] | None = None,
        progress: bool | None = None,
        prefetch: int = 1,
    ) -> None:
        check_data_workers(workers)
        self._fingerprint = fingerprint
        self.paths = [str(path) for path, _ in samples]
        self.labels = torch.tensor([label for _, label in samples], dtype=torch.long)
        self.transform = transform
        self.stages = split_transform(transform)
        self.cache_bytes = cache_bytes
        self.cached_bytes = 0
        self.decodes = 0  # number of images decoded so far (tests check "at most once")
        self.workers = workers or default_data_workers()
        self.progress = progress
        self.prefetch = prefetch
        self._cache: dict[int, Tensor] = {}
        self._caching = True
        self._decoding: dict[int, Future] = {}  # index -> its decoding, while it runs
        self._resident: Tensor | None = None  # the whole pool on a device (load_onto)
        self._resident_labels = self.labels  # its labels there
        self._lock = Lock()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def device(self) -> torch.device:
        """Where the decoded pool is: the CPU, or the device of :meth:`load_onto`."""
        return self._resident.device if self._resident is not None else torch.device("cpu")

    def _decode(self, index: int) -> Tensor:
        """Image ``index`` through the decode stage, cached if it fits (runs on a decode thread)."""
        from PIL import Image

        try:
            try:
                with open(self.paths[index], "rb") as f:
                    image = Image.open(f).convert("RGB")
            except OSError as error:  # PIL's UnidentifiedImageError is an OSError
                raise DataError(
                    f"cannot read validation image {self.paths[index]} ({type(error).__name__}); "
                    "replace or remove the file"
                ) from None
            tensor = self.stages.decode(image)
            with self._lock:
                self.decodes += 1
                if self._caching and self.cached_bytes + tensor.nbytes <= self.cache_bytes:
                    self._cache[index] = tensor
                    self.cached_bytes += tensor.nbytes
            return tensor
        finally:
            with self._lock:
                self._decoding.pop(index, None)

    def _request(self, keys: list[int]) -> list[Tensor | Future]:
        """Each key's cached tensor, or the future of its decoding (submitted now unless running)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="compressbo-decode")
            items: list[Tensor | Future] = []
            for key in keys:
                item = self._cache.get(key)
                if item is None:
                    item = self._decoding.get(key)
                if item is None:
                    item = self._decoding[key] = self._pool.submit(self._decode, key)
                items.append(item)
            return items

    @staticmethod
    def _stack(items: list[Tensor | Future], pin_memory: bool) -> Tensor:
        """``k x C x H x W``: the requested tensors in order (waiting for their decoding)."""
        tensors = [item.result() if isinstance(item, Future) else item for item in items]
        first = tensors[0]
        out = torch.empty((len(tensors), *first.shape), dtype=first.dtype, pin_memory=pin_memory)
        return torch.stack(tensors, out=out)

    def gather(self, indices: Tensor, *, pin_memory: bool = False) -> tuple[Tensor, Tensor]:
        """Decoded (uint8 when split) images and labels of ``indices``, on :attr:`device`."""
        if self._resident is not None:
            indices = indices.to(self._resident.device)
            return self._resident.index_select(0, indices), self._resident_labels.index_select(0, indices)
        indices = indices.cpu()
        return self._stack(self._request(indices.tolist()), pin_memory), self.labels.index_select(0, indices)

    def normalize(self, stored: Tensor) -> Tensor:
        """The transform's normalization stage on a decoded batch, on the batch's device."""
        return self.stages.normalize(stored)

    def get(self, indices: Tensor, *, pin_memory: bool = False) -> tuple[Tensor, Tensor]:
        stored, labels = self.gather(indices, pin_memory=pin_memory)
        inputs = self.normalize(stored)
        if pin_memory and not inputs.is_pinned() and not inputs.is_cuda:
            inputs = inputs.pin_memory()
        return inputs, labels

    def batches(
        self, chunks: Sequence[Tensor], *, pin_memory: bool = False, prefetch: int | None = None, desc: str | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """``gather`` of each chunk, the next ``prefetch`` chunks decoding while one is handed out.

        Args:
            chunks: Index tensors, one per batch.
            pin_memory: Batches in page-locked memory.
            prefetch: Chunks submitted ahead of the one handed out (0: decode on demand;
                default :attr:`prefetch`).
            desc: The progress bar's label when the pass decodes in bulk (default "decoding N images").

        Yields:
            ``(decoded batch, labels)`` per chunk, in order; the same as ``gather`` of it.
        """
        if self._resident is not None:
            yield from super().batches(chunks, pin_memory=pin_memory)
            return
        prefetch = self.prefetch if prefetch is None else prefetch
        keys = [chunk.cpu().tolist() for chunk in chunks]
        with self._lock:
            missing = sum(key not in self._cache for chunk in keys for key in chunk)
        bar = None
        if missing >= BULK_DECODE:
            bar = progress_bar(
                enabled=self.progress, total=missing, desc=desc or f"decoding {missing:,} images", unit="img", leave=False
            )
        pending: deque[list[Tensor | Future]] = deque()
        try:
            for k, chunk in enumerate(keys):
                while len(pending) <= prefetch and k + len(pending) < len(keys):
                    pending.append(self._request(keys[k + len(pending)]))
                items = pending.popleft()
                batch = self._stack(items, pin_memory)
                if bar is not None:
                    bar.update(sum(isinstance(item, Future) for item in items))
                yield batch, self.labels.index_select(0, torch.tensor(chunk, dtype=torch.long))
        finally:
            if bar is not None:
                bar.close()

    def pool_nbytes(self) -> int:
        """Bytes of the whole decoded pool (decodes one image if none is cached yet)."""
        if self._resident is not None:
            return self._resident.numel() * self._resident.element_size()
        with self._lock:
            one = next(iter(self._cache.values()), None)
        if one is None:
            one = self._stack(self._request([0]), False)[0]
        return len(self) * one.numel() * one.element_size()

    def load_onto(self, device: torch.device | str, *, batch_size: int = 256) -> None:
        """Decode every image not cached yet and keep the whole pool on ``device`` as one tensor.

        The host cache is released; :meth:`gather` then selects on the device (no decoding).

        Args:
            device: Where the pool goes (a GPU; ``cpu`` works too).
            batch_size: Images decoded and copied per step.
        """
        if self._resident is not None and self._resident.device == torch.device(device):
            return
        chunks = list(torch.arange(len(self)).split(batch_size))
        pool: Tensor | None = None
        self._caching = False  # the pool holds them: no second copy in host memory
        try:
            batches = self.batches(chunks, desc=f"decoding {len(self):,} images onto {device}")
            for chunk, (stored, _) in zip(chunks, batches):
                if pool is None:
                    pool = torch.empty((len(self), *stored.shape[1:]), dtype=stored.dtype, device=device)
                pool[int(chunk[0]) : int(chunk[-1]) + 1] = stored.to(device)
        finally:
            self._caching = True
        with self._lock:
            self._resident = pool
            self._resident_labels = self.labels.to(device)
            self._cache.clear()
            self.cached_bytes = 0 if pool is None else pool.numel() * pool.element_size()

    def fingerprint(self) -> dict[str, Any]:
        """:func:`folder_fingerprint` of the images (relative to their common folder's parent)."""
        if self._fingerprint is None:
            root = Path(os.path.commonpath([Path(p).parent.parent for p in self.paths])) if self.paths else Path(".")
            names = sorted({Path(p).relative_to(root).parts[0] for p in self.paths})
            files = [(Path(p).relative_to(root).as_posix(), os.stat(p).st_size) for p in self.paths]
            self._fingerprint = folder_fingerprint(names, files)
        return self._fingerprint


# --------------------------------------------------------------------------- digits


def _digits_tensors() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # N x 1 x 8 x 8
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    return (images - MNIST_MEAN) / MNIST_STD, torch.as_tensor(digits.target, dtype=torch.long)


def load_digits_split(seed: int = 0, val_fraction: float = 0.3) -> tuple[TensorSet, TensorSet]:
    """scikit-learn's digits resized to 28x28, split into train and validation.

    The split is stratified by class and fixed by ``seed`` (scikit-learn's
    ``train_test_split``), so every run with the same seed sees the same validation set.

    Args:
        seed: Seed of the split.
        val_fraction: Fraction of the 1,797 images in the validation split (0.3: 540 images).

    Returns:
        ``(train, val)`` :class:`TensorSet` s with ``N x 1 x 28 x 28`` normalized inputs.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    inputs, labels = _digits_tensors()
    train_idx, val_idx = train_test_split(
        np.arange(len(labels)), test_size=val_fraction, stratify=labels.numpy(), random_state=seed
    )
    train_idx, val_idx = torch.as_tensor(np.sort(train_idx)), torch.as_tensor(np.sort(val_idx))
    return TensorSet(inputs[train_idx], labels[train_idx]), TensorSet(inputs[val_idx], labels[val_idx])


# --------------------------------------------------------------------------- MNIST

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    Raises:
        UserInputError: The file is not a well-formed IDX file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number); expected the MNIST IDX format")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated (IDX header incomplete)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(shape)) if shape else 1
    if len(data) - header != count * dtype.itemsize:
        raise DataError(
            f"{path} is malformed: header says shape {tuple(shape)} but the file holds "
            f"{len(data) - header} data bytes instead of {count * dtype.itemsize}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "raw", root / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def load_mnist(root: str | os.PathLike, split: str = "test", *, download: bool = False) -> TensorSet:
    """MNIST from IDX files in ``root``, ``root/raw`` or ``root/MNIST/raw`` (torchvision's layout).

    Args:
        root: Directory holding the IDX files.
        split: ``"test"`` (10,000 images, the validation set) or ``"train"`` (60,000).
        download: Fetch the files with torchvision into ``root/MNIST/raw`` if missing.

    Returns:
        A :class:`TensorSet` with ``N x 1 x 28 x 28`` normalized inputs.

    Raises:
        UserInputError: Files missing or malformed.
    """
    if split not in MNIST_FILES:
        raise DataError(f"unknown MNIST split {split!r}; use 'train' or 'test'")
    root = Path(root).expanduser()
    stems = MNIST_FILES[split]
    paths = [_find_idx(root, stem) for stem in stems]
    if None in paths and download:
        from torchvision.datasets import MNIST

        MNIST(str(root), train=split == "train", download=True)
        paths = [_find_idx(root, stem) for stem in stems]
    if None in paths:
        missing = stems[paths.index(None)]
        raise DataError(
            f"MNIST file {missing}[.gz] not found in {root}, {root / 'raw'} or {root / 'MNIST' / 'raw'}; "
            "put the IDX files there or allow the download",
            setting="download",
        )
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"MNIST files in {paths[0].parent} are malformed: images {images.shape}, labels {labels.shape}; "
            "expected N x 28 x 28 images and N labels"
        )
    inputs = torch.from_numpy(images.astype(np.float32)).unsqueeze(1) / 255.0
    return TensorSet((inputs - MNIST_MEAN) / MNIST_STD, torch.from_numpy(labels.astype(np.int64)))


# --------------------------------------------------------------------------- ImageNet


def imagenet_eval_transform() -> Callable:
    """The standard ImageNet evaluation preprocessing: resize 256, center crop 224, ImageNet mean/std.

    Identical to ``weights.transforms()`` of torchvision's VGG-16 / ResNet-50 ``IMAGENET1K_V1`` weights.
    """
    from torchvision.models import VGG16_Weights

    return VGG16_Weights.IMAGENET1K_V1.transforms()


@dataclass(frozen=True)
class ClassFolders:
    """The class folders a validation folder must hold.

    Attributes:
        count: Number of class folders (``None``: any number).
        wnids: Every folder must be named like an ImageNet wnid (``n`` and 8 digits).
    """

    count: int | None = None
    wnids: bool = False


def expected_class_folders(spec: NetworkSpec) -> ClassFolders | None:
    """The class folders ``spec``'s network expects, or ``None`` for a dataset without folders.

    A spec names its class count with ``builder_kwargs.num_classes`` (torchvision builders take
    it); without it an ImageNet spec expects the 1,000 ILSVRC2012 wnid folders.
    """
    if spec.dataset != "imagenet":
        return None
    count = spec.builder_kwargs.get("num_classes")
    if count is None:
        return ClassFolders(IMAGENET_CLASSES, wnids=True)
    return ClassFolders(int(count), wnids=int(count) == IMAGENET_CLASSES)


def _visible(name: str) -> bool:
    return not name.startswith(".")


def list_image_folder(folder: Path) -> tuple[list[str], list[tuple[str, int, int]]]:
    """The class folders of ``folder`` and its images, as ``ImageFolder`` orders them.

    Hidden folders and files (``.ipynb_checkpoints``, ``.DS_Store``) are skipped at every
    depth; files are images by ``ImageFolder``'s extensions (any case).

    Returns:
        ``(classes, samples)``: sorted class names, and ``(path, class index, size in bytes)``
        per image, by class, then path.

    Raises:
        DataError: A class folder holds no image.
    """
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and _visible(entry.name))
    samples: list[tuple[str, int, int]] = []
    for label, name in enumerate(classes):
        found = 0
        for directory, subdirectories, files in sorted(os.walk(folder / name, followlinks=True)):
            subdirectories[:] = [d for d in subdirectories if _visible(d)]
            if not all(_visible(part) for part in Path(directory).relative_to(folder).parts):
                continue
            for file in sorted(files):
                if _visible(file) and file.lower().endswith(IMAGE_EXTENSIONS):
                    path = os.path.join(directory, file)
                    samples.append((path, label, os.stat(path).st_size))
                    found += 1
        if not found:
            raise DataError(
                f"class folder {folder / name} holds no image ({', '.join(IMAGE_EXTENSIONS)}); "
                "put its validation images there or remove the folder",
                setting="data_dir",
            )
    return classes, samples


def check_class_folders(folder: Path, classes: list[str], expected: ClassFolders) -> None:
    """Raise a one-line :class:`DataError` unless ``classes`` are the ``expected`` class folders."""
    if expected.wnids:
        foreign = [name for name in classes if not WNID.fullmatch(name)]
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise DataError(
                f"{folder} holds folder(s) {shown} that are not ImageNet class folders (wnids such as "
                f"n01440764); expected the {expected.count or 'ImageNet'} wnid folders of the validation set",
                setting="data_dir",
            )
    if expected.count is not None and len(classes) != expected.count:
        difference = expected.count - len(classes)
        what = f"{difference} missing" if difference > 0 else f"{-difference} too many"
        raise DataError(
            f"{folder} holds {len(classes):,} class folders but the network expects {expected.count:,} "
            f"({what}; class indices follow the sorted folder names, so every label after a gap would "
            "shift); restore the missing class folders or use a spec naming this many classes",
            setting="data_dir",
        )


def _image_problem(path: str) -> str | None:
    """``None`` if PIL decodes the file's header (and structure, where PIL can verify it), else why not."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as error:  # noqa: BLE001 - any failure means the file cannot be used
        return f"{type(error).__name__}: {error}".split("\n")[0]
    return None


def check_images(paths: Sequence[str], *, workers: int | None = None, progress: bool | None = None) -> None:
    """Decode every image's header once (PIL, in a thread pool, with a progress bar).

    Raises:
        DataError: One line naming the first unreadable file (and how many more there are).
    """
    workers = workers or default_data_workers()
    with ThreadPoolExecutor(workers, thread_name_prefix="compressbo-check") as pool:
        results = progress_bar(
            pool.map(_image_problem, paths, chunksize=64),
            enabled=progress,
            total=len(paths),
            desc=f"checking {len(paths):,} images",
            unit="img",
        )
        problems = [(path, problem) for path, problem in zip(paths, results) if problem is not None]
    if problems:
        path, problem = problems[0]
        more = f" ({len(problems) - 1} more unreadable files)" if len(problems) > 1 else ""
        raise DataError(
            f"cannot read validation image {path} ({problem}){more}; replace or remove the file",
            setting="data_dir",
        )


def folder_fingerprint(classes: Sequence[str], files: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """``classes``, the number of ``files`` and the SHA-256 of their sorted ``relative path<TAB>size`` lines."""
    digest = hashlib.sha256()
    for relative, size in sorted(files):
        digest.update(f"{relative}\t{size}\n".encode())
    return {"classes": list(classes), "files": len(files), "sha256": digest.hexdigest()}


def check_fingerprint(saved: dict[str, Any] | None, current: dict[str, Any], where: str) -> None:
    """Raise a one-line :class:`DataError` when ``current`` is not the ``saved`` data.

    Args:
        saved: The fingerprint a run recorded (``None``: nothing to compare, accepted).
        current: The data's :meth:`ValidationSet.fingerprint` now.
        where: How the message names the data (its folder or dataset name).
    """
    if saved is None or saved == current:
        return
    old, new = list(saved.get("classes", [])), list(current.get("classes", []))
    differences = []
    missing, added = [c for c in old if c not in set(new)], [c for c in new if c not in set(old)]
    if missing:
        differences.append(f"class(es) {', '.join(map(str, missing[:3]))}{' ...' if len(missing) > 3 else ''} missing")
    if added:
        differences.append(f"new class(es) {', '.join(map(str, added[:3]))}{' ...' if len(added) > 3 else ''}")
    if saved.get("files") != current.get("files"):
        differences.append(f"{current.get('files')} files instead of {saved.get('files')}")
    if not differences:
        differences.append("the same number of files, with other names or sizes")
    raise DataError(
        f"the validation data in {where} is not the data this run was made with ({'; '.join(differences)}); "
        "resume with that data, or start a new run",
        setting="data_dir",
    )


def _image_folder(root: Path) -> Path:
    """The validation folder of an ImageNet ``root`` (``root/val`` or ``root`` itself)."""
    layout = "expected ROOT/val/<wnid>/*.JPEG (one folder per class, e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG)"
    if not root.is_dir():
        raise DataError(f"ImageNet folder {root} does not exist; {layout}", setting="data_dir")
    if (root / "val").is_dir():
        return root / "val"
    visible = {entry.name for entry in os.scandir(root) if entry.is_dir() and _visible(entry.name)}
    if "train" in visible and not any(WNID.fullmatch(name) for name in visible):
        raise DataError(
            f"{root} holds train/ but no val/: compressbo evaluates on the validation images; "
            f"put them in {root / 'val'} ({layout})",
            setting="data_dir",
        )
    return root


def load_imagenet_val(
    root: str | os.PathLike,
    *,
    transform: Callable | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    classes: ClassFolders | None = None,
    check: bool = True,
    fingerprint: dict[str, Any] | None = None,
    workers: int | None = None,
) -> ImageFolderSet:
    """The ILSVRC2012 validation set as ``root/val/<wnid>/*.JPEG`` (or ``root/<wnid>/*.JPEG``).

    This is also the layout torchvision's ``ImageNet(root, split="val")`` prepares. Class
    indices follow ``ImageFolder``: the wnids in sorted order, as the pretrained weights expect
    (with all 1,000 wnid folders present).

    Args:
        root: ImageNet root (holding ``val/``) or the validation folder itself.
        transform: PIL image -> tensor; default :func:`imagenet_eval_transform`. Pass the chosen
            weights' ``weights.transforms()``.
        cache_bytes: Bound of the in-memory cache of decoded images (uint8 crops when the
            transform splits, :func:`~compressbo.compression.images.split_transform`).
        classes: The class folders expected (:func:`expected_class_folders`); ``None``: any.
        check: Decode every image's header once now (:func:`check_images`).
        fingerprint: A run's recorded fingerprint: the folder must still be that data
            (compared first, before the other checks; :func:`check_fingerprint`).
        workers: Threads checking and decoding images (``data_workers``; default
            :func:`~compressbo.compression.images.default_data_workers`).

    Raises:
        DataError: No such folder, a train-only root, no class folders with images, other
            class folders than expected, an unreadable image, or data other than ``fingerprint``'s.
    """
    check_data_workers(workers)
    root = Path(root).expanduser()
    folder = _image_folder(root)
    layout = "expected ROOT/val/<wnid>/*.JPEG (one folder per class, e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG)"
    names, samples = list_image_folder(folder)
    if not samples:
        raise DataError(f"no ImageNet images found in {folder} (no class folder holds an image); {layout}", setting="data_dir")
    found = folder_fingerprint(names, [(Path(p).relative_to(folder).as_posix(), size) for p, _, size in samples])
    check_fingerprint(fingerprint, found, str(folder))
    if classes is not None:
        check_class_folders(folder, names, classes)
    if check:
        check_images([path for path, _, _ in samples], workers=workers)
    return ImageFolderSet(
        [(path, label) for path, label, _ in samples],
        transform or imagenet_eval_transform(),
        cache_bytes=cache_bytes,
        workers=workers,
        fingerprint=found,
    )


# --------------------------------------------------------------------------- entry points


def check_dataset_name(name: str) -> None:
    """Raise :class:`SettingError` unless ``name`` is one of :data:`DATASET_NAMES`."""
    if name not in DATASET_NAMES:
        raise SettingError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}", setting="data")


def _require_root(name: str, root: str | os.PathLike | None) -> Path:
    if root is None:
        raise DataError(f"dataset {name!r} needs its data directory; give data_dir", setting="data_dir")
    return Path(root)


def load_validation(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    transform: Callable | None = None,
    download: bool = False,
    seed: int = 0,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    classes: ClassFolders | None = None,
    fingerprint: dict[str, Any] | None = None,
    workers: int | None = None,
) -> ValidationSet:
    """The validation set of ``name``: the data every evaluation subsamples.

    Args:
        name: ``"digits"``, ``"mnist"`` or ``"imagenet"``.
        root: Data directory (MNIST IDX files, ImageNet root); unused for digits.
        transform: ImageNet preprocessing (default :func:`imagenet_eval_transform`).
        download: MNIST only: download into ``root`` when the files are missing.
        seed: Digits only: seed of the train/validation split.
        cache_bytes: ImageNet only: bound of the preprocessed-image cache.
        classes: ImageNet only: the class folders expected (:func:`expected_class_folders`).
        fingerprint: A run's recorded :meth:`ValidationSet.fingerprint`: the data must still be it.
        workers: ImageNet only: threads checking and decoding images (``data_workers``).

    Raises:
        UserInputError: Unknown name, missing root, or missing/malformed data (:class:`DataError`),
            or other data than ``fingerprint``'s.
    """
    check_dataset_name(name)
    if name == "imagenet":
        return load_imagenet_val(
            _require_root(name, root), transform=transform, cache_bytes=cache_bytes, classes=classes,
            fingerprint=fingerprint, workers=workers,
        )
    if name == "digits":
        dataset: ValidationSet = load_digits_split(seed)[1]
    else:
        dataset = load_mnist(_require_root(name, root), "test", download=download)
    check_fingerprint(fingerprint, dataset.fingerprint(), name if root is None else f"{name} ({root})")
    return dataset


def load_train(
    name: str, root: str | os.PathLike | None = None, *, download: bool = False, seed: int = 0
) -> TensorSet:
    """The training split of ``digits`` (seeded split) or ``mnist`` (60,000 images), for FC3.

    Raises:
        UserInputError: ImageNet (training it is out of scope), unknown name, or missing data.
    """
    check_dataset_name(name)
    if name == "digits":
        return load_digits_split(seed)[0]
    if name == "mnist":
        return load_mnist(_require_root(name, root), "train", download=download)
    raise DataError("compressbo trains only FC3 (digits, mnist); use pretrained torchvision weights for imagenet")


# --------------------------------------------------------------------------- training splits (fine-tuning)


def imagenet_train_transform(eval_transform: Callable | None = None) -> Callable:
    """Training-style preprocessing matching a torchvision weights' evaluation transform.

    ``RandomResizedCrop(crop) -> RandomHorizontalFlip -> ToTensor -> Normalize(mean, std)``,
    the crop size, interpolation, mean and std taken from ``eval_transform`` (the weights'
    ``transforms()``, an ``ImageClassification``); torchvision's reference recipe for the
    ``IMAGENET1K_V1`` weights. Default: :func:`imagenet_eval_transform`'s.
    """
    from torchvision import transforms

    source = eval_transform if eval_transform is not None else imagenet_eval_transform()
    crop = getattr(source, "crop_size", [224])
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(crop[0] if isinstance(crop, (list, tuple)) else crop,
                                         interpolation=getattr(source, "interpolation", transforms.InterpolationMode.BILINEAR)),
            transforms.RandomHorizontalFlip(),
            transforms.PILToTensor(),
            transforms.ConvertImageDtype(torch.float32),
            transforms.Normalize(getattr(source, "mean", [0.485, 0.456, 0.406]), getattr(source, "std", [0.229, 0.224, 0.225])),
        ]
    )


def load_imagenet_train(root: str | os.PathLike, *, transform: Callable | None = None) -> torch.utils.data.Dataset:
    """The ILSVRC2012 training images as ``root/train/<wnid>/*.JPEG`` (torchvision ``ImageFolder``).

    Class indices are the wnids in sorted order, as for the validation folder.

    Args:
        root: ImageNet root holding ``train/`` (and ``val/``).
        transform: PIL image -> tensor; default :func:`imagenet_train_transform`.

    Raises:
        DataError: ``root/train`` missing, or without class folders of images.
    """
    from torchvision.datasets import ImageFolder

    folder = Path(root).expanduser() / "train"
    layout = "expected ROOT/train/<wnid>/*.JPEG, one folder per class as in val/"
    if not folder.is_dir():
        raise DataError(f"ImageNet training folder {folder} does not exist; {layout}", setting="data_dir")
    try:
        return ImageFolder(str(folder), transform=transform or imagenet_train_transform())
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"no ImageNet training images found in {folder} ({exc}); {layout}", setting="data_dir") from None


def load_training_set(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    eval_transform: Callable | None = None,
    download: bool = False,
    seed: int = 0,
) -> torch.utils.data.Dataset:
    """The training split of ``name``, disjoint from its validation set (for fine-tuning).

    ``digits``: the training part of the seeded split (never the validation images);
    ``mnist``: the 60,000 training images; ``imagenet``: ``root/train`` with the training-style
    version of ``eval_transform`` (:func:`imagenet_train_transform`).

    Raises:
        DataError: Missing root or files.
        SettingError: Unknown name.
    """
    check_dataset_name(name)
    if name == "imagenet":
        if root is None:
            raise DataError("fine-tuning on imagenet needs its root holding train/; pass the data directory", setting="data_dir")
        return load_imagenet_train(root, transform=imagenet_train_transform(eval_transform))
    return load_train(name, root, download=download, seed=seed)
