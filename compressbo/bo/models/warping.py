r"""Input warpings of the GP: the scale on which the GP sees each coordinate of ``x``.

The GP's kernel is stationary on its (transformed) inputs, so the scale decides what it can
resolve. Each warping is a BoTorch ``InputTransform`` applied inside the model, so
acquisitions are still evaluated and maximized over ``x`` in the search box:

- ``none``: ``z = (x - lower) / (upper - lower)`` (BoTorch ``Normalize``), today's GP.
- ``log``: ``z = (log x - log lower) / (log upper - log lower)`` (:class:`LogNormalize`);
  needs ``lower > 0``. A feature living in the lowest percent of a coordinate (the error
  cliff of a layer squeezed below the rank it needs) spans as much of ``z`` as the decade
  above it.
- ``learned``: BoTorch's Kumaraswamy CDF warping ``Warp`` (Snoek et al., 2014) after
  normalizing to the box, its two concentrations per coordinate fitted with the GP's
  hyperparameters by maximum marginal likelihood (:class:`LearnedWarp`).

Every transform here carries its search box as ``search_box`` (``2 x d``), and its name as
``warp``. Add a warping by adding one entry to ``WARPS``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from botorch.models.transforms.input import InputTransform, Normalize, Warp
from torch import Tensor

from compressbo.exceptions import SettingError

__all__ = ["WARPS", "WARP_NAMES", "LearnedWarp", "LogNormalize", "make_input_transform", "validate_warp", "warp_of"]


class BoxNormalize(Normalize):
    """BoTorch ``Normalize`` to a fixed box, carrying ``search_box`` and ``warp = "none"``."""

    warp = "none"

    def __init__(self, bounds: Tensor) -> None:
        """Args: bounds: A ``2 x d`` box, ``lower < upper``."""
        super().__init__(d=bounds.shape[-1], bounds=bounds)
        self.register_buffer("search_box", bounds.clone())


class LogNormalize(InputTransform):
    r"""``z = (log x - log lower) / (log upper - log lower)``: log scale, unit cube.

    Example:
        >>> t = LogNormalize(torch.tensor([[0.01], [1.0]], dtype=torch.float64))
        >>> t(torch.tensor([[0.1]], dtype=torch.float64))
        tensor([[0.5000]], dtype=torch.float64)
    """

    warp = "log"

    def __init__(self, bounds: Tensor) -> None:
        """Args: bounds: A ``2 x d`` box with ``0 < lower < upper``."""
        super().__init__()
        self.transform_on_train = True
        self.transform_on_eval = True
        self.transform_on_fantasize = True
        self.register_buffer("search_box", bounds.clone())
        log_bounds = bounds.log()
        self.register_buffer("log_lower", log_bounds[0])
        self.register_buffer("log_range", log_bounds[1] - log_bounds[0])

    def transform(self, X: Tensor) -> Tensor:
        r"""Args: X: ``batch_shape x n x d`` positive inputs. Returns: same shape, ``[0, 1]`` in the box."""
        # the clamp keeps round-off at a zero lower edge (never inside a valid box) finite
        return (X.clamp_min(torch.finfo(X.dtype).tiny).log() - self.log_lower) / self.log_range

    def untransform(self, X: Tensor) -> Tensor:
        r"""Args: X: ``batch_shape x n x d`` warped inputs. Returns: the inputs ``x``."""
        return (X * self.log_range + self.log_lower).exp()


class LearnedWarp(Warp):
    """BoTorch's Kumaraswamy ``Warp`` of every coordinate after normalizing to the box."""

    warp = "learned"

    def __init__(self, bounds: Tensor) -> None:
        """Args: bounds: A ``2 x d`` box, ``lower < upper``."""
        d = bounds.shape[-1]
        super().__init__(d=d, indices=list(range(d)), bounds=bounds)
        self.to(bounds)
        self.register_buffer("search_box", bounds.clone())


WARPS: dict[str, Callable[[Tensor], InputTransform]] = {
    "none": BoxNormalize,
    "log": LogNormalize,
    "learned": LearnedWarp,
}
WARP_NAMES: tuple[str, ...] = tuple(WARPS)


def validate_warp(warp: str, bounds: Tensor) -> None:
    """Raise a one-line :class:`SettingError` if ``warp`` is unknown or does not fit ``bounds``.

    Args:
        warp: A name from ``WARP_NAMES``.
        bounds: The ``2 x d`` search box.
    """
    if warp not in WARPS:
        raise SettingError(
            f"unknown warp {warp!r}; choose one of: {', '.join(WARP_NAMES)}.", setting="warp"
        )
    if warp == "log" and not bool((bounds[0] > 0).all()):
        raise SettingError(
            f"warp 'log' needs a box with positive lower bounds, got {bounds[0].tolist()}; "
            "use warp 'none' or 'learned'.",
            setting="warp",
        )


def make_input_transform(warp: str, bounds: Tensor) -> InputTransform:
    """The input transform of warping ``warp`` on the box ``bounds`` (``2 x d``, float64)."""
    validate_warp(warp, bounds)
    return WARPS[warp](bounds)


def warp_of(model: torch.nn.Module) -> str:
    """The warping name of a model fitted by ``fit_gp`` (``none`` for a plain ``Normalize``)."""
    return getattr(getattr(model, "input_transform", None), "warp", "none")
