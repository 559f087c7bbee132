"""Per-layer factors computed once, kept in memory and on disk (keyed by the weights' hash).

A :class:`LayerFactors` holds one layer's full decomposition; building its replacement for
any ranks is truncation plus a small copy. :class:`FactorCache` computes the decomposition
on first use and stores it as ``<cache dir>/<method>-<sha256 of the weight>.pt`` (a plain
dict of tensors, read back with ``torch.load(..., weights_only=True)``), so a second run on
the same weights skips the decomposition.

Entries are verified on load: each file records its format, method, key, the SHA-256 of its
tensors' bytes, and their shapes and dtype, which must also be the ones the layer's geometry
implies. A mismatch, a non-finite value or an unreadable file is a warning; the entry is
recomputed and replaced atomically. An unwritable cache is a warning too (the factors stay
in memory). Writers of one entry take turns (a lock file beside it): the second waits and
reads what the first wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from compressbo.files import FileLock, one_line, torch_save_atomic, user_cache_dir

from ._params import compute_dtype, single_threaded, torch_threads
from .factorization import Factorization
from .factorize import Factors, build_factorized, check_ranks, decompose
from .ranks import LayerGeometry, Ranks, factorized_params, full_params, keeps_original, layer_ranks, max_ranks
from .registry import factorization

__all__ = ["FactorCache", "LayerFactors", "default_cache_dir", "weight_key"]

_FORMAT = "compressbo-factors-1"  # part of the key: entries of one weight keep their names
_FILE_FORMAT = "compressbo-factors-2"  # the file's layout: tensors plus checksum, shapes, dtype


@dataclass(frozen=True)
class LayerFactors:
    """One layer's cached decomposition and everything needed to build its replacement.

    Attributes:
        layer: The original ``nn.Linear`` / ``nn.Conv2d`` (its bias and hyperparameters are reused).
        method: ``"svd"``, ``"tucker2"`` or ``"vh"``.
        factors: The full decomposition (:class:`SVDFactors` or :class:`TuckerFactors`).
    """

    layer: nn.Module
    method: str
    factors: Factors
    geometry: LayerGeometry = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "geometry", LayerGeometry.of(self.layer))

    @classmethod
    def compute(cls, layer: nn.Module, method: str, threads: int = 1) -> LayerFactors:
        """Decompose ``layer`` (the expensive step) on ``threads`` torch threads."""
        with torch_threads(threads):
            return cls(layer, method, decompose(layer, method))

    @property
    def factorization(self) -> Factorization:
        """The method's :class:`~.factorization.Factorization`."""
        return factorization(self.method)

    @property
    def max_ranks(self) -> Ranks:
        return max_ranks(self.geometry, self.method)

    @property
    def full_params(self) -> int:
        return full_params(self.geometry)

    def params(self, ranks: Ranks) -> int:
        """Parameters of the replacement at ``ranks``."""
        return factorized_params(self.geometry, self.method, ranks)

    def ranks(self, theta: float, scheme: str = "params") -> Ranks:
        """Ranks for the layer's continuous parameter ``theta`` (:func:`~.ranks.layer_ranks`:
        the full ranks where the layer stays unchanged)."""
        return layer_ranks(theta, self.geometry, self.method, scheme)

    def energies(self, ranks: list[Ranks]) -> Tensor:
        """The fraction of the weight's squared Frobenius norm the layer keeps at each of ``ranks``
        (1 where the ranks keep the original layer); float64, one value per entry."""
        return self.kept_fractions(ranks, self.factors.energies)

    def kept_fractions(self, ranks: list[Ranks], truncated: Callable[[list[Ranks]], Tensor]) -> Tensor:
        """``truncated``'s fractions at those of ``ranks`` that truncate the layer (called once,
        on them only), 1 where the ranks keep the original layer; float64, one value per entry."""
        kept = [self.keeps_original(r) for r in ranks]
        cut = [r for r, keep in zip(ranks, kept) if not keep]
        values = iter(truncated(cut).tolist() if cut else [])
        return torch.tensor([1.0 if keep else next(values) for keep in kept], dtype=torch.float64)

    def keeps_original(self, ranks: Ranks) -> bool:
        """Whether ``ranks`` give a factorization no smaller than the layer: the layer is kept as is."""
        return keeps_original(self.geometry, self.method, ranks)

    def build(self, ranks: Ranks, *, refine: bool = False, threads: int = 1) -> nn.Sequential:
        """The replacement module at ``ranks`` (truncation of the cached factors, one thread).

        Args:
            ranks: The rank(s), as :meth:`ranks` returns them.
            refine: Refine Tucker-2 factors by HOOI (:func:`~.tucker.refine_tucker2`; seconds,
                for a final model). SVD and vertical/horizontal factors are already optimal
                for their structure (Eckart-Young), so for them this changes nothing.
            threads: Torch threads of the HOOI refinement (the truncation always uses one).
        """
        ranks = check_ranks(self.layer, self.method, ranks)
        if refine and self.factorization.refinable:
            with torch_threads(threads):
                refined = self.factorization.refine(self.layer.weight, self.factors, ranks)
            return build_factorized(self.layer, self.method, refined, ranks)
        with single_threaded():
            return build_factorized(self.layer, self.method, self.factors, ranks)


def default_cache_dir() -> Path:
    """``factors/`` in compressbo's cache directory (:func:`compressbo.files.user_cache_dir`)."""
    return user_cache_dir() / "factors"


def weight_key(weight: Tensor, method: str) -> str:
    """SHA-256 of the format, method, dtype, shape and raw bytes of a weight."""
    digest = hashlib.sha256(f"{_FORMAT}|{method}|{weight.dtype}|{tuple(weight.shape)}".encode())
    raw = weight.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    digest.update(memoryview(raw))
    return digest.hexdigest()


