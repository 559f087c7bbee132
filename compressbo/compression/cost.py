r"""The known cost of a compression: exact at integer ranks, and its continuous relaxation.

The cost of ``theta`` is a ratio over the compressed layers, compressed / original:

- ``params``: their parameters (the objective's ``ratio``, the paper's);
- ``flops``: their multiply-accumulates for one ``spec.input_size`` input, every call of a
  layer counted with its own input and output sizes (so strides and padding are exact).

Both are computed from the ranks alone (microseconds), never by evaluating a network.
``theta -> ranks`` is a step function (:func:`~compressbo.compression.lowrank.rank_breakpoints`),
so the exact cost is piecewise constant. The **relaxed** cost interpolates it linearly in
each layer's ``theta`` between the rank breakpoints ``t_0 < ... < t_K`` (constant below
``t_0`` and above ``t_K``), so it equals the exact cost wherever every ``theta_l`` is a
breakpoint, lies between the costs of neighbouring ranks elsewhere, and is differentiable
almost everywhere: an acquisition optimizer can follow its gradient. Under the ``params``
scheme with the ``params`` cost each layer's relaxed count is ``theta_l * full_params_l``
between ``t_0`` and ``t_K``.

:class:`CompressionCost` is a plain callable on tensors, so the BO side can use it without
knowing anything of networks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from compressbo._piecewise import interpolate
from compressbo.compression.lowrank import (
    Ranks,
    factorized_macs,
    factorized_params,
    full_macs,
    full_params,
    keeps_original,
    layer_ranks,
    rank_knots,
)
from compressbo.exceptions import SettingError

__all__ = ["COSTS", "CompressionCost", "check_cost"]



@dataclass(frozen=True)
class _Metric:
    """How one cost metric counts a layer: as the original, and factorized at ``ranks``.

    Both take the layer's ``(geometry, method, calls)``; ``calls`` lists the ``(in_hw, out_hw)``
    of each of its calls for one input.
    """

    full: Callable[[tuple], int]
    factorized: Callable[[tuple, Ranks], int]


_METRICS: dict[str, _Metric] = {
    "params": _Metric(
        full=lambda layer: full_params(layer[0]),
        factorized=lambda layer, ranks: factorized_params(layer[0], layer[1], ranks),
    ),
    "flops": _Metric(
        full=lambda layer: sum(full_macs(layer[0], out_hw) for _, out_hw in layer[2]),
        factorized=lambda layer, ranks: sum(
            factorized_macs(layer[0], layer[1], ranks, in_hw, out_hw) for in_hw, out_hw in layer[2]
        ),
    ),
}
COSTS: tuple[str, ...] = tuple(_METRICS)


def check_cost(metric: str) -> None:
    """A one-line :class:`SettingError` unless ``metric`` is one of ``COSTS``."""
    if metric not in COSTS:
        raise SettingError(f"unknown cost {metric!r}; choose one of {', '.join(COSTS)}", setting="cost")


class CompressionCost:
    r"""``theta -> cost``: exact (integer ranks) and relaxed (piecewise linear in ``theta``).

    Example:
        >>> cost = CompressionCost.of(compressor, "flops")
        >>> cost.exact_for_ranks(compressor.ranks([0.1, 0.2, 1.0]))  # float
        >>> cost(torch.rand(8, 1, 3))            # relaxed: 8 x 1, differentiable

    Args:
        layers: Per compressible layer, ``(geometry, method, calls)``; ``calls`` lists the
            ``(in_hw, out_hw)`` spatial sizes of each call for one input.
        metric: ``params`` or ``flops``.
        scheme: The compressor's rank scheme (``params`` or ``plain``).
    """

    def __init__(self, layers: Sequence[tuple], metric: str, scheme: str) -> None:
        check_cost(metric)
        self.metric, self.scheme = metric, scheme
        self._layers = list(layers)
        self.before = float(sum(self._full_count(layer) for layer in self._layers))
        self._thetas: list[Tensor] = []
        self._counts: list[Tensor] = []
        for layer in self._layers:
            thetas, ranks = rank_knots(layer[0], layer[1], scheme)  # theta = 1 keeps the layer: its own count
            self._thetas.append(torch.tensor(thetas, dtype=torch.float64))
            self._counts.append(torch.tensor([float(self.count(layer, r)) for r in ranks], dtype=torch.float64))

    @classmethod
    def of(cls, compressor, metric: str) -> CompressionCost:
        """The cost of a :class:`~compressbo.compression.compressor.Compressor`'s layers."""
        return cls(compressor.layer_geometries(), metric, compressor.scheme)

    @property
    def dim(self) -> int:
        """Number of compressible layers ``d``."""
        return len(self._layers)

    def count(self, layer: tuple, ranks: Ranks) -> int:
        """Parameters (or MACs over all calls) of one layer factorized at ``ranks``.

        Ranks no smaller than the layer keep the original layer (:func:`keeps_original`): its
        own count.
        """
        if keeps_original(layer[0], layer[1], ranks):
            return self._full_count(layer)
        return _METRICS[self.metric].factorized(layer, ranks)

    def _full_count(self, layer: tuple) -> int:
        return _METRICS[self.metric].full(layer)

    def exact_for_ranks(self, ranks: Sequence[Ranks]) -> float:
        """The exact cost at explicit per-layer ranks."""
        return sum(self.count(layer, r) for layer, r in zip(self._layers, ranks)) / self.before

    def exact(self, theta: Sequence[float] | Tensor) -> float:
        """The exact cost of ``theta`` (``d``): each layer at its integer ranks (:func:`layer_ranks`)."""
        values = torch.as_tensor(theta, dtype=torch.float64).reshape(-1).tolist()
        if len(values) != self.dim:
            raise SettingError(f"theta has {len(values)} values but the cost has {self.dim} layers", setting="cost")
        ranks = [layer_ranks(t, layer[0], layer[1], self.scheme) for t, layer in zip(values, self._layers)]
        return self.exact_for_ranks(ranks)

    def breakpoints(self, layer: int) -> Tensor:
        """The rank breakpoints ``t_0 < ... < t_K`` of layer ``layer`` (float64)."""
        return self._thetas[layer].clone()

    def minimum(self) -> float:
        """The smallest achievable cost: every layer at its smallest ranks."""
        return float(sum(counts[0] for counts in self._counts)) / self.before

    def maximum(self, upper: Sequence[float] | Tensor | None = None) -> float:
        """The largest cost within ``theta <= upper`` (default: every ``theta = 1``)."""
        upper = torch.ones(self.dim, dtype=torch.float64) if upper is None else torch.as_tensor(upper, dtype=torch.float64)
        return float(self(upper.reshape(1, -1)).item())

    def __call__(self, X: Tensor) -> Tensor:
        r"""The relaxed cost of a batch of ``theta``.

        Args:
            X: A ``batch_shape x d`` tensor (e.g. ``b x q x d`` candidates of an acquisition).

        Returns:
            A ``batch_shape`` tensor in ``X``'s dtype, differentiable in ``X``.
        """
        if X.shape[-1] != self.dim:
            raise SettingError(f"theta has {X.shape[-1]} values per point but the cost has {self.dim} layers", setting="cost")
        total = torch.zeros(X.shape[:-1], dtype=X.dtype, device=X.device)
        for i, (thetas, counts) in enumerate(zip(self._thetas, self._counts)):
            total = total + interpolate(X[..., i], thetas.to(X), counts.to(X))
        return total / self.before

