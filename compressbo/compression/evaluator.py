"""The subsampled-accuracy evaluator and the compression objective built on it.

Each evaluation draws a fresh random subsample of ``m`` validation examples (without
replacement; draw ``i`` of a run is fixed by ``(seed, i)``), runs the network on it and
returns the top-1 error ``p = k / m`` with its variance. The variance is binomial and uses
Laplace's rule of succession, ``p~ = (k + 1) / (m + 2)``::

    var = p~ (1 - p~) / m

which is positive for every ``k`` (also ``p = 0`` and ``p = 1``, where ``p (1 - p) / m``
would claim an exact measurement), shrinks as ``1 / m``, and differs from ``p (1 - p) / m``
by ``O(1 / m^2)`` otherwise. It is the variance of ``p`` as an estimate of the network's error
on the data distribution (the validation set being a sample of it). Across repeated
subsamples of one fixed validation set of ``N`` examples the spread is smaller by the
finite-population factor ``(N - m) / (N - 1)``, which this estimate deliberately ignores
(it is conservative, and stays positive at ``m = N``).

The compression objective is ``y = ratio + gamma * error`` with ``yvar = gamma^2 * var``.
With ``objective="distill"`` the error is replaced by the knowledge-distillation distance of
Ma et al. (2019): the mean over the subsample of the per-example mean squared difference
between the compressed and the original network's logits,
``D = mean_i mean_c (z_ic - z0_ic)^2``, with its standard error squared,
``s^2 / m`` (``s^2`` the sample variance of the per-example distances, floored at
:data:`DISTILL_VARIANCE_FLOOR`), as the variance. The original network's logits are computed once
per example and cached.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from compressbo.compression.data import ImageFolderSet, TensorSet, ValidationSet
from compressbo.exceptions import SettingError
from compressbo.compression.compressor import parameter_dtype
from compressbo.progress import progress_bar

logger = logging.getLogger(__name__)

DISTILL_VARIANCE_FLOOR = 1e-12  # floor of the distillation variance (identical logits give s^2 = 0)
RESIDENT_BYTES = 2 * 2**30  # tensor pools up to this size live on the GPU for the whole run
DEVICE_POOL_FRACTION = 0.25  # an image pool moves onto the GPU by itself when it fits this share of free memory
FINAL_STREAM = 2**32 + 0xF1  # seed-sequence word of the final stage's subset (draw i uses [seed, i], i < 2^32)


def resolve_devices(device: str | torch.device = "auto") -> list[torch.device]:
    """Every device of a comma-separated list (``cuda:0,cuda:2``), each as :func:`resolve_device`.

    Parallel workers are spread over the list; the run's own process uses its first device.

    Raises:
        SettingError: An unknown device, or CUDA requested where there is none.
    """
    return [_resolve_one(name.strip()) for name in str(device).split(",")]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` if a GPU is available, else ``cpu`` (silently); checks ``cuda[:N]``.

    A comma-separated list (``cuda:0,cuda:2``, the devices of parallel workers) is checked
    whole and resolves to its first device.

    Raises:
        SettingError: An unknown device, or CUDA requested where there is none.
    """
    return resolve_devices(device)[0]


def _resolve_one(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise SettingError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N", setting="device") from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise SettingError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N", setting="device")
    if not torch.cuda.is_available():
        raise SettingError(f"device {name!r} requested but no CUDA GPU is available; use device cpu or auto", setting="device")
    if resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise SettingError(f"device {name!r} does not exist: {torch.cuda.device_count()} GPU(s) visible", setting="device")
    # with its index, so it compares equal to the device tensors report (cuda:0 != cuda)
    return torch.device("cuda", torch.cuda.current_device() if resolved.index is None else resolved.index)


def check_batch_size(batch_size: int | None) -> None:
    """Raise :class:`SettingError` unless ``batch_size`` is ``None`` or a positive integer."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise SettingError(f"batch size must be a positive integer, got {batch_size!r}", setting="batch_size")


def binomial_variance(wrong: int, m: int) -> float:
    """``p~ (1 - p~) / m`` with Laplace's ``p~ = (k + 1) / (m + 2)``: positive for every ``k``."""
    adjusted = (wrong + 1) / (m + 2)
    return adjusted * (1.0 - adjusted) / m