class FactorCache:
    """Compute-once store of :class:`LayerFactors`, optionally persisted on disk.

    Args:
        directory: Where factor files live; ``None`` for :func:`default_cache_dir`,
            ``False`` to keep nothing on disk.

    Attributes:
        computed: Number of decompositions computed by this cache.
        loaded: Number of decompositions read from disk.
    """

    def __init__(self, directory: str | os.PathLike | None | bool = None) -> None:
        if directory is True:
            directory = None
        self.directory: Path | None = None if directory is False else Path(directory or default_cache_dir())
        self.computed = 0
        self.loaded = 0

    def path(self, layer: nn.Module, method: str) -> Path | None:
        """The file holding ``layer``'s factors for ``method`` (``None`` without a directory)."""
        if self.directory is None:
            return None
        return self.directory / f"{method}-{weight_key(layer.weight, method)}.pt"

    def get(self, layer: nn.Module, method: str, *, threads: int = 1) -> LayerFactors:
        """``layer``'s factors: read from disk when present and intact, else computed on ``threads`` threads (and written)."""
        path = self.path(layer, method)
        if path is None:
            self.computed += 1
            return LayerFactors.compute(layer, method, threads)
        factors = _read(path, layer, method)
        if factors is not None:
            self.loaded += 1
            return LayerFactors(layer, method, factors)
        with _entry_lock(path):  # another process may be writing this entry: wait, then read it
            factors = _read(path, layer, method, quiet=True) if path.is_file() else None
            if factors is not None:
                self.loaded += 1
                return LayerFactors(layer, method, factors)
            layer_factors = LayerFactors.compute(layer, method, threads)
            self.computed += 1
            try:
                _write(path, layer, method, layer_factors.factors)
            except OSError as error:  # a cache is an optimization: warn, keep going
                warnings.warn(
                    f"cannot write the factor cache {path.parent} ({error.strerror or error}); "
                    "factors are recomputed next run. Set COMPRESSBO_CACHE to a writable folder.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return layer_factors


@contextlib.contextmanager
def _entry_lock(path: Path) -> Iterator[None]:
    """Hold the lock of one cache entry (``.<name>.lock`` beside it); none if it cannot be made."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path.parent / f".{path.name}.lock", blocking=True)
    except OSError:
        yield  # an unwritable cache: nothing is written, so nothing to serialize
        return
    try:
        yield
    finally:
        lock.release()


def expected_shapes(layer: nn.Module, method: str) -> dict[str, tuple[int, ...]]:
    """Shapes of the full decomposition of ``layer`` for ``method``, by tensor name.

    ``svd`` of a ``T x S`` Linear weight: ``u (T, k)``, ``s (k,)``, ``vh (k, S)`` with
    ``k = min(T, S)``; ``vh`` the same for the ``(S kh) x (kw T)`` matrix; ``tucker2``:
    ``core (R_out, R_in, kh, kw)``, ``out_factor (T, R_out)``, ``in_factor (S, R_in)``
    (:meth:`~.factorization.Factorization.factor_shapes`).
    """
    return factorization(method).factor_shapes(LayerGeometry.of(layer))


def _checksum(tensors: dict[str, Tensor]) -> str:
    """SHA-256 of the tensors' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def _problem(entry: object, layer: nn.Module, method: str) -> str | None:
    """What is wrong with a loaded cache entry, or ``None`` if it is intact and fits ``layer``."""
    if not isinstance(entry, dict) or entry.get("format") != _FILE_FORMAT:
        return "not a compressbo factor file of this version"
    tensors = entry.get("tensors")
    if entry.get("method") != method or not isinstance(tensors, dict):
        return "not this method's factors"
    if entry.get("checksum") != _checksum(tensors):
        return "checksum mismatch (the file was altered or damaged)"
    expected = expected_shapes(layer, method)
    dtype = compute_dtype(layer.weight)
    for name, shape in expected.items():
        tensor = tensors.get(name)
        if not isinstance(tensor, Tensor) or tuple(tensor.shape) != shape or tensor.dtype != dtype:
            found = "missing" if not isinstance(tensor, Tensor) else f"{tuple(tensor.shape)} {tensor.dtype}"
            return f"{name} is {found}, expected {shape} {dtype}"
        if not bool(torch.isfinite(tensor).all()):
            return f"{name} holds NaN or infinite values"
    return None


def _read(path: Path, layer: nn.Module, method: str, *, quiet: bool = False) -> Factors | None:
    """Factors stored at ``path``; ``None`` if absent, or (with a warning) damaged or foreign."""
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        problem = _problem(entry, layer, method)
    except Exception as error:  # a truncated or foreign file
        problem = f"unreadable ({one_line(str(error))[:120]})"
    if problem is None:
        return factorization(method).factors_from_state(entry["tensors"])
    if not quiet:
        warnings.warn(
            f"factor cache entry {path} is damaged: {problem}; recomputing it and replacing the file",
            RuntimeWarning,
            stacklevel=3,
        )
    return None


def _write(path: Path, layer: nn.Module, method: str, factors: Factors) -> None:
    """Atomically write ``factors`` with their checksum, shapes and dtype to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in factors.state().items()}
    entry = {
        "format": _FILE_FORMAT,
        "method": method,
        "key": path.stem,
        "checksum": _checksum(tensors),
        "shapes": {name: list(tensor.shape) for name, tensor in tensors.items()},
        "dtype": str(compute_dtype(layer.weight)),
        "tensors": tensors,
    }
    torch_save_atomic(path, entry)
