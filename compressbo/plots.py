"""The plotting helpers every report shares: headless pyplot, the convergence curve, reproducible PNGs.

Used by the comparison report (``compressbo.experiments.report``), the kappa study
(``compressbo.experiments.kappa``) and a compression run's report (``compressbo.app.run_report``);
it imports nothing of compressbo, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compressbo.files import atomic_write

__all__ = ["plot_convergence", "pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_convergence(
    axis: Any,
    x: Sequence[float],
    center: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    *,
    label: str,
    fmt: str = "-",
    band_alpha: float = 0.15,
    band_edge: float | None = 0,
    **line: Any,
) -> Any:
    """One convergence curve on ``axis``: a center line (a mean or median) and its band.

    Args:
        axis: A matplotlib ``Axes``.
        x: ``n`` positions (iterations, evaluations, kappas).
        center: ``n`` values of the line.
        low: ``n`` lower edges of the band (``center - std``, a quartile, ...).
        high: ``n`` upper edges of the band.
        label: The legend entry of the line.
        fmt: The line's matplotlib format string.
        band_alpha: The band's opacity; it takes the line's colour.
        band_edge: The band's edge line width; ``None`` for matplotlib's default.
        **line: Further ``Axes.plot`` keywords of the line (``color``, ``lw``, ``marker``, ...).

    Returns:
        The line (a ``Line2D``).
    """
    (drawn,) = axis.plot(x, center, fmt, label=label, **line)
    band = {"color": drawn.get_color(), "alpha": band_alpha}
    if band_edge is not None:
        band["lw"] = band_edge
    axis.fill_between(x, low, high, **band)
    return drawn


def save_figure(figure: Any, path: str | Path) -> None:
    """Write ``figure`` as a PNG and close it.

    No software stamp goes into the file, so a plot regenerated from the same data is
    byte-identical. The file is replaced atomically (a link at ``path`` is replaced, not
    written through).
    """
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", metadata={"Software": None}))
    finally:
        plt.close(figure)