@dataclass(frozen=True)
class ErrorEstimate:
    """Top-1 error on a subsample.

    Attributes:
        error: ``k / m``, the fraction misclassified.
        variance: :func:`binomial_variance` of ``k`` and ``m``.
        m: Subsample size.
        wrong: ``k``, the number misclassified.
    """

    error: float
    variance: float
    m: int
    wrong: int


@dataclass(frozen=True)
class DistillEstimate:
    """Mean squared logit distance to the reference network on a subsample.

    Attributes:
        distance: ``mean_i mean_c (z_ic - z0_ic)^2``.
        variance: Its standard error squared ``s^2 / m`` (at least :data:`DISTILL_VARIANCE_FLOOR`).
        m: Subsample size.
        error: Top-1 error of the evaluated network on the same subsample (free by-product).
    """

    distance: float
    variance: float
    m: int
    error: float


class SubsampleEvaluator:
    """Top-1 error and logit distance of networks on random subsamples of a validation set.

    Networks are moved to the evaluation device (in place) and put in eval mode on first
    use. The data set hands out its stored form (uint8 image crops for an image folder), the
    next batch being prepared while the current one is computed (:meth:`ValidationSet.batches`),
    and each batch is normalized on the evaluation device (:meth:`ValidationSet.normalize`).
    On a GPU the pool can live on the device for the whole run (``data_on_device``): by default
    tensor pools (digits, MNIST) up to :data:`RESIDENT_BYTES` and image pools whose decoded
    images fit :data:`DEVICE_POOL_FRACTION` of the free memory (decoded in one pass, with a
    progress bar, at the first evaluation); other data is gathered into pinned memory and copied
    without blocking. Counts stay on the device until the end of a call (one synchronization
    per evaluation).

    Args:
        dataset: The validation set.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: Examples per forward pass (default 512 on a CPU, 1024 on a GPU).
        amp: Run the forward under ``torch.autocast`` (float16 on CUDA, bfloat16 on the CPU).
        seed: Seed of the sequence of subsamples.
        data_on_device: Keep the whole pool on the GPU: ``True`` always, ``False`` never,
            ``None`` when it fits (see above). Nothing changes on a CPU.
    """

    def __init__(
        self,
        dataset: ValidationSet,
        *,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        amp: bool = False,
        seed: int = 0,
        data_on_device: bool | None = None,
    ) -> None:
        self.device = resolve_device(device)
        on_gpu = self.device.type == "cuda"
        check_batch_size(batch_size)
        if on_gpu and isinstance(dataset, TensorSet) and data_on_device is not False:
            if data_on_device or dataset.nbytes <= RESIDENT_BYTES:
                dataset = dataset.to(self.device)
        self.dataset = dataset
        self.labels = dataset.labels.to(self.device)
        self.batch_size = batch_size or (1024 if on_gpu else 512)
        self.amp = amp
        self.seed = seed
        self.draws = 0
        self.data_on_device = data_on_device
        self._placed = not (on_gpu and isinstance(dataset, ImageFolderSet))  # where the image pool lives is decided
        self._reference_logits: weakref.WeakKeyDictionary[nn.Module, tuple[Tensor, Tensor]] = (
            weakref.WeakKeyDictionary()
        )

    def __len__(self) -> int:
        return len(self.dataset)

    # ------------------------------------------------------------------ subsamples

    def check_samples(self, m: int) -> None:
        """Raise :class:`SettingError` unless ``1 <= m <= len(dataset)``."""
        if not 1 <= m <= len(self.dataset):
            raise SettingError(
                f"samples {m} is outside 1..{len(self.dataset)}: the validation set has "
                f"{len(self.dataset)} examples; choose a smaller m",
                setting="samples",
            )

    def sample(self, m: int) -> Tensor:
        """Draw the next subsample: ``m`` distinct sorted indices (advances the sequence)."""
        self.check_samples(m)
        seed = int(np.random.SeedSequence([self.seed, self.draws]).generate_state(1, np.uint64)[0]) >> 1
        generator = torch.Generator().manual_seed(seed)
        self.draws += 1
        indices = torch.randperm(len(self.dataset), generator=generator)[:m]
        return indices.sort().values

    def state_dict(self) -> dict[str, int]:
        """JSON-able state: the seed and the number of subsamples drawn so far."""
        return {"seed": self.seed, "draws": self.draws}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the sequence of subsamples where ``state`` left it (resume)."""
        self.seed, self.draws = int(state["seed"]), int(state["draws"])

    # ------------------------------------------------------------------ forward passes

    def _prepare(self, module: nn.Module) -> nn.Module:
        """``module`` on the device and in eval mode; one walk over its modules when it already is."""
        training = off_device = False
        for child in module.modules():
            training = training or child.training
            if not off_device:
                tensors = itertools.chain(child._parameters.values(), child._buffers.values())
                off_device = any(t is not None and t.device != self.device for t in tensors)
        if off_device:
            module.to(self.device)
        return module.eval() if training else module

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type) if self.amp else contextlib.nullcontext()

    @property
    def _resident(self) -> bool:
        """Whether the pool is on the evaluation device (indices are selected there)."""
        return getattr(self.dataset, "device", torch.device("cpu")) == self.device

    def _place_pool(self) -> None:
        """Put an image pool on the GPU as ``data_on_device`` says (once, at the first evaluation)."""
        self._placed = True
        dataset = self.dataset
        if self.data_on_device is False or not isinstance(dataset, ImageFolderSet):
            return
        needed = dataset.pool_nbytes()
        free, _ = torch.cuda.mem_get_info(self.device)
        if self.data_on_device is None and needed > DEVICE_POOL_FRACTION * free:
            logger.info(
                "image pool (%.1f GB) stays in host memory: more than %d%% of the %.1f GB free on %s",
                needed / 1e9, round(100 * DEVICE_POOL_FRACTION), free / 1e9, self.device,
            )
            return
        logger.info("decoding the %s images onto %s (%.1f GB)", f"{len(dataset):,}", self.device, needed / 1e9)
        try:
            dataset.load_onto(self.device)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            logger.warning("image pool (%.1f GB) does not fit on %s; it stays in host memory", needed / 1e9, self.device)

    def _batches(
        self, indices: Tensor, dtype: torch.dtype, what: str | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """``(indices on the device, inputs on the device in dtype)`` per batch.

        Batches come from :meth:`ValidationSet.batches` (the next one prepared meanwhile), are
        copied to the device in their stored form and normalized there. With ``what`` (a
        full-set pass: "the original network", ...) a line says what is scored on how many
        examples, and a progress bar follows the examples.
        """
        if not self._placed:
            self._place_pool()
        device_indices = indices.to(self.device, non_blocking=True)
        source = device_indices if self._resident else indices
        pin = self.device.type == "cuda" and not self._resident
        bar = None
        if what is not None:
            logger.info("scoring %s on %s validation examples", what, f"{indices.numel():,}")
            bar = progress_bar(total=indices.numel(), desc=f"scoring {what}", unit="img", leave=False)
        try:
            starts = range(0, indices.numel(), self.batch_size)
            chunks = [source[start : start + self.batch_size] for start in starts]
            for start, (stored, _) in zip(starts, self.dataset.batches(chunks, pin_memory=pin)):
                stop = start + self.batch_size
                inputs = self.dataset.normalize(stored.to(self.device, non_blocking=True))
                yield device_indices[start:stop], inputs.to(dtype)
                if bar is not None:
                    bar.update(min(stop, indices.numel()) - start)
        finally:
            if bar is not None:
                bar.close()

    def logits(self, module: nn.Module, indices: Tensor, *, what: str | None = None) -> Tensor:
        """The network's float32 logits on ``indices`` (``len(indices) x C``, on the device).

        Args:
            module: The network.
            indices: ``k`` example indices.
            what: Name of the network for a full-set pass's log line and progress bar.
        """
        module = self._prepare(module)
        with torch.inference_mode(), self._autocast():
            return torch.cat([module(x).float() for _, x in self._batches(indices, parameter_dtype(module), what)])

    def wrong(self, module: nn.Module, indices: Tensor, *, what: str | None = None) -> Tensor:
        """Which of ``indices`` the network misclassifies: ``k`` bools, on the CPU.

        Args:
            module: The network.
            indices: ``k`` example indices.
            what: Name of the network for a full-set pass's log line and progress bar.
        """
        module = self._prepare(module)
        parts = []
        with torch.inference_mode(), self._autocast():
            for idx, x in self._batches(indices, parameter_dtype(module), what):
                parts.append(module(x).argmax(dim=1) != self.labels[idx])
        return torch.cat(parts).cpu() if parts else torch.zeros(0, dtype=torch.bool)

    def _count_wrong(self, module: nn.Module, indices: Tensor) -> int:
        module = self._prepare(module)
        wrong = torch.zeros((), dtype=torch.long, device=self.device)
        with torch.inference_mode(), self._autocast():
            for idx, x in self._batches(indices, parameter_dtype(module)):
                wrong += (module(x).argmax(dim=1) != self.labels[idx]).sum()
        return int(wrong)

    def final_indices(self, samples: int | None = None) -> Tensor:
        """The examples the final stage scores: all of them, or a fixed seeded subset of ``samples``.

        The subset depends only on the seed and ``samples`` (not on the subsamples drawn), so
        a run, its resume and its extensions score the same examples.

        Raises:
            UserInputError: ``samples`` outside ``1..len(dataset)``.
        """
        n = len(self.dataset)
        if samples is None or samples == n:
            return torch.arange(n)
        if not 1 <= samples <= n:
            raise SettingError(
                f"final_samples {samples} is outside 1..{n}: the validation set has {n} examples; choose a smaller one",
                setting="final_samples",
            )
        seed = int(np.random.SeedSequence([self.seed, FINAL_STREAM]).generate_state(1, np.uint64)[0]) >> 1
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:samples].sort().values

    # ------------------------------------------------------------------ estimates

    def error(self, module: nn.Module, m: int) -> ErrorEstimate:
        """Top-1 error of ``module`` on a fresh random subsample of ``m`` examples.

        Raises:
            SettingError: ``m`` larger than the validation set (or below 1).
        """
        wrong = self._count_wrong(module, self.sample(m))
        return ErrorEstimate(wrong / m, binomial_variance(wrong, m), m, wrong)

    def full_error(self, module: nn.Module) -> float:
        """Top-1 error on the whole validation set (does not advance the subsample sequence)."""
        return self._count_wrong(module, torch.arange(len(self.dataset))) / len(self.dataset)

    def reference_logits(self, reference: nn.Module, indices: Tensor, *, what: str | None = None) -> Tensor:
        """Logits of ``reference`` on ``indices``, each example computed once and cached."""
        cache = self._reference_logits.get(reference)
        device_indices = indices.to(self.device)
        if cache is not None:
            logits, known = cache
            missing = indices[~known[device_indices].cpu()]
        else:
            missing = indices
        if missing.numel():
            computed = self.logits(reference, missing, what=what)
            if cache is None:
                logits = torch.zeros((len(self.dataset), computed.shape[1]), device=self.device)
                known = torch.zeros(len(self.dataset), dtype=torch.bool, device=self.device)
                self._reference_logits[reference] = (logits, known)
            missing = missing.to(self.device)
            logits[missing] = computed
            known[missing] = True
        return logits[device_indices]

    def distill(self, module: nn.Module, reference: nn.Module, m: int | None = None) -> DistillEstimate:
        """Mean squared logit distance of ``module`` to ``reference`` on a fresh subsample.

        Args:
            module: The compressed network.
            reference: The original network (its logits are cached per example).
            m: Subsample size; ``None`` for the whole set (draws no subsample).

        Raises:
            SettingError: ``m`` below 2 (no standard error) or larger than the validation set.
        """
        if m is not None and m < 2:
            raise SettingError(f"objective distill needs samples of at least 2, got {m}", setting="samples")
        indices = self.sample(m) if m is not None else torch.arange(len(self.dataset))
        per_example, wrong = self.distances(module, reference, indices)
        m = indices.numel()
        distance, variance = per_example.mean(), per_example.var(correction=1) / m
        return DistillEstimate(float(distance), max(float(variance), DISTILL_VARIANCE_FLOOR), m, int(wrong.sum()) / m)

    def distances(
        self, module: nn.Module, reference: nn.Module, indices: Tensor, *, what: str | None = None
    ) -> tuple[Tensor, Tensor]:
        """Per-example squared logit distance to ``reference`` and misclassification of ``module``.

        Returns:
            ``(distance, wrong)``: ``k`` float64 ``mean_c (z_ic - z0_ic)^2`` and ``k`` bools, on the CPU.
        """
        target = self.reference_logits(reference, indices, what=None if what is None else "the original network")
        logits = self.logits(module, indices, what=what)
        per_example = (logits.double() - target.double()).pow(2).mean(dim=1)
        wrong = logits.argmax(dim=1) != self.labels[indices.to(self.device)]
        return per_example.cpu(), wrong.cpu()
