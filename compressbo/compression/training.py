"""Training FC3, and the pretrained FC3 that compressbo trains on first use and caches.

FC3 has no torchvision weights. With no weights given, compressbo trains it on the digits
training split (seconds on a CPU), reports its validation error and keeps the state dict in
the user cache directory, keyed by spec name, dataset and seed; later runs reuse it.

The cache is verified: the sidecar ``.json`` records the ``.pth``'s SHA-256, and the state
dict must hold FC3's tensors with their shapes and dtype, all finite. A damaged entry is a
warning and is retrained and replaced; an unwritable cache is a warning and the weights live
in a temporary folder for this process. Two processes needing the same entry take turns.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from compressbo.compression.architectures import fc3
from compressbo.compression.data import TensorSet, load_digits_split
from compressbo.compression.spec import check_name
from compressbo.exceptions import SettingError, WeightsError
from compressbo.files import FileLock, file_sha256, one_line, torch_save_atomic, user_cache_dir, write_json_atomic

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
    check_name(spec_name, "spec name")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SettingError(f"seed must be a non-negative integer, got {seed!r}", setting="seed")
    folder = Path(cache_dir) if cache_dir is not None else user_cache_dir()
    path = folder / f"{spec_name}-{dataset}-seed{seed}.pth"
    cached = _verified(path)
    if cached is not None:
        return cached
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(folder / f".{path.name}.lock", blocking=True)  # another process may be training it
    except OSError as error:
        return _train_uncached(folder, error, path.name, spec_name, dataset, seed, epochs)
    try:
        cached = _verified(path, quiet=True)  # the other process finished it meanwhile
        if cached is not None:
            return cached
        try:
            return _train_and_save(path, spec_name, dataset, seed, epochs)
        except OSError as error:
            return _train_uncached(path, error, path.name, spec_name, dataset, seed, epochs)
    finally:
        lock.release()


def _train_uncached(
    unwritable: Path, error: OSError, name: str, spec_name: str, dataset: str, seed: int, epochs: int
) -> PretrainedWeights:
    """Warn that the cache at ``unwritable`` cannot be written, then train into a private folder."""
    warnings.warn(
        f"cannot write the FC3 weights cache {unwritable} ({error.strerror or error}); training FC3 "
        "for this run only. Set COMPRESSBO_CACHE to a writable folder.",
        RuntimeWarning,
        stacklevel=3,
    )
    return _train_and_save(_private_folder() / name, spec_name, dataset, seed, epochs)


# FC3's state dict: names, shapes and dtype a cached file must hold
_FC3_SHAPES = {
    "fc1.weight": (1000, 784), "fc1.bias": (1000,), "fc2.weight": (1000, 1000), "fc2.bias": (1000,),
    "fc3.weight": (10, 1000), "fc3.bias": (10,),
}  # fmt: skip


def _verified(path: Path, *, quiet: bool = False) -> PretrainedWeights | None:
    """The cached weights at ``path`` if whole and intact; ``None`` (with a warning if damaged)."""
    sidecar = path.with_suffix(".json")
    if not path.exists() and not sidecar.exists():
        return None
    problem = _cache_problem(path, sidecar)
    if problem is None:
        record = json.loads(sidecar.read_text())
        logger.info("FC3 weights from cache %s (validation error %.4f)", path, record["val_error"])
        return PretrainedWeights(path, float(record["val_error"]), trained=False)
    if not quiet:
        warnings.warn(f"FC3 weights cache {path} is damaged: {problem}; retraining it and replacing the files",
                      RuntimeWarning, stacklevel=3)
    return None


def _cache_problem(path: Path, sidecar: Path) -> str | None:
    """What is wrong with a cached FC3 entry (``.pth`` + ``.json``), or ``None``."""
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"its {sidecar.name} is unreadable ({type(error).__name__})"
    if not isinstance(record, dict):
        return f"its {sidecar.name} is not a JSON object"
    val_error = record.get("val_error")
    if isinstance(val_error, bool) or not isinstance(val_error, (int, float)) or not 0 <= val_error <= 1:
        return f"its {sidecar.name} has no validation error"
    try:
        digest = file_sha256(path)
    except OSError as error:
        return f"the .pth is unreadable ({error.strerror or error})"
    if record.get("sha256") != digest:
        return "the .pth's SHA-256 is not the one its .json records"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        return f"the .pth is unreadable ({one_line(str(error))[:80]})"
    if not isinstance(state, dict) or set(state) != set(_FC3_SHAPES):
        return "the .pth does not hold FC3's tensors"
    for name, shape in _FC3_SHAPES.items():
        tensor = state[name]
        if not isinstance(tensor, Tensor) or tuple(tensor.shape) != shape or tensor.dtype != torch.float32:
            return f"{name} is not a float32 tensor of shape {shape}"
        if not bool(torch.isfinite(tensor).all()):
            return f"{name} holds NaN or infinite values"
    return None


_PRIVATE: list[Path] = []


def _private_folder() -> Path:
    """A temporary folder of this process (removed at exit) for weights the cache cannot keep."""
    if not _PRIVATE:
        folder = Path(tempfile.mkdtemp(prefix="compressbo-fc3-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _PRIVATE.append(folder)
    return _PRIVATE[0]


def _train_and_save(path: Path, spec_name: str, dataset: str, seed: int, epochs: int) -> PretrainedWeights:
    """Train FC3, write ``path`` and its ``.json`` sidecar atomically (the ``.pth`` first)."""
    sidecar = path.with_suffix(".json")
    started = time.perf_counter()
    train, val = load_digits_split(seed)
    state, val_error = train_fc3(train, val, epochs=epochs, seed=seed)
    seconds = time.perf_counter() - started
    torch_save_atomic(path, state)
    record = {
        "spec": spec_name,
        "dataset": dataset,
        "seed": seed,
        "epochs": epochs,
        "val_error": val_error,
        "val_size": len(val),
        "train_seconds": round(seconds, 3),
        "torch": torch.__version__,
        "sha256": file_sha256(path),
    }
    write_json_atomic(sidecar, record)
    logger.info("trained FC3 on digits in %.1f s: validation error %.4f, saved to %s", seconds, val_error, path)
    return PretrainedWeights(path, float(val_error), trained=True)
