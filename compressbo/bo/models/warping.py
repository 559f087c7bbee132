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
- ``spectral``: a scale the *problem* knows, then the learned warp (:class:`KnownScaleWarp`):
  each coordinate passes through a monotone piecewise-linear map ``g_j`` (a
  :class:`KnownScale`), is normalized so that the box maps to ``[0, 1]``, and is then warped
  by a Kumaraswamy CDF fitted with the GP. A compression problem supplies, per layer, the
  log of the weight energy its truncation keeps at each rank breakpoint
  (``compressbo.compression.energy``), so the GP starts from the layer's own spectrum instead
  of ``theta``; the learned warp then adjusts that start. Only problems with such a scale.
- ``activation``: the same transform on another known scale: the log of the layer's *output*
  energy on calibration inputs that its truncation keeps (a compression problem's layers: SVD,
  Tucker-2 and vertical/horizontal alike).

Every transform here carries its search box as ``search_box`` (``2 x d``), and its name as
``warp``. Add a warping by adding one entry to ``WARPS``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from botorch.models.transforms.input import InputTransform, Normalize, Warp
from torch import Tensor

from compressbo._piecewise import interpolate
from compressbo.exceptions import SettingError

__all__ = [
    "WARPS",
    "WARP_NAMES",
    "KnownScale",
    "KnownScaleWarp",
    "LearnedWarp",
    "LogNormalize",
    "known_scale_of",
    "make_input_transform",
    "needs_known_scale",
    "validate_warp",
    "warp_of",
]


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


