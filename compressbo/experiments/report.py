"""Plots and Markdown summaries of a comparison, as pure functions of its ``runs.json``.

``compressbo compare`` writes them when it finishes and ``compressbo report DIR`` regenerates
them from ``DIR/runs.json`` alone: the same histories give byte-identical files. Files:
``summary.md``, ``convergence.png`` and, for problems that record the full-set metrics of each
run's final recommendation (compression problems), ``recommendations.png`` (error vs ratio).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from compressbo.exceptions import RunDirError
from compressbo.files import write_text_atomic
from compressbo.plots import plot_convergence, pyplot, save_figure
from compressbo.experiments.scores import SCORE_DESCRIPTIONS, SCORE_FIELDS

RUNS_FILE = "runs.json"
PLOT_FILE = "convergence.png"
RECOMMENDATIONS_FILE = "recommendations.png"
SUMMARY_FILE = "summary.md"
REFERENCES = ("cei", "logcei", "cei@none")  # cei@none: today's GP, when variants compare warpings
TIE_RTOL = 1e-9  # final scores this close count as ties


def load_comparison(directory: str | Path) -> dict[str, Any]:
    """Read ``directory/runs.json``.

    Raises:
        RunDirError: The file is missing or is not a compressbo comparison.
    """
    path = Path(directory) / RUNS_FILE
    try:
        comparison = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(
            f"{path} not found; give a directory written by 'compressbo compare'"
        ) from None
    except (OSError, json.JSONDecodeError) as error:
        raise RunDirError(f"cannot read {path}: {error}") from None
    if not isinstance(comparison, dict) or not (
        str(comparison.get("format", "")).startswith("compressbo.compare/") or comparison.get("format") in FORMAT_2
    ):
        raise RunDirError(f"{path} is not a compressbo comparison (no 'format' field)")
    return upgraded(comparison)


FORMAT_2 = ("compressbo.compare/2", "compressbo.experiments.compare/2")  # its two names, before and after the subpackages


def upgraded(comparison: dict[str, Any]) -> dict[str, Any]:
    """A comparison in today's format (``compressbo.compare/3``) from one in format 2.

    Format 2 (compressbo before the one loop) kept ``{"x", "y", "yvar"}`` per initial point
    and ``step_time`` / ``recommended_x`` per step; today every entry is a loop record.
    """
    from compressbo.bo.loop import normalize_record

    if comparison.get("format") not in FORMAT_2:
        return comparison
    for run in comparison.get("runs", []):
        n_init = len(run.get("initial_design", []))
        run["initial_design"] = [
            {"iteration": i, "phase": "init", **normalize_record(entry)} for i, entry in enumerate(run.get("initial_design", []))
        ]
        run["steps"] = [
            {"iteration": n_init + i, "phase": "bo", **normalize_record(step)} for i, step in enumerate(run.get("steps", []))
        ]
        if "initial_recommendation" in run:
            initial = normalize_record(run["initial_recommendation"])
            run["initial_recommendation"] = {"recommended": initial.get("recommended"), "score": initial.get("score")}
    comparison["format"] = "compressbo.compare/3"
    return comparison


def write_report(comparison: dict[str, Any], directory: str | Path) -> list[str]:
    """Write ``convergence.png``, ``summary.md`` (and ``recommendations.png``) into ``directory``.

    Returns:
        The names of the files written.
    """
    directory = Path(directory)
    written = [PLOT_FILE, SUMMARY_FILE]
    plot_comparison_convergence(comparison, directory / PLOT_FILE)
    write_text_atomic(directory / SUMMARY_FILE, summary_markdown(comparison))
    if final_metrics(comparison):
        plot_recommendations(comparison, directory / RECOMMENDATIONS_FILE)
        written.append(RECOMMENDATIONS_FILE)
    return written


def run_curve(run: dict[str, Any], rule: str = "recommendation") -> list[float | None] | None:
    """One run's scores under ``rule`` (a ``SCORE_FIELDS`` name), column 0 after the initial
    design; ``None`` where the run did not record that rule."""
    field = SCORE_FIELDS[rule]
    if field is None:
        return [run["initial_recommendation"]["score"]] + [step["score"] for step in run["steps"]]
    return run.get(field)


def available_rules(comparison: dict[str, Any]) -> list[str]:
    """The scoring rules every finished run of ``comparison`` recorded, in ``SCORE_FIELDS`` order."""
    runs = comparison["runs"]
    return [rule for rule in SCORE_FIELDS if runs and all(run_curve(r, rule) is not None for r in runs)]


def score_curves(comparison: dict[str, Any], rule: str = "recommendation") -> dict[str, np.ndarray]:
    """Score per run and iteration under ``rule`` (default: of the recommended point).

    Returns:
        For each acquisition with finished runs (in the comparison's order), a
        ``runs x (iterations + 1)`` array; column 0 follows the initial design, NaN marks
        iterations that were not scored (``score_every``). Runs with fewer steps than the
        longest are left out.
    """
    curves = {}
    for name in comparison["settings"]["acquisitions"]:
        rows = [
            run_curve(run, rule)
            for run in comparison["runs"]
            if run["acquisition"] == name and run_curve(run, rule) is not None
        ]
        if rows:
            length = max(map(len, rows))
            rows = [[np.nan if v is None else v for v in row] for row in rows if len(row) == length]
            curves[name] = np.array(rows, dtype=float)
    return curves


def final_scores(comparison: dict[str, Any], rule: str = "recommendation") -> dict[str, dict[int, float]]:
    """Final score of each finished run under ``rule``: ``{acquisition: {seed: score}}``."""
    scores: dict[str, dict[int, float]] = {}
    for run in comparison["runs"]:
        curve = run_curve(run, rule)
        if curve is not None:
            scores.setdefault(run["acquisition"], {})[run["seed"]] = curve[-1]
    return scores


def final_metrics(comparison: dict[str, Any]) -> dict[str, list[dict[str, float]]]:
    """Full-set metrics of each run's final recommendation: ``{acquisition: [metrics]}``.

    Empty for problems that record none (synthetic problems).
    """
    metrics: dict[str, list[dict[str, float]]] = {}
    for run in comparison["runs"]:
        if "final_metrics" in run:
            metrics.setdefault(run["acquisition"], []).append(run["final_metrics"])
    return metrics


def mean_step_times(comparison: dict[str, Any]) -> dict[str, float]:
    """Mean wall time of one BO step (fit + acquisition maximization) per acquisition."""
    times: dict[str, list[float]] = {}
    for run in comparison["runs"]:
        times.setdefault(run["acquisition"], []).extend(s["seconds_bo"] for s in run["steps"])
    return {name: float(np.mean(values)) for name, values in times.items() if values}


def paired_wilcoxon(
    reference: dict[int, float], other: dict[int, float]
) -> tuple[float | None, int, int, int]:
    """Two-sided Wilcoxon signed-rank test of final scores, paired by seed.

    Args:
        reference: ``{seed: score}`` of the reference acquisition.
        other: ``{seed: score}`` of the acquisition it is compared with.

    Returns:
        ``(p, n, wins, losses)``: the p-value (``1.0`` when all pairs tie, ``None`` with no
        common seed), the number of common seeds, and on how many of them the reference
        scored lower (wins) or higher (losses). Scores equal up to a relative ``TIE_RTOL``
        are ties, which the test drops (``zero_method="wilcox"``).
    """
    from scipy.stats import wilcoxon

    seeds = sorted(set(reference) & set(other))
    a = np.array([reference[s] for s in seeds])
    b = np.array([other[s] for s in seeds])
    b = np.where(np.isclose(a, b, rtol=TIE_RTOL, atol=0.0), a, b)  # round-off is a tie
    wins, losses = int(np.sum(a < b)), int(np.sum(a > b))
    if not seeds:
        return None, 0, 0, 0
    if wins + losses == 0:
        return 1.0, len(seeds), 0, 0
    return float(wilcoxon(a, b, zero_method="wilcox").pvalue), len(seeds), wins, losses


def summary_markdown(comparison: dict[str, Any]) -> str:
    """Markdown summary: final-score quantiles, step times, and paired tests per acquisition."""
    problem, settings = comparison["problem"], comparison["settings"]
    scores = final_scores(comparison)
    times = mean_step_times(comparison)
    names = [name for name in settings["acquisitions"] if name in scores]
    references = [name for name in REFERENCES if name in scores]
    n_init = sorted({run["n_init"] for run in comparison["runs"]})
    lines = [
        f"# Comparison on {problem['name']}",
        "",
        f"- Score: {problem['score_label']} of the recommended point, after "
        f"{settings['iterations']} BO iterations.",
        f"- Seeds: {_seed_list(settings['seeds'])} ({len(settings['seeds'])}); initial design: "
        f"{', '.join(map(str, n_init)) or '?'} scrambled Sobol points, the same for every "
        "acquisition.",
        f"- Runs finished: {len(comparison['runs'])} of "
        f"{len(settings['acquisitions']) * len(settings['seeds'])}"
        + ("" if comparison.get("complete") else " (incomplete comparison)")
        + ".",
    ]
    if settings.get("score_every", 1) > 1:
        lines.append(
            f"- Scored every {settings['score_every']} iterations and after the last one."
        )
    if settings.get("known_optimum") is not None:
        lines.append(f"- Known optimum given to ERM/CBM: {settings['known_optimum']:g}.")
    if (settings.get("in_flight") or 1) > 1:
        lines.append(
            f"- Asynchronous: {settings['in_flight']} evaluations in flight per run (each ask sees the others "
            "as pending points; results in submission order, as from equally fast workers)."
        )
    if settings.get("optimizer_options"):
        options = ", ".join(f"{k}={v}" for k, v in sorted(settings["optimizer_options"].items()))
        lines.append(f"- Optimizer options: {options}.")
    if "warp" in problem:  # problems with default GP settings: say what the plain names used
        used = {run["acquisition"]: (run.get("warp"), run.get("surrogate")) for run in comparison["runs"]
                if "@" not in run["acquisition"] and "+" not in run["acquisition"]}
        if used:
            lines.append("- GP of the acquisitions that name no warp or surrogate: " + "; ".join(
                f"{_label(name)} warp {warp}, surrogate {surrogate or 'sum'}" for name, (warp, surrogate) in used.items()
            ) + ".")
    header = ["acquisition", "runs", "median", "q25", "q75", "step time (s)"]
    for reference in references:
        header += [f"{_label(reference)} wins/losses", f"p ({_label(reference)} vs)"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        values = np.array(list(scores[name].values()))
        q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
        row = [
            _label(name),
            str(len(values)),
            _number(median),
            _number(q25),
            _number(q75),
            f"{times[name]:.3f}" if name in times else "-",
        ]
        for reference in references:
            if name == reference:
                row += ["-", "-"]
                continue
            p, n, wins, losses = paired_wilcoxon(scores[reference], scores[name])
            row += [f"{wins}/{losses}", "-" if p is None else f"{p:.3g} (n={n})"]
        lines.append("| " + " | ".join(row) + " |")
    n_pairs = len(settings["seeds"])
    lines += [
        "",
        "Median and quartiles of the final score over seeds (lower is better). Step time: mean "
        "wall time of one BO step (GP fit + acquisition maximization). Wins/losses: seeds on "
        "which the reference acquisition's final score is lower/higher than this row's. p: "
        "two-sided Wilcoxon signed-rank test paired by seed (scipy.stats.wilcoxon, ties "
        f"dropped, p = 1 when every pair ties); with n = {n_pairs} pairs the smallest possible "
        f"p is {_smallest_p(n_pairs):.3g}.",
        "",
    ]
    for rule in available_rules(comparison)[1:]:
        lines += _rule_table(comparison, rule, names, references)
    metrics = final_metrics(comparison)
    if metrics:
        lines += [
            "Final recommendations on the whole validation set (median over seeds):",
            "",
            "| acquisition | ratio | error |",
            "|---|---|---|",
        ]
        for name in names:
            if name in metrics:
                ratio = np.median([m["ratio"] for m in metrics[name]])
                error = np.median([m["error"] for m in metrics[name]])
                lines.append(f"| {_label(name)} | {_number(ratio)} | {_number(error)} |")
        lines.append("")
    return "\n".join(lines)


def _rule_table(
    comparison: dict[str, Any], rule: str, names: list[str], references: list[str]
) -> list[str]:
    """Markdown lines: final-score quantiles and paired tests under the scoring rule ``rule``."""
    scores = final_scores(comparison, rule)
    header = ["acquisition", "runs", "median", "q25", "q75"]
    for reference in references:
        header += [f"{_label(reference)} wins/losses", f"p ({_label(reference)} vs)"]
    lines = [
        f"Score `{rule}`: {SCORE_DESCRIPTIONS[rule]}, {comparison['problem']['score_label']}, "
        "after the last iteration:",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name in names:
        if name not in scores:
            continue
        values = np.array(list(scores[name].values()))
        q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
        row = [_label(name), str(len(values)), _number(median), _number(q25), _number(q75)]
        for reference in references:
            if name == reference or reference not in scores:
                row += ["-", "-"]
                continue
            p, n, wins, losses = paired_wilcoxon(scores[reference], scores[name])
            row += [f"{wins}/{losses}", "-" if p is None else f"{p:.3g} (n={n})"]
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def plot_comparison_convergence(comparison: dict[str, Any], path: str | Path) -> None:
    """Median and interquartile band of the score vs BO iteration, one panel per rule.

    The first panel scores the recommended point; a second one, where the runs recorded it,
    the best true value among evaluated points (else the lowest observation's score). The y
    axis is logarithmic when every plotted score is positive, symmetric-log otherwise.
    """
    plt = pyplot()
    rules = available_rules(comparison)
    extra = [rule for rule in ("best_evaluated", "best_observed") if rule in rules][:1]
    panels = ["recommendation", *extra]
    figure, axes = plt.subplots(
        1, len(panels), figsize=(7.0 * len(panels), 4.2), dpi=100, squeeze=False
    )
    for axis, rule in zip(axes[0], panels):
        _plot_panel(comparison, axis, rule, plt)
    figure.tight_layout()
    save_figure(figure, path)


def _plot_panel(comparison: dict[str, Any], axis: Any, rule: str, plt: Any) -> None:
    """One convergence panel: the median and quartiles of the scores under ``rule``."""
    from matplotlib.ticker import MaxNLocator

    curves = score_curves(comparison, rule)
    colors = plt.get_cmap("tab10").colors
    all_scores = []
    for index, (name, curve) in enumerate(curves.items()):
        iteration = np.flatnonzero(np.isfinite(curve).all(axis=0))  # the scored columns
        curve = curve[:, iteration]
        q25, median, q75 = np.quantile(curve, [0.25, 0.5, 0.75], axis=0)
        color = colors[index % len(colors)]
        style = "-" if index < len(colors) else "--"
        plot_convergence(axis, iteration, median, q25, q75, label=_label(name), fmt=style, color=color, lw=1.6)
        all_scores.append(curve)
    if all_scores and min(float(c.min()) for c in all_scores) > 0:
        axis.set_yscale("log")
    else:
        axis.set_yscale("symlog", linthresh=_linthresh(all_scores))
    problem = comparison["problem"]
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("BO iteration (0 = after the initial design)")
    axis.set_ylabel(problem["score_label"] + ("" if rule == "recommendation" else f" ({rule.replace('_', ' ')})"))
    seeds = len(comparison["settings"]["seeds"])
    axis.set_title(f"{problem['name']}: median and quartiles over {seeds} seeds")
    axis.grid(True, which="major", alpha=0.3)
    if curves:
        axis.legend(ncol=2 if len(curves) > 5 else 1, fontsize="small", frameon=False)


def plot_recommendations(comparison: dict[str, Any], path: str | Path) -> None:
    """Final recommended points of every run on the full-set error vs ratio plane."""
    plt = pyplot()

    metrics = final_metrics(comparison)
    figure, axis = plt.subplots(figsize=(6.0, 4.2), dpi=100)
    colors = plt.get_cmap("tab10").colors
    markers = "o^sDv<>"  # 7 markers against 10 colours: 70 distinct (colour, marker) pairs
    names = [name for name in comparison["settings"]["acquisitions"] if name in metrics]
    for index, name in enumerate(names):
        ratio = [m["ratio"] for m in metrics[name]]
        error = [m["error"] for m in metrics[name]]
        axis.scatter(
            ratio, error, s=22, alpha=0.75, color=colors[index % len(colors)],
            marker=markers[index % len(markers)], label=_label(name), linewidths=0,
        )  # fmt: skip
    problem = comparison["problem"]
    axis.set_xlabel("compression ratio (compressed / original parameters)")
    axis.set_ylabel("top-1 error, whole validation set")
    axis.set_title(f"{problem['name']}: final recommendation of each run")
    axis.grid(True, alpha=0.3)
    axis.legend(ncol=2 if len(names) > 5 else 1, fontsize="small", frameon=False)
    figure.tight_layout()
    save_figure(figure, path)


def _label(name: str) -> str:
    """``LogCEI``, ``CEI``; a variant ``cei@log+composite`` as ``CEI@log+composite``."""
    from compressbo.bo.acquisition import acquisition_label

    base = re.split(r"[@+]", name, maxsplit=1)[0]
    return acquisition_label(base) + name[len(base):]


def _number(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else str(value)


def _seed_list(seeds: list[int]) -> str:
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _smallest_p(n: int) -> float:
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


def _linthresh(curves: list[np.ndarray]) -> float:
    positive = [np.abs(c[c != 0]) for c in curves if np.any(c != 0)]
    return float(min(p.min() for p in positive)) if positive else 1.0
