"""Fine-tuning a compressed network to recover its accuracy, resumable epoch by epoch.

The compressed network (its factorized layers and every other trainable parameter) is
trained on the training split of its dataset; its architecture, and so its ranks, never
change. Two losses (:data:`LOSSES`):

* ``kd`` (default): knowledge distillation from the original network (Hinton et al. 2015),
  ``alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)``,
  with the teacher's logits ``z_t`` computed on the same batch under ``torch.no_grad``;
* ``ce``: plain cross-entropy with the labels.

SGD with momentum and a cosine learning-rate schedule stepped per batch, down to 0 at the
last batch. Mixed precision (``amp``) runs the forwards under ``torch.autocast`` (float16 with
a gradient scaler on CUDA, bfloat16 on the CPU).

**Resuming.** After every epoch a checkpoint is written atomically: ``checkpoint.pt`` (the
model, optimizer, schedule and gradient-scaler state dicts, the epoch and the per-epoch
history; read back with ``torch.load(..., weights_only=True)``) and ``checkpoint.json``
(the same epoch, the settings and the history, for people and for the settings check).
All randomness of epoch ``e`` (the data order, the augmentations of the loader's workers,
dropout) is drawn from generators seeded with ``SeedSequence([seed, e])``, so the RNG state
an epoch starts from is a function of the checkpoint's seed and epoch: a fine-tune killed
after any epoch and resumed ends with the same weights as one never interrupted.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from compressbo.compression.data import TensorSet, ValidationSet
from compressbo.compression.evaluator import SubsampleEvaluator, resolve_device
from compressbo.exceptions import RunDirError, SettingError
from compressbo.files import atomic_write, write_json_atomic

__all__ = [
    "LOSSES",
    "FinetuneCheckpoint",
    "FinetuneResult",
    "FinetuneSettings",
    "cross_entropy_loss",
    "distillation_loss",
    "epoch_seed",
    "finetune",
]

CHECKPOINT_FORMAT = "compressbo-finetune-1"


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class FinetuneSettings:
    """Every setting of a fine-tune (written to the checkpoint's JSON).

    Attributes:
        epochs: Passes over the training split.
        lr: Initial learning rate of SGD; a cosine schedule takes it to 0 at the last batch.
        batch_size: Training batch size.
        loss: ``kd`` (distillation from the original, plus the labels) or ``ce``.
        temperature: Distillation temperature ``T``.
        alpha: Weight of the soft targets in ``kd`` (``1 - alpha`` on the labels).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        amp: Forward under autocast.
        seed: Seed of every epoch's randomness (:func:`epoch_seed`).
        workers: DataLoader worker processes for image folders (in-memory sets use none).
    """

    epochs: int = 2
    lr: float = 0.01
    batch_size: int = 64
    loss: str = "kd"
    temperature: float = 4.0
    alpha: float = 0.9
    momentum: float = 0.9
    weight_decay: float = 0.0
    amp: bool = False
    seed: int = 0
    workers: int = 4

    def validate(self) -> None:
        """Raise :class:`SettingError` naming the first bad setting."""
        checks = [
            ("epochs", self.epochs >= 1, "at least 1"),
            ("lr", math.isfinite(self.lr) and self.lr > 0, "a positive number"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("loss", self.loss in LOSSES, f"one of {', '.join(LOSSES)}"),
            ("temperature", math.isfinite(self.temperature) and self.temperature > 0, "a positive number"),
            ("alpha", 0.0 <= self.alpha <= 1.0, "in [0, 1]"),
            ("momentum", 0.0 <= self.momentum < 1.0, "in [0, 1)"),
            ("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, "non-negative"),
            ("seed", 0 <= self.seed < 2**63, "an integer in 0..2^63-1"),
            ("workers", self.workers >= 0, "non-negative"),
        ]
        for name, ok, wanted in checks:
            if not ok:
                raise SettingError(f"fine-tune setting {name} must be {wanted}, got {getattr(self, name)!r}", setting=name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- losses


def distillation_loss(logits: Tensor, labels: Tensor, teacher_logits: Tensor | None, settings: FinetuneSettings) -> Tensor:
    """``alpha T^2 KL(p_t^T || p_s^T) + (1 - alpha) CE(z_s, y)`` averaged over the batch.

    Args:
        logits: ``B x C`` student logits.
        labels: ``B`` class indices.
        teacher_logits: ``B x C`` logits of the original network.
        settings: Supplies ``temperature`` and ``alpha``.
    """
    t = settings.temperature
    soft = F.kl_div(
        F.log_softmax(logits.float() / t, dim=1),
        F.log_softmax(teacher_logits.float() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return settings.alpha * t * t * soft + (1.0 - settings.alpha) * F.cross_entropy(logits.float(), labels)


def cross_entropy_loss(logits: Tensor, labels: Tensor, teacher_logits: Tensor | None, settings: FinetuneSettings) -> Tensor:
    """Cross-entropy of the ``B x C`` logits with the ``B`` labels (no teacher)."""
    return F.cross_entropy(logits.float(), labels)


@dataclass(frozen=True)
class LossSpec:
    """A fine-tuning loss and whether it needs the original network's logits."""

    function: Callable[[Tensor, Tensor, Tensor | None, FinetuneSettings], Tensor]
    needs_teacher: bool


LOSSES: dict[str, LossSpec] = {
    "kd": LossSpec(distillation_loss, needs_teacher=True),
    "ce": LossSpec(cross_entropy_loss, needs_teacher=False),
}


# ----------------------------------------------------------------------------- checkpoint


class FinetuneCheckpoint:
    """The checkpoint of a fine-tune: ``checkpoint.pt`` + ``checkpoint.json`` in ``directory``.

    Both are replaced atomically; the ``.pt`` is written first and is the truth on resume
    (the JSON mirrors it for people, and holds the settings a resume must agree with).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.weights_path = self.directory / "checkpoint.pt"
        self.json_path = self.directory / "checkpoint.json"

    def exists(self) -> bool:
        return self.weights_path.is_file()

    def _check_folder(self) -> None:
        for path in (self.directory, self.weights_path, self.json_path):
            if path.is_symlink():
                raise RunDirError(f"{path} is a symbolic link; compressbo does not write through links, remove it")

    def save(self, state: dict[str, Any], metadata: dict[str, Any]) -> None:
        """Write ``state`` (tensors, numbers, strings) and ``metadata`` (JSON), each atomically."""
        self._check_folder()
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.weights_path, lambda temporary: torch.save(state, temporary))
        write_json_atomic(self.json_path, {"format": CHECKPOINT_FORMAT, **metadata})

    def load(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(state, metadata)``, the state read with ``weights_only=True``.

        Raises:
            RunDirError: Missing, unreadable or not written by compressbo.
        """
        import json

        self._check_folder()
        try:
            state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
            metadata = json.loads(self.json_path.read_text())
        except Exception as error:  # a torn or foreign file: one line, nothing changed
            raise RunDirError(
                f"cannot read the fine-tune checkpoint in {self.directory} ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}); remove it to start the fine-tune again"
            ) from None
        if not isinstance(state, dict) or metadata.get("format") != CHECKPOINT_FORMAT or "epoch" not in state:
            raise RunDirError(f"{self.directory} does not hold a compressbo fine-tune checkpoint; remove it to start again")
        return state, metadata


# ----------------------------------------------------------------------------- training


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of every random draw in epoch ``epoch`` (0-based): ``SeedSequence([seed, epoch])``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _loader(dataset: torch.utils.data.Dataset, settings: FinetuneSettings, epoch: int, device: torch.device) -> torch.utils.data.DataLoader:
    """Epoch ``epoch``'s loader: its order (and its workers' seeds) drawn from :func:`epoch_seed`."""
    generator = torch.Generator().manual_seed(epoch_seed(settings.seed, epoch))
    if isinstance(dataset, TensorSet):  # in memory: whole batches by advanced indexing, no workers
        sampler = torch.utils.data.BatchSampler(
            torch.utils.data.RandomSampler(dataset, generator=generator), settings.batch_size, drop_last=False
        )
        return torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=settings.workers,
        pin_memory=device.type == "cuda",
        drop_last=False,
    )


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


