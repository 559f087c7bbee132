"""The shared plotting helpers: one convergence curve, reproducible PNGs."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgba

import compressbo
from compressbo.plots import plot_convergence, pyplot, save_figure


def test_convergence_curve_is_a_line_and_its_band_in_one_colour(tmp_path: Path) -> None:
    plt = pyplot()
    figure, axis = plt.subplots()
    x, center = np.arange(5.0), np.array([3.0, 2.0, 1.5, 1.2, 1.1])
    line = plot_convergence(axis, x, center, center - 0.5, center + 0.5, label="cei", color="C2", lw=2)
    (band,) = axis.collections
    assert line.get_label() == "cei" and line.get_linewidth() == 2
    np.testing.assert_array_equal(line.get_ydata(), center)
    assert tuple(band.get_facecolor()[0]) == to_rgba("C2", alpha=0.15) and band.get_linewidth()[0] == 0
    vertices = band.get_paths()[0].vertices
    assert np.isclose(vertices[:, 1].min(), 0.6) and vertices[:, 1].max() == 3.5  # the band spans low..high
    save_figure(figure, tmp_path / "a.png")
    figure, axis = plt.subplots()
    plot_convergence(axis, x, center, center - 0.5, center + 0.5, label="cei", color="C2", lw=2)
    save_figure(figure, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()  # no stamp: reproducible
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not plt.get_fignums()


def test_one_convergence_plot_and_one_figure_writer_in_the_package() -> None:
    package = Path(compressbo.__file__).parent
    defined = {}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in ("plot_convergence", "save_figure"):
                defined.setdefault(node.name, []).append(path.relative_to(package).as_posix())
    assert defined == {"plot_convergence": ["plots.py"], "save_figure": ["plots.py"]}