@dataclass(frozen=True)
class KnownScale:
    r"""A known monotone scale per coordinate: ``g_j(x_j)``, piecewise linear through knots.

    ``g_j`` is constant below its first knot and above its last. The problem supplies it as
    plain numbers (the BO side knows nothing of where they come from).

    Attributes:
        knots: Per coordinate, ascending distinct ``x`` knots (``K_j + 1`` floats).
        values: Per coordinate, the non-decreasing finite values of ``g_j`` at its knots.

    Example:
        >>> scale = KnownScale(knots=((0.1, 0.5, 1.0),), values=((-3.0, -1.0, 0.0),))
        >>> scale(torch.tensor([[0.3]], dtype=torch.float64))
        tensor([[-2.]], dtype=torch.float64)
    """

    knots: tuple[tuple[float, ...], ...]
    values: tuple[tuple[float, ...], ...]
    _tensors: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        knots = tuple(tuple(float(t) for t in row) for row in self.knots)
        values = tuple(tuple(float(v) for v in row) for row in self.values)
        object.__setattr__(self, "knots", knots)
        object.__setattr__(self, "values", values)
        if len(knots) != len(values) or not knots:
            raise SettingError(
                f"a known scale needs knots and values for every coordinate, got {len(knots)} and {len(values)}",
                setting="warp",
            )
        for j, (row, vals) in enumerate(zip(knots, values)):
            t, v = torch.tensor(row, dtype=torch.float64), torch.tensor(vals, dtype=torch.float64)
            if t.numel() == 0 or t.numel() != v.numel():
                raise SettingError(f"coordinate {j} of the known scale has {t.numel()} knots and {v.numel()} values", setting="warp")
            if not bool(torch.isfinite(t).all() and torch.isfinite(v).all()):
                raise SettingError(f"coordinate {j} of the known scale has a value that is not finite", setting="warp")
            if not bool((t.diff() > 0).all() and (v.diff() >= 0).all()):
                raise SettingError(
                    f"coordinate {j} of the known scale must have ascending knots and non-decreasing values",
                    setting="warp",
                )

    @property
    def dim(self) -> int:
        """The number of coordinates ``d``."""
        return len(self.knots)

    def _as_tensors(self, like: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per coordinate ``(knots, values)`` in ``like``'s dtype and device (made once, then reused)."""
        key = (like.dtype, like.device)
        if key not in self._tensors:
            self._tensors[key] = [(like.new_tensor(t), like.new_tensor(v)) for t, v in zip(self.knots, self.values)]
        return self._tensors[key]

    def __call__(self, X: Tensor) -> Tensor:
        r"""Args: X: ``batch_shape x d``. Returns: ``g(X)``, same shape, differentiable in ``X``."""
        columns = [interpolate(X[..., j], t, v) for j, (t, v) in enumerate(self._as_tensors(X))]
        return torch.stack(columns, dim=-1)

    def inverse(self, G: Tensor) -> Tensor:
        r"""The smallest ``x`` with ``g(x) = G`` per coordinate (``batch_shape x d``), clamped to the knots."""
        columns = []
        for j, (t, v) in enumerate(self._as_tensors(G)):
            first = torch.cat([v.new_ones(1, dtype=torch.bool), v.diff() > 0])  # the left end of each flat run
            columns.append(interpolate(G[..., j], v[first], t[first]))
        return torch.stack(columns, dim=-1)


class KnownScaleWarp(Warp):
    r"""A known scale, normalized to the box, then BoTorch's Kumaraswamy ``Warp``.

    ``u_j = (g_j(x_j) - g_j(l_j)) / (g_j(u_j) - g_j(l_j))`` for the box ``[l, u]`` (``x``
    itself normalized where ``g_j`` is constant on the box), then ``z_j = 1 - (1 -
    u_j^{a_j})^{b_j}`` with the concentrations ``a_j, b_j`` fitted with the GP.

    Example:
        >>> box = torch.tensor([[0.1], [1.0]], dtype=torch.float64)
        >>> scale = KnownScale(knots=((0.1, 0.5, 1.0),), values=((-3.0, -1.0, 0.0),))
        >>> KnownScaleWarp(box, scale).transform(torch.tensor([[0.5]], dtype=torch.float64)).detach()
        tensor([[0.6667]], dtype=torch.float64)
    """

    def __init__(self, bounds: Tensor, scale: KnownScale, warp: str = "spectral") -> None:
        """Args: bounds: A ``2 x d`` box, ``lower < upper``. scale: Its coordinates' known scale
        (``d``). warp: The warping's name (``spectral`` or ``activation``: which scale it is)."""
        d = bounds.shape[-1]
        if scale.dim != d:
            raise SettingError(f"the known scale has {scale.dim} coordinates but the box has {d}", setting="warp")
        unit = torch.stack([torch.zeros(d), torch.ones(d)]).to(bounds)
        super().__init__(d=d, indices=list(range(d)), bounds=unit)
        self.to(bounds)
        self.warp, self.scale = warp, scale
        self.register_buffer("search_box", bounds.clone())
        ends = scale(bounds)
        span = ends[1] - ends[0]
        flat = span <= 1e-12 * ends.abs().amax(dim=0).clamp_min(1.0)
        self.register_buffer("flat", flat)
        self.register_buffer("offset", torch.where(flat, bounds[0], ends[0]))
        self.register_buffer("span", torch.where(flat, bounds[1] - bounds[0], span))

    def scaled(self, X: Tensor) -> Tensor:
        r"""``u``: the known scale on the unit cube. Args: X: ``batch_shape x d`` in the box."""
        G = torch.where(self.flat, X, self.scale(X))
        return ((G - self.offset) / self.span).clamp(0.0, 1.0)

    def _transform(self, X: Tensor) -> Tensor:
        return self._warp_transform(X=self.scaled(X))

    def _untransform(self, X: Tensor) -> Tensor:
        G = super()._untransform(X) * self.span + self.offset
        return torch.where(self.flat, G, self.scale.inverse(G))


@dataclass(frozen=True)
class _WarpEntry:
    """How a warping is built: from the box alone, or from the box and the problem's known scale."""

    build: Callable[..., InputTransform]
    needs_known_scale: bool = False


WARPS: dict[str, _WarpEntry] = {
    "none": _WarpEntry(BoxNormalize),
    "log": _WarpEntry(LogNormalize),
    "learned": _WarpEntry(LearnedWarp),
    "spectral": _WarpEntry(KnownScaleWarp, needs_known_scale=True),
    "activation": _WarpEntry(functools.partial(KnownScaleWarp, warp="activation"), needs_known_scale=True),
}
WARP_NAMES: tuple[str, ...] = tuple(WARPS)


def needs_known_scale(warp: str) -> bool:
    """Whether warping ``warp`` is built from a problem's :class:`KnownScale` (``spectral``, ``activation``)."""
    return warp in WARPS and WARPS[warp].needs_known_scale


def validate_warp(warp: str, bounds: Tensor, known_scale: KnownScale | None = None) -> None:
    """Raise a one-line :class:`SettingError` if ``warp`` is unknown or does not fit ``bounds``.

    Args:
        warp: A name from ``WARP_NAMES``.
        bounds: The ``2 x d`` search box.
        known_scale: The problem's known scale, which ``spectral`` and ``activation`` need (``d`` coordinates).
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
    if needs_known_scale(warp):
        if known_scale is None:
            raise SettingError(
                f"warp {warp!r} needs a known scale of every coordinate (a compression problem's "
                "layer spectra), which this problem does not have; use warp 'log' or 'learned'.",
                setting="warp",
            )
        if known_scale.dim != bounds.shape[-1]:
            raise SettingError(
                f"the known scale has {known_scale.dim} coordinates but the box has {bounds.shape[-1]}",
                setting="warp",
            )


def make_input_transform(warp: str, bounds: Tensor, known_scale: KnownScale | None = None) -> InputTransform:
    """The input transform of warping ``warp`` on the box ``bounds`` (``2 x d``, float64).

    ``known_scale``: the problem's :class:`KnownScale`; used (and required) by ``spectral`` and ``activation`` only.
    """
    validate_warp(warp, bounds, known_scale)
    entry = WARPS[warp]
    return entry.build(bounds, known_scale) if entry.needs_known_scale else entry.build(bounds)


def warp_of(model: torch.nn.Module) -> str:
    """The warping name of a model fitted by ``fit_gp`` (``none`` for a plain ``Normalize``)."""
    return getattr(getattr(model, "input_transform", None), "warp", "none")


def known_scale_of(model: torch.nn.Module) -> KnownScale | None:
    """The :class:`KnownScale` a model fitted by ``fit_gp`` was warped with (None for the other warpings)."""
    return getattr(getattr(model, "input_transform", None), "scale", None)
