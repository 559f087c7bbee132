"""Artifacts of a compression run: convergence and Pareto plots, and ``report.md``.

Pure functions of what the run directory holds (``history.jsonl`` records, ``best.json``,
the settings), so a finished run's artifacts can be regenerated without recomputation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compressbo.app import deploy_report
from compressbo.files import write_text_atomic
from compressbo.plots import plot_convergence, pyplot, save_figure

plt = pyplot()

__all__ = ["plot_run_convergence", "plot_pareto", "markdown_report", "regenerate", "write_artifacts", "ARTIFACTS"]

ARTIFACTS = ("convergence.png", "pareto.png", "report.md")


def _objective_label(settings: dict[str, Any]) -> str:
    measure = "distance" if settings["objective"] == "distill" else "error"
    for name, metric in (("target_ratio", "params"), ("target_flops", "flops")):
        if settings.get(name) is not None:
            return f"{measure} subject to {metric} cost <= {settings[name]:g}"
    cost = "ratio" if settings.get("cost", "params") == "params" else f"{settings['cost']} ratio"
    return f"{cost} + {settings['gamma']:g} * {measure}"


def plot_run_convergence(history: list[dict[str, Any]], settings: dict[str, Any], path: Path) -> None:
    """Posterior mean (+-1 std) of the recommended point, and every observation, vs evaluation."""
    n = [r["iteration"] + 1 for r in history]
    mean = [r["recommended"]["mean"] for r in history]
    std = [r["recommended"]["std"] or 0.0 for r in history]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    ax.scatter(n, [r["y"] for r in history], s=12, color="0.6", label="observed y (subsample)")
    low, high = [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)]
    plot_convergence(ax, n, mean, low, high, label="recommended: posterior mean", band_alpha=0.2, band_edge=None,
                     color="C0", lw=2)
    n_init = sum(r["phase"] == "init" for r in history)
    if 0 < n_init < len(history):
        ax.axvline(n_init + 0.5, color="0.3", ls=":", lw=1, label="end of initial design")
    ax.set_xlabel("evaluation")
    ax.set_ylabel(f"objective  {_objective_label(settings)}")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_pareto(
    history: list[dict[str, Any]], best: dict[str, Any], path: Path, frontier: dict[str, Any] | None = None
) -> None:
    """Subsample error vs cost of every evaluation; the recommendation marked; the predicted frontier.

    Without a ``frontier`` (``frontier.json``'s document) the cost axis is the compression
    ratio; with one it is the frontier's cost, and the GP's predicted best error per budget is
    drawn with a band of two posterior standard deviations.
    """
    flops = frontier is not None and frontier["cost"] == "flops"
    cost_of = (lambda r: r["cost"] if r.get("cost") is not None else r["ratio"]) if flops else (lambda r: r["ratio"])
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    if frontier is not None and frontier["points"]:
        budgets = [p["budget"] for p in frontier["points"]]
        mean = [p["predicted_error"] for p in frontier["points"]]
        std = [p["std"] for p in frontier["points"]]
        ax.plot(budgets, mean, color="C1", lw=2, drawstyle="steps-post", label="predicted best error per budget (GP model)")
        ax.fill_between(
            budgets, [m - 2 * s for m, s in zip(mean, std)], [m + 2 * s for m, s in zip(mean, std)],
            step="post", color="C1", alpha=0.2, label="+- 2 posterior std",
        )
    points = ax.scatter(
        [cost_of(r) for r in history],
        [r["error"] for r in history],
        c=[r["iteration"] for r in history],
        cmap="viridis",
        s=18,
        label="evaluated (subsample error)",
    )
    fig.colorbar(points, ax=ax, label="evaluation")
    ax.scatter(
        [best["cost"] if flops else best["ratio"]], [best["error"]], marker="*", s=260, color="C3", edgecolor="k", zorder=3,
        label="recommended (full-set error)",
    )
    if best.get("original_error") is not None:
        ax.axhline(best["original_error"], color="0.3", ls="--", lw=1, label="original network (full set)")
    ax.set_xlabel(
        "FLOPs ratio of the compressed layers" if flops else "compression ratio (compressed / original parameters)"
    )
    ax.set_ylabel("top-1 error")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)):
        return " x ".join(_fmt(v) for v in value)  # Tucker-2 ranks (R_out, R_in)
    return str(value)


def markdown_report(history: list[dict[str, Any]], best: dict[str, Any], settings: dict[str, Any]) -> str:
    """``report.md``: the run's settings, the recommended point's full-set metrics, per-layer table."""
    lines = [
        f"# compressbo run: {settings['model']} with {settings['acq']}",
        "",
        f"{best['evaluations']} evaluations ({sum(r['phase'] == 'init' for r in history)} initial Sobol points), "
        f"m = {settings['samples']} validation examples each, gamma = {settings['gamma']}, "
        f"objective = {settings['objective']}, seed = {settings['seed']}"
        + (", stopped early by kappa" if best.get("stopped_by_kappa") else "")
        + ".",
        "",
        "## Recommended point (full validation set)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| compression ratio (compressed layers) | {_fmt(best['ratio'])} |",
        f"| whole-model parameter ratio | {_fmt(best['model_ratio'])} |",
        f"| FLOPs ratio | {_fmt(best['flops_ratio'])} |",
        *([f"| cost: FLOPs ratio of the compressed layers | {_fmt(best['cost'])} |"]
          if best.get("cost_metric") == "flops" else []),
        f"| top-1 error, compressed | {_fmt(best['error'])} |",
        f"| top-1 error, original | {_fmt(best['original_error'])} |",
        *([f"| logit distance to the original | {_fmt(best['distance'])} |"] if "distance" in best else []),
        *_budget_lines(best.get("budget")),
        f"| objective ({_objective_label(settings)}) | {_fmt(best['error'] if best.get('budget') else best['score'])} |",
        f"| posterior mean (std) of the objective | {_fmt(best['posterior_mean'])} ({_fmt(best['posterior_std'])}) |",
        f"| validation examples | {_examples(best)} |",
        *_refinement_lines(best.get("refinement")),
        *deploy_report.sections(best),
        "",
        "## Layers",
        "",
        "| layer | method | theta | original rank | chosen rank | parameters before | parameters after | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for theta, layer in zip(best["theta"], best["layers"]):
        lines.append(
            f"| {layer['name']} | {layer['method']} | {theta:.3f} | {_fmt(layer['full_ranks'])} | "
            f"{'unchanged' if layer.get('kept') else _fmt(layer['ranks'])} | {layer['params_before']:,} | {layer['params_after']:,} | {layer['ratio']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def _budget_lines(budget: dict[str, Any] | None) -> list[str]:
    """The budget's rows: the bound, the exact cost achieved, the full-set error."""
    if not budget:
        return []
    return [
        f"| budget ({budget['setting']}): {budget['cost']} cost <= | {_fmt(budget['bound'])} |",
        f"| exact {budget['cost']} cost achieved | {_fmt(budget['achieved_cost'])} ({'met' if budget['met'] else 'NOT met'}) |",
        f"| full-set error at the budget | {_fmt(budget['error'])} |",
    ]


def _examples(best: dict[str, Any]) -> str:
    """How many examples the final stage scored, and whether they were a subset."""
    if best.get("final_samples") is None:
        return f"{best['samples']:,} (the full validation set)" if "validation_size" in best else str(best["samples"])
    return (f"{best['samples']:,}: a fixed seeded subset of the {best['validation_size']:,} validation examples "
            "(--final-samples)")


def _refinement_lines(refinement: dict[str, Any] | None) -> list[str]:
    """The HOOI refinement of the Tucker-2 layers, when the run had any."""
    if refinement is None:
        return []
    if "p_value" not in refinement:  # a run from before the paired test
        verdict = "kept (the metrics above are the refined model's)" if refinement["kept"] else "not kept: no better"
        test = ""
    else:
        verdict = ("kept (the metrics above are the refined model's)" if refinement["kept"]
                   else "not kept: the improvement is not significant" if refinement["score_after"] < refinement["score_before"]
                   else "not kept: no better")
        test = (f" Paired test ({refinement['test']}): better on {refinement['improved']} examples, worse on "
                f"{refinement['worsened']}, p = {refinement['p_value']:.3g}; kept only if p < {refinement['alpha']} "
                "and the objective is lower.")
    return [
        "",
        f"Tucker-2 factors refined by HOOI at the chosen ranks: error {_fmt(refinement['error_before'])} "
        f"-> {_fmt(refinement['error_after'])}, objective {_fmt(refinement['score_before'])} -> "
        f"{_fmt(refinement['score_after'])}; {verdict}.{test}",
    ]


def write_artifacts(directory: Path, history: list[dict[str, Any]], best: dict[str, Any], settings: dict[str, Any]) -> None:
    """Write ``convergence.png``, ``pareto.png`` and ``report.md`` into ``directory``.

    A ``frontier.json`` in ``directory`` (the predicted trade-off curve) joins the Pareto plot
    and the report.
    """
    import json

    directory = Path(directory)
    path = directory / "frontier.json"
    frontier = json.loads(path.read_text()) if path.is_file() and not path.is_symlink() else None
    plot_run_convergence(history, settings, directory / "convergence.png")
    plot_pareto(history, best, directory / "pareto.png", frontier)
    write_text_atomic(directory / "report.md", markdown_report(history, best, settings) + _frontier_section(frontier))


FRONTIER_ROWS = 8


def _frontier_section(frontier: dict[str, Any] | None) -> str:
    """``report.md``'s predicted trade-off curve: a few budgets of ``frontier.json``, said to be a prediction."""
    if not frontier or not frontier.get("points"):
        return ""
    points = frontier["points"]
    step = max(1, len(points) // FRONTIER_ROWS)
    shown = points[::step] + ([points[-1]] if (len(points) - 1) % step else [])
    lines = [
        "",
        "## Predicted trade-off curve (a model prediction)",
        "",
        f"{frontier['note']} Every budget is in frontier.json; the curve is drawn in pareto.png.",
        "",
        f"| {frontier['cost']} budget | predicted {frontier.get('measure', 'error')} (+- 2 std) | exact cost | ranks |",
        "|---|---|---|---|",
    ]
    for p in shown:
        lines.append(
            f"| {p['budget']:.4f} | {p['predicted_error']:.4f} (+- {2 * p['std']:.4f}) | {p['cost']:.4f} | {', '.join(_fmt(r) for r in p['ranks'])} |"
        )
    return "\n".join(lines) + "\n"


def regenerate(directory: str | Path) -> list[str]:
    """Rewrite a finished compress run's artifacts from its files (no evaluation).

    Returns:
        The names of the files written (:data:`ARTIFACTS`).

    Raises:
        UserInputError: ``directory`` is not a compress run, it has not finished, or its
            exported model is torn or altered (a full disk at export).
    """
    from compressbo.app.rundir import RunDirectory

    run = RunDirectory.open(directory)
    try:
        return _regenerate(run)
    finally:
        run.close()


def _regenerate(run) -> list[str]:
    """:func:`regenerate` once the run directory is open (and locked)."""
    from compressbo.exceptions import RunDirError, WeightsError
    from compressbo.app.rundir import MODEL
    from compressbo.compression.export import verify_export

    settings = run.config.get("settings")
    if not (run.path / "best.json").is_file():
        raise RunDirError(
            f"{run.path} has no best.json: the run has not finished; finish it with "
            f"compressbo compress --resume {run.path}"
        )
    best = run.read_json("best.json")
    try:
        weights_path, document = verify_export(run.path / MODEL)
    except WeightsError as error:
        raise RunDirError(
            f"{run.path}: its exported model is torn or missing ({error}); export it again with "
            f"compressbo compress --resume {run.path}"
        ) from None
    if isinstance(best, dict) and best.get("model_sha256") not in (None, document.get("state_dict_sha256")):
        raise RunDirError(
            f"{run.path}: {weights_path} is not the model best.json describes; export it again with "
            f"compressbo compress --resume {run.path}"
        )
    write_artifacts(run.path, run.history(repair=False), best, settings)
    return list(ARTIFACTS)
