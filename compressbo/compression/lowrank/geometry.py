"""A compressible layer's shape (:class:`LayerGeometry`) and the original layer's counts.

A ``Linear`` is a ``1 x 1`` "convolution" with ``out_features x in_features`` channels, so
one geometry serves every factorization. Ranks are an ``int``, or a tuple of ints for a
factorization with one rank per mode (Tucker-2's ``(R_out, R_in)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from torch import nn

__all__ = ["HW", "LayerGeometry", "Ranks", "full_macs", "full_params"]

Ranks = Union[int, tuple[int, int]]
HW = tuple[int, int]  # a spatial size (height, width)


@dataclass(frozen=True)
class LayerGeometry:
    """Channel and kernel sizes of a ``Linear`` or ``Conv2d`` layer.

    Attributes:
        out_channels: ``T`` (``N`` in the vertical/horizontal paper, ``out_features`` of a Linear).
        in_channels: ``S`` (``C``, ``in_features``).
        kernel_size: ``(kh, kw)``; ``(1, 1)`` for a Linear layer.
        bias: Whether the layer has a bias (kept, uncompressed, on the last factor).
    """

    out_channels: int
    in_channels: int
    kernel_size: tuple[int, int] = (1, 1)
    bias: bool = True

    @classmethod
    def of(cls, layer: nn.Module) -> LayerGeometry:
        """The geometry of an ``nn.Linear`` or ``nn.Conv2d`` (``groups == 1``)."""
        if isinstance(layer, nn.Linear):
            return cls(layer.out_features, layer.in_features, (1, 1), layer.bias is not None)
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            return cls(layer.out_channels, layer.in_channels, (kh, kw), layer.bias is not None)
        raise TypeError(f"expected nn.Linear or nn.Conv2d, got {type(layer).__name__}")

    @property
    def kernel_area(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1]

    @property
    def bias_params(self) -> int:
        return self.out_channels if self.bias else 0


def full_params(geometry: LayerGeometry) -> int:
    """Parameters of the original layer: ``T * S * kh * kw`` (+ ``T`` bias)."""
    g = geometry
    return g.out_channels * g.in_channels * g.kernel_area + g.bias_params


def full_macs(geometry: LayerGeometry, out_hw: HW) -> int:
    """Multiply-accumulates of the original layer for one input (``out_hw``: output positions)."""
    return out_hw[0] * out_hw[1] * (full_params(geometry) - geometry.bias_params)
