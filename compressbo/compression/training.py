"""Training FC3, and the pretrained FC3 that compressbo trains on first use and caches.

FC3 has no torchvision weights. With no weights given, compressbo trains it on the digits
training split (seconds on a CPU), reports its validation error and keeps the state dict in
the user cache directory, keyed by spec name, dataset and seed; later runs reuse it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from compressbo.compression.architectures import fc3
from compressbo.compression.data import TensorSet, load_digits_split
from compressbo.exceptions import WeightsError
from compressbo.files import atomic_write, user_cache_dir, write_json_atomic

__all__ = ["PretrainedWeights", "pretrained_fc3_weights", "train_fc3"]

logger = logging.getLogger(__name__)

DEFAULT_EPOCHS = 10


@torch.inference_mode()
def _error(model: nn.Module, data: TensorSet, batch_size: int = 1024) -> float:
    model.eval()
    device = next(model.parameters()).device
    wrong = 0
    for start in range(0, len(data), batch_size):
        x = data.inputs[start : start + batch_size].to(device)
        y = data.labels[start : start + batch_size].to(device)
        wrong += int((model(x).argmax(dim=1) != y).sum())
    return wrong / len(data)


def train_fc3(
    train: TensorSet,
    val: TensorSet | None = None,
    *,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    lr: float = 1e-3,
) -> tuple[dict[str, Tensor], float | None]:
    """Train FC3 (784-1000-1000-10) with Adam and cross-entropy.

    Deterministic for a given seed on the CPU; the global random state is left untouched.

    Args:
        train: Training set, ``N x 1 x 28 x 28`` inputs (or ``N x 784``).
        val: Validation set whose top-1 error is returned.
        epochs: Passes over ``train``.
        seed: Seed of the initialization and the shuffling.
        device: Where to train.
        batch_size: Mini-batch size.
        lr: Adam learning rate.

    Returns:
        ``(state_dict, val_error)``: CPU state dict loadable into ``FC3``, and the top-1 error on
        ``val`` (``None`` without ``val``).
    """
    if epochs < 1:
        raise WeightsError(f"epochs must be at least 1, got {epochs}")
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = fc3().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    inputs, labels = train.inputs.to(device), train.labels.to(device)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator).to(device)
        for start in range(0, len(train), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(inputs[batch]), labels[batch]).backward()
            optimizer.step()
    val_error = _error(model, val) if val is not None else None
    state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    return state, val_error


@dataclass(frozen=True)
class PretrainedWeights:
    """A cached FC3 state dict.

    Attributes:
        path: The ``.pth`` state dict (load with ``torch.load(path, weights_only=True)``).
        val_error: Top-1 error on the validation split it was trained against.
        trained: ``True`` if this call trained it, ``False`` if it came from the cache.
    """

    path: Path
    val_error: float
    trained: bool


def pretrained_fc3_weights(
    spec_name: str = "fc3",
    dataset: str = "digits",
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    *,
    epochs: int = DEFAULT_EPOCHS,
) -> PretrainedWeights:
    """FC3 weights trained on the digits training split, trained on first use and then cached.

    Files: ``<cache>/<spec_name>-<dataset>-seed<seed>.pth`` and a ``.json`` sidecar holding the
    validation error, epochs and versions. The digits split uses the same ``seed``.

    Args:
        spec_name: Name of the spec the weights are for (part of the cache key).
        dataset: Only ``"digits"`` (MNIST needs a data directory: use ``scripts/train_fc3.py``).
        seed: Seed of the split, the initialization and the shuffling.
        cache_dir: Cache directory (default :func:`user_cache_dir`).
        epochs: Training epochs when training is needed.

    Raises:
        UserInputError: A dataset other than digits, or an unwritable cache directory.
    """
    if dataset != "digits":
        raise WeightsError(
            f"FC3 is trained on first use only on 'digits', not {dataset!r}; "
            "train it with scripts/train_fc3.py and pass the file as weights",
            setting="weights",
        )
    folder = Path(cache_dir) if cache_dir is not None else user_cache_dir()
    path = folder / f"{spec_name}-{dataset}-seed{seed}.pth"
    sidecar = path.with_suffix(".json")
    if path.is_file() and sidecar.is_file():
        record = json.loads(sidecar.read_text())
        logger.info("FC3 weights from cache %s (validation error %.4f)", path, record["val_error"])
        return PretrainedWeights(path, float(record["val_error"]), trained=False)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create cache directory {folder} ({exc}); set COMPRESSBO_CACHE to a writable folder") from None
    started = time.perf_counter()
    train, val = load_digits_split(seed)
    state, val_error = train_fc3(train, val, epochs=epochs, seed=seed)
    seconds = time.perf_counter() - started
    record = {
        "spec": spec_name,
        "dataset": dataset,
        "seed": seed,
        "epochs": epochs,
        "val_error": val_error,
        "val_size": len(val),
        "train_seconds": round(seconds, 3),
        "torch": torch.__version__,
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    write_json_atomic(sidecar, record)
    logger.info("trained FC3 on digits in %.1f s: validation error %.4f, saved to %s", seconds, val_error, path)
    return PretrainedWeights(path, float(val_error), trained=True)