@dataclass
class FinetuneResult:
    """What a call of :func:`finetune` achieved.

    Attributes:
        epochs_done: Epochs finished so far (over every call, resumed ones included).
        finished: Whether all ``settings.epochs`` are done.
        error_before: Full-validation-set top-1 error before the first epoch.
        error_after: After the last epoch done (``error_before`` if none).
        history: One record per epoch: ``epoch`` (1-based), ``loss`` (mean training loss),
            ``val_error``, ``lr`` (at its end), ``seconds``.
        train_examples: Size of the training split.
        validation_examples: Size of the validation set.
    """

    epochs_done: int
    finished: bool
    error_before: float
    error_after: float
    history: list[dict[str, float]] = field(default_factory=list)
    train_examples: int = 0
    validation_examples: int = 0


def finetune(
    student: nn.Module,
    train: torch.utils.data.Dataset,
    validation: ValidationSet,
    settings: FinetuneSettings,
    *,
    teacher: nn.Module | None = None,
    device: str | torch.device = "cpu",
    checkpoint: FinetuneCheckpoint | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    eval_batch_size: int | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Train ``student`` in place on ``train``, checkpointing after every epoch.

    Args:
        student: The compressed network (trained in place; moved to ``device``). Its
            parameters with ``requires_grad`` are trained; its structure is left alone.
        train: The training split (a :class:`TensorSet` or an image ``Dataset``), disjoint
            from ``validation``.
        validation: The validation set of the search; its full-set error is measured before
            and after every epoch.
        settings: The fine-tune's settings.
        teacher: The original network (needed by ``kd``; eval mode, never trained).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        checkpoint: Where to write a checkpoint after every epoch (none if ``None``).
        resume: Continue from ``checkpoint`` (its settings must equal ``settings``).
        stop_after: Return after this many epochs of this call (the rest stays for a resume).
        eval_batch_size: Validation batch size (the evaluator's default if ``None``).
        progress: One tqdm bar per epoch, with the loss and the validation error.

    Raises:
        SettingError: Bad settings, or ``kd`` without a teacher.
        RunDirError: ``resume`` without a readable checkpoint, or one with other settings.
    """
    settings.validate()
    loss_spec = LOSSES[settings.loss]
    if loss_spec.needs_teacher and teacher is None:
        raise SettingError("the kd loss distills from the original network: pass teacher", setting="loss")
    device = resolve_device(device)
    student.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    evaluator = SubsampleEvaluator(validation, device=device, batch_size=eval_batch_size, amp=settings.amp)
    parameters = [p for p in student.parameters() if p.requires_grad]
    if not parameters:
        raise SettingError("the network has no trainable parameters (every parameter has requires_grad=False)")
    optimizer = torch.optim.SGD(parameters, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    steps = settings.epochs * len(_loader(train, settings, 0, device))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1), eta_min=0.0)
    scaler = torch.amp.GradScaler(device.type, enabled=settings.amp and device.type == "cuda")

    history: list[dict[str, float]] = []
    start = 0
    if resume:
        if checkpoint is None or not checkpoint.exists():
            raise RunDirError("there is no fine-tune checkpoint to resume; start the fine-tune without resume")
        state, metadata = checkpoint.load()
        if metadata.get("settings") != settings.to_dict():
            raise RunDirError(
                f"the checkpoint in {checkpoint.directory} was written with other settings "
                f"({metadata.get('settings')}); resume with those, or remove it to start again"
            )
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        start, history, error_before = int(state["epoch"]), list(state["history"]), float(state["error_before"])
    else:
        error_before = evaluator.full_error(student)

    loss_fn = loss_spec.function
    epochs_this_call = 0
    for epoch in range(start, settings.epochs):
        if stop_after is not None and epochs_this_call >= stop_after:
            break
        started = time.perf_counter()
        mean_loss, val_error = _train_epoch(student, teacher if loss_spec.needs_teacher else None, train, settings,
                                            epoch, device, optimizer, schedule, scaler, loss_fn, evaluator, progress)
        history.append({"epoch": epoch + 1, "loss": mean_loss, "val_error": val_error,
                        "lr": schedule.get_last_lr()[0], "seconds": time.perf_counter() - started})
        epochs_this_call += 1
        if checkpoint is not None:
            checkpoint.save(
                {
                    "epoch": epoch + 1,
                    "model": student.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "scaler": scaler.state_dict(),
                    "history": history,
                    "error_before": error_before,
                },
                {"epoch": epoch + 1, "settings": settings.to_dict(), "history": history, "error_before": error_before,
                 "seed_of_epoch": "numpy SeedSequence([seed, epoch])"},
            )
    done = history[-1]["epoch"] if history else 0
    return FinetuneResult(
        epochs_done=done,
        finished=done >= settings.epochs,
        error_before=error_before,
        error_after=history[-1]["val_error"] if history else error_before,
        history=history,
        train_examples=len(train),
        validation_examples=len(validation),
    )


def _train_epoch(
    student: nn.Module,
    teacher: nn.Module | None,
    train: torch.utils.data.Dataset,
    settings: FinetuneSettings,
    epoch: int,
    device: torch.device,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    loss_fn: Callable[[Tensor, Tensor, Tensor | None, FinetuneSettings], Tensor],
    evaluator: SubsampleEvaluator,
    progress: bool,
) -> tuple[float, float]:
    """One pass over ``train``: ``(mean training loss, full-set validation error after it)``.

    The global RNG is left as it was.
    """
    loader = _loader(train, settings, epoch, device)
    bar = tqdm(total=len(loader), desc=f"fine-tune epoch {epoch + 1}/{settings.epochs}", unit="batch",
               disable=not progress, dynamic_ncols=True, leave=True)
    total, count = torch.zeros((), device=device), 0
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), bar:
        torch.manual_seed(epoch_seed(settings.seed, epoch))  # dropout and in-process augmentation
        student.train()
        for step, (inputs, labels) in enumerate(_batch_iter(loader, device)):
            with _autocast(device, settings.amp):
                teacher_logits = None
                if teacher is not None:
                    with torch.no_grad():
                        teacher_logits = teacher(inputs)
                loss = loss_fn(student(inputs), labels, teacher_logits, settings)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            total += loss.detach() * labels.numel()
            count += labels.numel()
            if progress and step % 10 == 0:  # float() synchronizes: not every batch
                bar.set_postfix(loss=f"{float(total) / count:.4f}", refresh=False)
            bar.update(1)
        student.eval()
        mean_loss = float(total) / max(count, 1)
        if not math.isfinite(mean_loss):
            raise SettingError(
                f"the training loss became {mean_loss} in epoch {epoch + 1}: the learning rate {settings.lr:g} is too "
                "high for this network; lower lr (the checkpoint of the epoch before is kept)", setting="lr"
            )
        val_error = evaluator.full_error(student)
        bar.set_postfix(loss=f"{mean_loss:.4f}", val_error=f"{val_error:.4f}")
    return mean_loss, val_error


def _batch_iter(loader: Any, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    for inputs, labels in loader:
        yield inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
