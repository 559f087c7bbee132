"""The scoring rules of a comparison run, computed from its recorded evaluations.

A run (``compressbo.experiments.compare.run_one``) records its initial design and its steps
(``x``, noisy ``y``). Three rules score it after each iteration (column 0: after the initial
design, column ``t``: after BO iteration ``t``):

- ``recommendation`` (compressbo's): the problem's score of the point the GP recommends (the
  observed point with the lowest posterior mean), recorded in each step's ``score``.
- ``best_evaluated`` (the corrected-EI authors' rule on synthetic problems): the best *true*
  score among all points evaluated so far, ``min_{i <= n_t} score(x_i)``. Only for problems
  with a cheap noise-free objective (``true_value``: synthetic functions, GP samples).
- ``best_observed`` (the authors' rule on compression): the score of the evaluated point with
  the lowest noisy observation ``y`` so far; for compression problems the full-set objective
  of that point. The score is computed once per distinct such point.

:func:`extra_scores` computes the last two for a finished run; the rules' names and the run
fields that hold them are in ``SCORE_FIELDS``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

# rule -> the run field holding its per-iteration curve (None: each step's "score")
SCORE_FIELDS = {
    "recommendation": None,
    "best_evaluated": "best_evaluated_scores",
    "best_observed": "best_observed_scores",
}
SCORE_DESCRIPTIONS = {
    "recommendation": "the score of the recommended point (lowest posterior mean among evaluated points)",
    "best_evaluated": "the lowest true score among all evaluated points (the authors' rule on synthetic problems)",
    "best_observed": "the score of the evaluated point with the lowest noisy observation (the authors' rule on compression)",
}


class Scorable(Protocol):
    def score(self, x: torch.Tensor) -> float: ...


def evaluated_points(run: dict[str, Any]) -> tuple[list[list[float]], list[float], int]:
    """``(xs, ys, n_init)``: every evaluated point and its noisy value, in evaluation order."""
    records = run["initial_design"] + run["steps"]
    return [r["x"] for r in records], [float(r["y"]) for r in records], len(run["initial_design"])


def best_evaluated_curve(problem: Scorable, run: dict[str, Any]) -> list[float]:
    """``min`` of the true score over the points evaluated up to each iteration.

    Returns:
        ``iterations + 1`` values, column 0 after the initial design.
    """
    xs, _, n_init = evaluated_points(run)
    scores = [problem.score(torch.tensor(x, dtype=torch.float64)) for x in xs]
    running = [min(scores[: n_init + t]) for t in range(len(xs) - n_init + 1)]
    return running


def best_observed_curve(problem: Scorable, run: dict[str, Any]) -> list[float]:
    """Score of the evaluated point with the lowest noisy ``y`` up to each iteration.

    Ties in ``y`` go to the earliest point. Each distinct point is scored once.

    Returns:
        ``iterations + 1`` values, column 0 after the initial design.
    """
    xs, ys, n_init = evaluated_points(run)
    cache: dict[int, float] = {}
    curve = []
    for t in range(len(xs) - n_init + 1):
        n = n_init + t
        best = min(range(n), key=lambda i: (ys[i], i))
        if best not in cache:
            cache[best] = problem.score(torch.tensor(xs[best], dtype=torch.float64))
        curve.append(cache[best])
    return curve


def extra_scores(problem: Any, run: dict[str, Any]) -> dict[str, list[float]]:
    """The ``best_evaluated`` (where the problem has ``true_value``) and ``best_observed``
    curves of a finished run, keyed by their ``SCORE_FIELDS`` run fields."""
    fields = {"best_observed_scores": best_observed_curve(problem, run)}
    if hasattr(problem, "true_value"):
        fields["best_evaluated_scores"] = best_evaluated_curve(problem, run)
    return fields
