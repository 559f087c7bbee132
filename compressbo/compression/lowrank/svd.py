"""``Linear -> SVD``: ``W (out x in)`` becomes ``in -> r -> out``, the best rank-``r`` approximation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._params import compute_dtype, set_parameters
from .factorization import Factorization
from .geometry import HW, LayerGeometry

__all__ = ["SVD", "SVDFactorization", "SVDFactors", "build_linear", "factorize_linear", "linear_module", "svd_factors"]


@dataclass(frozen=True)
class SVDFactors:
    """Thin SVD ``M = U diag(s) Vh`` of an ``m x n`` matrix, ``k = min(m, n)``.

    Attributes:
        u: ``m x k`` left singular vectors.
        s: ``k`` singular values, descending.
        vh: ``k x n`` right singular vectors.
    """

    u: Tensor
    s: Tensor
    vh: Tensor

    def split(self, rank: int) -> tuple[Tensor, Tensor]:
        """Balanced rank-``rank`` factors ``(U_r sqrt(s_r), sqrt(s_r) Vh_r)``: ``m x r`` and ``r x n``.

        Their product is the best rank-``r`` approximation of ``M`` (Eckart-Young).
        """
        root = self.s[:rank].sqrt()
        return self.u[:, :rank] * root, root[:, None] * self.vh[:rank]

    def reconstruct(self, rank: int) -> Tensor:
        """The rank-``rank`` approximation, ``m x n``."""
        left, right = self.split(rank)
        return left @ right

    def energies(self, ranks: Sequence[int]) -> Tensor:
        r"""The fraction of ``||M||_F^2`` each rank's approximation keeps: ``sum_{i <= r} s_i^2 / sum_i s_i^2``.

        Args:
            ranks: Ranks ``1 <= r <= k``.

        Returns:
            A float64 tensor of ``len(ranks)`` values in ``[0, 1]`` (all 1 for a zero matrix).
        """
        kept = self.s.to(torch.float64).square().cumsum(0)
        total = kept[-1]
        index = torch.tensor([int(r) - 1 for r in ranks], dtype=torch.long)
        return kept[index] / total if total > 0 else torch.ones(len(index), dtype=torch.float64)

    def state(self) -> dict[str, Tensor]:
        return {"u": self.u, "s": self.s, "vh": self.vh}

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> SVDFactors:
        return cls(state["u"], state["s"], state["vh"])


def svd_factors(matrix: Tensor) -> SVDFactors:
    """Thin SVD of a matrix (computed once per layer, then truncated for any rank).

    Args:
        matrix: ``m x n`` tensor (a Linear weight is ``out_features x in_features``).
    """
    u, s, vh = torch.linalg.svd(matrix.detach().to(compute_dtype(matrix)), full_matrices=False)
    return SVDFactors(u, s, vh)


def linear_module(layer: nn.Linear, rank: int, device: torch.device | str | None = None) -> nn.Sequential:
    """The rank-``rank`` replacement's structure: ``Linear(in, r, bias=False), Linear(r, out)``."""
    factory = {"device": device if device is not None else layer.weight.device, "dtype": layer.weight.dtype}
    return nn.Sequential(
        nn.Linear(layer.in_features, rank, bias=False, **factory),
        nn.Linear(rank, layer.out_features, bias=layer.bias is not None, **factory),
    )


def build_linear(layer: nn.Linear, factors: SVDFactors, rank: int) -> nn.Sequential:
    """Rank-``rank`` replacement of ``layer`` from its cached SVD; the bias goes on the second layer."""
    module = linear_module(layer, rank, device="meta")
    left, right = factors.split(rank)
    like = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    set_parameters(module[0], right.to(**like))
    set_parameters(module[1], left.to(**like), layer.bias)
    return module


def factorize_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    """Replace an ``nn.Linear`` by its best rank-``rank`` factorization ``in -> rank -> out``.

    Args:
        layer: The layer to factorize (its weight is ``out x in``).
        rank: Inner width, ``1 <= rank <= min(in, out)``.

    Returns:
        ``nn.Sequential(Linear(in, rank, bias=False), Linear(rank, out))``.
    """
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"factorize_linear expects nn.Linear, got {type(layer).__name__}")
    full = min(layer.in_features, layer.out_features)
    if not 1 <= rank <= full:
        raise ValueError(f"rank must be in [1, {full}], got {rank}")
    return build_linear(layer, svd_factors(layer.weight), rank)


class SVDFactorization(Factorization):
    """``svd``: a Linear layer's ``T x S`` weight as a rank-``r`` product, ``in -> r -> out``.

    Its factors are the thin SVD of :meth:`matrix_shape`'s matrix; a rank-``r`` factorization
    of an ``m x n`` matrix holds ``r (m + n)`` weights (``r (S + T)`` here).
    """

    name = "svd"
    layer_type = nn.Linear

    def matrix_shape(self, geometry: LayerGeometry) -> tuple[int, int]:
        """``(m, n)`` of the matrix the SVD factorizes: the ``T x S`` weight."""
        return geometry.out_channels, geometry.in_channels

    def max_ranks(self, geometry: LayerGeometry) -> int:
        """``min(m, n)`` of :meth:`matrix_shape` (``min(T, S)``)."""
        return min(self.matrix_shape(geometry))

    def weight_params(self, geometry: LayerGeometry, ranks):
        """``r (m + n)`` of :meth:`matrix_shape` (``r (S + T)``)."""
        rows, cols = self.matrix_shape(geometry)
        return ranks * (rows + cols)

    def macs(self, geometry: LayerGeometry, ranks: int, in_hw: HW, out_hw: HW) -> int:
        """``positions * r * (S + T)``."""
        return out_hw[0] * out_hw[1] * ranks * (geometry.in_channels + geometry.out_channels)

    def decompose(self, weight: Tensor) -> SVDFactors:
        return svd_factors(weight)

    def factors_from_state(self, state: dict[str, Tensor]) -> SVDFactors:
        return SVDFactors.from_state(state)

    def factor_shapes(self, geometry: LayerGeometry) -> dict[str, tuple[int, ...]]:
        """``u (m, k)``, ``s (k,)``, ``vh (k, n)`` with ``k`` the full rank."""
        (rows, cols), full = self.matrix_shape(geometry), self.max_ranks(geometry)
        return {"u": (rows, full), "s": (full,), "vh": (full, cols)}

    def build(self, layer: nn.Module, factors: SVDFactors, ranks: int) -> nn.Sequential:
        return build_linear(layer, factors, ranks)

    def empty(self, layer: nn.Module, ranks: int, device: torch.device | str | None = None) -> nn.Sequential:
        return linear_module(layer, ranks, device)


SVD = SVDFactorization()
