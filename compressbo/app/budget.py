"""A budgeted compression run: the budget as the optimizer's known constraint, and its summary.

With ``target_ratio`` (or ``target_flops``) the run minimizes the error subject to
``cost(theta) <= R`` (:mod:`compressbo.compression.budget`): the optimizer gets the
compressor's cost as a :class:`~compressbo.bo.constraints.KnownConstraint` (the relaxed cost
for the acquisition optimizer, the exact one for every proposal and the recommendation) and
models the error alone (``y`` is the error, ``yvar`` its binomial variance).
"""

from __future__ import annotations

from typing import Any

from compressbo.bo.constraints import KnownConstraint
from compressbo.bo.loop import Evaluation
from compressbo.compression.budget import Budget, budget_of

__all__ = ["budget_constraint", "budget_evaluation", "budget_summary"]


def budget_constraint(config: Any, compressor: Any) -> KnownConstraint | None:
    """The run's budget as a known constraint on ``theta`` (None without a budget)."""
    budget = budget_of(config)
    if budget is None:
        return None
    cost = compressor.cost_function(budget.metric)
    return KnownConstraint(relaxed=cost, bound=budget.bound, exact=cost.exact, name=budget.metric)


def budget_evaluation(observation: Any) -> Evaluation:
    """The loop's evaluation under a budget: ``y`` is the modelled measure (the error) alone."""
    info = observation.to_dict()
    info.pop("y")
    info.pop("yvar")
    measure, variance = observation.modelled()
    return Evaluation(measure, variance, info=info, modelled=(measure, variance))


def budget_summary(budget: Budget, compressor: Any, theta: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """``best.json``'s ``budget``: the bound, the exact cost achieved and the full-set error."""
    achieved = compressor.cost(theta, budget.metric)
    return {
        **budget.to_dict(),
        "achieved_cost": achieved,
        "met": achieved <= budget.bound,
        "error": metrics.get("error"),
    }
