"""The predicted trade-off curve of a run: ``frontier.json`` (and the frontier in ``pareto.png``).

With a model of the error alone (a budgeted run's GP, or the composite surrogate's error
GP), the best predicted error at every budget is a cheap optimization of the posterior mean
(:func:`compressbo.bo.frontier.predicted_frontier`), no new evaluation. The budgets are a
geometric grid from the cost of the box's lower corner to that of its upper corner, plus the
run's own budget and the recommendation's cost. Runs whose GP models ``cost + gamma * error``
(the ``sum`` surrogate without a budget) have no error model and get no frontier.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compressbo.bo.frontier import predicted_frontier
from compressbo.bo.models.composite import CompositeModel
from compressbo.compression.budget import budget_of

__all__ = ["FRONTIER", "GRID_SIZE", "run_frontier"]

FRONTIER = "frontier.json"
GRID_SIZE = 24
NOTE = (
    "A model prediction, not a measurement: at each budget, the lowest posterior mean of the GP's error "
    "within the budget (std: its posterior standard deviation), made non-increasing by a running minimum "
    "over budgets (carried: the point of a smaller budget)."
)


def run_frontier(job: Any, recommended_theta: Any) -> dict[str, Any] | None:
    """``frontier.json``'s document for a finished search, or None when the GP models no error alone.

    Args:
        job: The :class:`~compressbo.app.job.CompressionJob` (its optimizer, compressor, config).
        recommended_theta: The recommendation's ``theta`` (its cost joins the budget grid).
    """
    optimizer, compressor, config = job.optimizer, job.compressor, job.config
    if optimizer.n_observed < 2:
        return None
    model = optimizer.fitted_model()
    if isinstance(model, CompositeModel):
        model = model.error_model
    elif optimizer.constraint is None:
        return None
    budget = budget_of(config)
    metric = budget.metric if budget is not None else config.cost
    cost = compressor.cost_function(metric)
    bounds = optimizer.bounds
    low, high = cost.exact(bounds[0]), cost.exact(bounds[1])
    grid = set(np.geomspace(low, high, GRID_SIZE).tolist()) | {compressor.cost(recommended_theta, metric)}
    if budget is not None:
        grid.add(budget.bound)
    points = predicted_frontier(
        model, bounds, cost, sorted(grid), exact=cost.exact, observed=optimizer.X,
        num_restarts=optimizer.num_restarts, raw_samples=optimizer.raw_samples, seed=optimizer.seed,
    )
    return {
        "cost": metric,
        "note": NOTE,
        "measure": "distance" if config.objective == "distill" else "error",
        "points": [
            {
                "budget": point.budget,
                "theta": point.x,
                "ranks": [list(r) if isinstance(r, tuple) else r for r in compressor.ranks(point.x)],
                "cost": point.cost,
                "predicted_error": point.mean,
                "std": point.std,
                "carried": point.carried,
            }
            for point in points
        ],
    }
