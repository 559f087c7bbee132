"""Per-layer factors computed once, kept in memory and on disk (keyed by the weights' hash).

A :class:`LayerFactors` holds one layer's full decomposition; building its replacement for
any ranks is truncation plus a small copy. :class:`FactorCache` computes the decomposition
on first use and stores it as ``<cache dir>/<method>-<sha256 of the weight>.pt`` (a plain
dict of tensors, read back with ``torch.load(..., weights_only=True)``), so a second run on
the same weights skips the decomposition.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from compressbo.files import atomic_write, user_cache_dir

from ._params import single_threaded, torch_threads
from .factorize import Factors, build_factorized, check_ranks, decompose
from .ranks import LayerGeometry, Ranks, factorized_params, full_params, keeps_original, layer_ranks, max_ranks
from .svd import SVDFactors
from .tucker import TuckerFactors, refine_tucker2

__all__ = ["FactorCache", "LayerFactors", "default_cache_dir", "weight_key"]

_FORMAT = "compressbo-factors-1"


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
        if refine and self.method == "tucker2":
            with torch_threads(threads):
                refined = refine_tucker2(self.layer.weight, self.factors, ranks)
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
        """``layer``'s factors: read from disk when present, else computed on ``threads`` threads (and written)."""
        path = self.path(layer, method)
        factors = _read(path, method) if path is not None else None
        if factors is not None:
            self.loaded += 1
            return LayerFactors(layer, method, factors)
        layer_factors = LayerFactors.compute(layer, method, threads)
        self.computed += 1
        if path is not None:
            try:
                _write(path, layer_factors.factors)
            except OSError as error:  # a cache is an optimization: warn, keep going
                warnings.warn(
                    f"cannot write the factor cache {path.parent} ({error.strerror or error}); "
                    "factors are recomputed next run. Set COMPRESSBO_CACHE to a writable folder.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return layer_factors


def _read(path: Path, method: str) -> Factors | None:
    """Factors stored at ``path``, or ``None`` if absent or unreadable (then recomputed)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return (TuckerFactors if method == "tucker2" else SVDFactors).from_state(state)
    except Exception:  # a truncated or foreign file: recompute and overwrite
        return None


def _write(path: Path, factors: Factors) -> None:
    """Atomically write ``factors`` (a dict of tensors) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda temporary: torch.save(factors.state(), temporary))
