"""Piecewise-linear interpolation through knots, differentiable in ``x``: the one helper behind
the relaxed compression cost (``compressbo.compression.cost``) and the GP's known input scale
(``compressbo.bo.models.warping.KnownScale``)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["interpolate"]


def interpolate(x: Tensor, knots: Tensor, values: Tensor) -> Tensor:
    r"""Piecewise-linear interpolation through ``(knots, values)``, constant outside the knots.

    Args:
        x: Any shape; the points.
        knots: ``K + 1`` ascending, distinct knots (in ``x``'s dtype and device).
        values: ``K + 1`` values at the knots.

    Returns:
        A tensor of ``x``'s shape, differentiable in ``x`` (almost everywhere).

    Example:
        >>> interpolate(torch.tensor([0.25, 2.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.0, 4.0]))
        tensor([1., 4.])
    """
    if knots.numel() == 1:
        return values[0].expand_as(x)
    clamped = x.clamp(knots[0], knots[-1])
    index = torch.searchsorted(knots, clamped.detach().contiguous(), right=True).clamp(1, knots.numel() - 1)
    left, right = knots[index - 1], knots[index]
    weight = (clamped - left) / (right - left)
    return values[index - 1] + weight * (values[index] - values[index - 1])
