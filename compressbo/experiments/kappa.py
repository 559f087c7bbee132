r"""The termination experiment of the corrected-EI paper (Zhou, Ma & Blaschko, 2023, sec. 4.2).

The rule stops a run at the first proposal whose maximized acquisition value is below
``kappa`` (``log(kappa)`` for log acquisitions), as ``compressbo.bo.optimizer.Optimizer`` does
with ``kappa`` set. Every step of a comparison records that value (``acquisition_value``), so
one set of runs answers the question for any number of thresholds, without rerunning:

- ``T(kappa)``: the run stops when the proposal of BO iteration ``t`` falls below the
  threshold; that proposal is not evaluated, so the run used ``T = t - 1`` iterations. A run
  whose values never fall below it uses all its iterations (``stopped`` is False: censored).
- the regret at the stop: the run's score curve (``compressbo.experiments.scores``, any rule)
  at column ``T`` (column 0: after the initial design), or the last scored column before it.
- the profit (the paper's eq. 11, a linear cost model):
  ``profit = (r_0 - r_T) - cost * T``, the regret reduction from the initial design to the
  stop minus ``cost`` per evaluation.

With ``relative=True`` each run's threshold is ``kappa`` times the spread ``max y - min y`` of
its initial design's observations (the paper's appendix sets kappa to 1% of a difference of
observed values).

A recorded ``acquisition_value`` of ``None`` (not finite: a log acquisition that underflowed
to ``-inf``) counts as below every threshold for log acquisitions and is skipped otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from compressbo.bo.acquisition import acquisition_spec
from compressbo.exceptions import SettingError
from compressbo.experiments.report import paired_wilcoxon, run_curve


@dataclass(frozen=True)
class Stop:
    """Where the rule stops one run at one threshold.

    Attributes:
        acquisition: The run's acquisition.
        seed: The run's seed.
        kappa: The threshold as given (before ``relative`` scaling).
        iterations: ``T``, the BO iterations evaluated before the stop.
        stopped: Whether the rule fired (False: the run ended first).
        regret: The score at column ``T`` of the run's curve.
        initial_regret: The score after the initial design (column 0).
    """

    acquisition: str
    seed: int
    kappa: float
    iterations: int
    stopped: bool
    regret: float
    initial_regret: float

    def profit(self, cost: float) -> float:
        """``(r_0 - r_T) - cost * T``."""
        return self.initial_regret - self.regret - cost * self.iterations


def threshold(acquisition: str, kappa: float) -> float:
    """The value the maximized acquisition is compared with: ``kappa`` or ``log(kappa)``."""
    if not (math.isfinite(kappa) and kappa > 0):
        raise SettingError(f"kappa must be a positive number, got {kappa}", setting="kappa")
    return math.log(kappa) if acquisition_spec(acquisition).log else kappa


def stopping_iteration(run: dict[str, Any], kappa: float, relative: bool = False) -> tuple[int, bool]:
    """``(T, stopped)`` for one run of a comparison (see the module docstring).

    Args:
        run: A run of ``runs.json`` (its ``steps`` carry ``acquisition_value``).
        kappa: The threshold, in objective units (or relative, see ``relative``).
        relative: Scale ``kappa`` by the spread of the run's initial observations.
    """
    acquisition = run["acquisition"]
    if not acquisition_spec(acquisition).vanishes_when_done:
        raise SettingError(
            f"the kappa rule does not apply to {acquisition} (its maximized value does not "
            "fall to 0 as the search converges); give runs of ei, cei, logei, logcei, ...",
            setting="acquisitions",
        )
    if relative:
        ys = [r["y"] for r in run["initial_design"]]
        kappa = kappa * (max(ys) - min(ys)) if len(ys) > 1 and max(ys) > min(ys) else kappa
    limit = threshold(acquisition, kappa)
    is_log = acquisition_spec(acquisition).log
    for t, step in enumerate(run["steps"], start=1):
        value = step["acquisition_value"]
        if (value is None and is_log) or (value is not None and value < limit):
            return t - 1, True
    return len(run["steps"]), False


def score_at(curve: list[float | None], column: int) -> float:
    """The score at ``column`` of a curve, or at the last scored column before it."""
    for value in reversed(curve[: column + 1]):
        if value is not None:
            return float(value)
    raise SettingError("the run has no score at or before its stop; score every iteration (--score-every 1)")


def sweep(
    comparison: dict[str, Any],
    kappas: list[float],
    rule: str = "recommendation",
    relative: bool = False,
) -> list[Stop]:
    """Where the rule stops every run of ``comparison`` (acquisitions it applies to) at each kappa.

    Args:
        comparison: A comparison as loaded from ``runs.json``.
        kappas: Thresholds.
        rule: The scoring rule of the regret (``compressbo.experiments.scores.SCORE_FIELDS``).
        relative: Scale each run's kappa by the spread of its initial observations.

    Returns:
        One :class:`Stop` per (kappa, run), in the order of ``kappas`` then of the runs.
    """
    stops = []
    for kappa in kappas:
        for run in comparison["runs"]:
            if not acquisition_spec(run["acquisition"]).vanishes_when_done:
                continue
            curve = run_curve(run, rule)
            if curve is None:
                raise SettingError(f"the runs did not record the scoring rule {rule!r}", setting="rule")
            T, stopped = stopping_iteration(run, kappa, relative)
            stops.append(
                Stop(run["acquisition"], run["seed"], kappa, T, stopped, score_at(curve, T), score_at(curve, 0))
            )
    return stops


def summary_table(stops: list[Stop], cost: float, reference: str = "cei") -> str:
    """Markdown: per kappa and acquisition the stop, the regret there, the profit, and the
    two-sided Wilcoxon test (paired by seed) of the regret at the stop against ``reference``."""
    lines = [
        (
            f"| kappa | acquisition | runs | stopped | median T | median regret at T | q25 | q75 | "
            f"mean profit (cost {cost:g}) | {reference.upper()} wins/losses | p ({reference.upper()} vs) |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    kappas = list(dict.fromkeys(s.kappa for s in stops))
    names = list(dict.fromkeys(s.acquisition for s in stops))
    for kappa in kappas:
        at = {name: [s for s in stops if s.kappa == kappa and s.acquisition == name] for name in names}
        regrets = {name: {s.seed: s.regret for s in group} for name, group in at.items()}
        for name, group in at.items():
            values = np.array([s.regret for s in group])
            q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
            test = "- | -"
            if name != reference and reference in regrets:
                p, n, wins, losses = paired_wilcoxon(regrets[reference], regrets[name])
                test = f"{wins}/{losses} | " + ("-" if p is None else f"{p:.3g} (n={n})")
            lines.append(
                f"| {kappa:g} | {name} | {len(group)} | {sum(s.stopped for s in group)} | "
                f"{np.median([s.iterations for s in group]):g} | {median:.3g} | {q25:.3g} | {q75:.3g} | "
                f"{np.mean([s.profit(cost) for s in group]):.3g} | {test} |"
            )
    return "\n".join(lines)


def plot_profit(stops: list[Stop], cost: float, path: str, title: str = "") -> None:
    """Mean profit ``(r_0 - r_T) - cost * T`` against kappa (log axis), one line per acquisition,
    as in the paper's figure 2; the band is the interquartile range over runs."""
    from compressbo.plots import plot_convergence, pyplot, save_figure

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    kappas = sorted({s.kappa for s in stops})
    for name in dict.fromkeys(s.acquisition for s in stops):
        profits = [[s.profit(cost) for s in stops if s.acquisition == name and s.kappa == k] for k in kappas]
        mean = [np.mean(p) for p in profits]
        q25, q75 = zip(*(np.quantile(p, [0.25, 0.75]) for p in profits))
        plot_convergence(axis, kappas, mean, q25, q75, label=name.upper(), marker="o", ms=3)
    axis.set_xscale("log")
    axis.set_xlabel("kappa (termination threshold)")
    axis.set_ylabel(f"profit = regret reduction - {cost:g} x iterations")
    axis.set_title(title or "profit at the kappa stop (mean, quartile band)")
    axis.grid(True, alpha=0.3)
    axis.legend(frameon=False, fontsize="small")
    figure.tight_layout()
    save_figure(figure, path)
