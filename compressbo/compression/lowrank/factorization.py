"""What a factorization method is: the :class:`Factorization` protocol every method implements.

One subclass per method (:mod:`.svd`, :mod:`.tucker`, :mod:`.vh`), one instance of each in
:data:`~.registry.FACTORIZATIONS`. Everything that differs between methods (which layers
take it, its full ranks, parameter and MAC counts, the decomposition and the replacement
module, the cached tensors' shapes, an optional refinement) is a member here, so adding a
method is one subclass and one registry entry; the rank schemes, the cache and the
compressor only ever call these members.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from .geometry import HW, LayerGeometry, Ranks

__all__ = ["Factorization"]


class Factorization(ABC):
    """One low-rank factorization method.

    Ranks are one integer (``rank_names == ("r",)``) or one integer per mode (a tuple in
    ``rank_names``' order, e.g. Tucker-2's ``(R_out, R_in)``). Counts include the bias,
    which stays uncompressed on the last factor.

    Attributes:
        name: The method's name in specs, settings, records and cache file names.
        layer_type: The layers it factorizes (``nn.Linear`` or ``nn.Conv2d``, ``groups == 1``).
        rank_names: The names of its ranks, one per mode.
        refinable: Whether :meth:`refine` can improve the truncated factors (for a final model).
    """

    name: ClassVar[str]
    layer_type: ClassVar[type[nn.Module]]
    rank_names: ClassVar[tuple[str, ...]] = ("r",)
    refinable: ClassVar[bool] = False

    # -- sizes ---------------------------------------------------------------------------
    @abstractmethod
    def max_ranks(self, geometry: LayerGeometry) -> Ranks:
        """The full rank(s) of the layer's factorization."""

    @abstractmethod
    def weight_params(self, geometry: LayerGeometry, ranks: Any) -> Any:
        """Weights of the factorized layer at ``ranks``, bias excluded (element-wise on arrays of ranks)."""

    @abstractmethod
    def macs(self, geometry: LayerGeometry, ranks: Ranks, in_hw: HW, out_hw: HW) -> int:
        """Multiply-accumulates of the factorized layer for one input of spatial size ``in_hw`` (output ``out_hw``)."""

    def params(self, geometry: LayerGeometry, ranks: Any) -> Any:
        """Parameters of the factorized layer at ``ranks``, bias included."""
        return self.weight_params(geometry, ranks) + geometry.bias_params

    # -- rank schemes ----------------------------------------------------------------------
    def rank_path(self, geometry: LayerGeometry) -> tuple[np.ndarray, list[Ranks]]:
        """The candidate ranks of the ``params`` scheme in order, and their parameter counts.

        One integer rank: every rank ``1 .. full``. Counts are non-decreasing along the path.

        Returns:
            ``(counts, ranks)``: ``counts`` (``K``, integers) and the ``K`` ranks.
        """
        full = self.max_ranks(geometry)
        counts = np.arange(1, full + 1) * self.weight_params(geometry, 1) + geometry.bias_params
        return counts, list(range(1, full + 1))

    def ranks_within(self, geometry: LayerGeometry, budget: float) -> Ranks:
        """The largest ranks on :meth:`rank_path` whose parameter count is at most ``budget`` (at least the first)."""
        full = self.max_ranks(geometry)
        rank = math.floor((budget - geometry.bias_params) / self.weight_params(geometry, 1))
        return max(1, min(full, rank))

    def useful_ranks(self, geometry: LayerGeometry, ranks: Any) -> Any:
        """``ranks`` lowered where a mode cannot use them (element-wise on arrays); identity here."""
        return ranks

    def modes(self, ranks: Ranks) -> tuple[int, ...]:
        """``ranks`` as a tuple with one entry per mode."""
        return tuple(ranks) if len(self.rank_names) > 1 else (ranks,)  # type: ignore[arg-type]

    def per_mode(self, full: Ranks, rank: Callable[[int], int]) -> Ranks:
        """``rank(f)`` for each mode's full rank ``f`` of ``full``, shaped as this method's ranks."""
        values = tuple(rank(f) for f in self.modes(full))
        return values if len(self.rank_names) > 1 else values[0]

    # -- layers ----------------------------------------------------------------------------
    def problem(self, layer: nn.Module, hint: str = "") -> str | None:
        """Why ``layer`` cannot take this method (``hint`` appended to a wrong type), or ``None``."""
        if not isinstance(layer, self.layer_type):
            return f"{self.name} factorizes nn.{self.layer_type.__name__}, but it is {type(layer).__name__}{hint}"
        groups = getattr(layer, "groups", 1)
        if groups != 1:
            return f"{self.name} needs groups == 1, but the convolution has groups={groups}"
        return None

    def check_ranks(self, geometry: LayerGeometry, ranks: Ranks) -> Ranks:
        """``ranks`` as ``int`` (or a tuple of ints), validated against the full rank(s).

        Raises:
            ValueError: Wrong form, or a rank outside ``[1, full rank]``.
        """
        full = self.max_ranks(geometry)
        if len(self.rank_names) > 1:
            label = f"({', '.join(self.rank_names)})"
            if not (isinstance(ranks, (tuple, list)) and len(ranks) == len(self.rank_names)):
                raise ValueError(f"{self.name} needs ranks {label}, got {ranks!r}")
            ranks = tuple(int(r) for r in ranks)
            if not all(1 <= r <= f for r, f in zip(ranks, full)):
                raise ValueError(f"{self.name} ranks must satisfy 1 <= {label} <= {full}, got {ranks}")
            return ranks
        if isinstance(ranks, bool) or not isinstance(ranks, numbers.Integral):
            raise ValueError(f"{self.name} needs one integer rank, got {ranks!r}")
        ranks = int(ranks)
        if not 1 <= ranks <= full:
            raise ValueError(f"{self.name} rank must be in [1, {full}], got {ranks}")
        return ranks

    # -- factors and modules ---------------------------------------------------------------
    @abstractmethod
    def decompose(self, weight: Tensor) -> Any:
        """The full decomposition of a layer's weight (the expensive, once-per-layer step)."""

    @abstractmethod
    def factors_from_state(self, state: dict[str, Tensor]) -> Any:
        """The factors saved as ``factors.state()`` (a cache entry's tensors)."""

    @abstractmethod
    def factor_shapes(self, geometry: LayerGeometry) -> dict[str, tuple[int, ...]]:
        """Shapes of the full decomposition's tensors, by name (as ``factors.state()`` holds them)."""

    @abstractmethod
    def build(self, layer: nn.Module, factors: Any, ranks: Ranks) -> nn.Sequential:
        """The replacement of ``layer`` at ``ranks`` from its full ``factors`` (truncation only)."""

    @abstractmethod
    def empty(self, layer: nn.Module, ranks: Ranks, device: torch.device | str | None = None) -> nn.Sequential:
        """The replacement's structure at ``ranks``, weights not set from factors (for loading)."""

    def refine(self, weight: Tensor, factors: Any, ranks: Ranks) -> Any:
        """Factors at ``ranks`` improved beyond truncation; the truncatable ``factors`` themselves by default."""
        return factors

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
