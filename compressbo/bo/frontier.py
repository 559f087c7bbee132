r"""The predicted trade-off curve: the best modelled value at every budget, no new evaluation.

Given a GP of the modelled term ``e(x)`` (the error of a budgeted run, or the error model of
a composite surrogate) and a known cost, the frontier is

    F(b) = min { mu_e(x) : x in the box, cost(x) <= b }

for a grid of budgets ``b``: one cheap constrained maximization of the negated posterior mean
per budget (:func:`~compressbo.bo.constraints.maximize_feasible`, each restart projected onto
the exact budget), with the feasible observed points as extra candidates. ``F`` is a model
prediction, not a measurement. A point feasible at ``b`` is feasible at every larger budget,
so ``F`` is non-increasing in truth; where a restart-based optimizer finds a worse minimum at
a larger budget, the smaller budget's point is kept (a running minimum, flagged ``carried``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from botorch.acquisition import PosteriorMean
from botorch.models.model import Model
from torch import Tensor

from compressbo.bo.constraints import KnownConstraint, maximize_feasible

__all__ = ["FrontierPoint", "predicted_frontier"]


@dataclass(frozen=True)
class FrontierPoint:
    """The predicted best point at one budget.

    Attributes:
        budget: The budget ``b``.
        x: The point (``d`` floats), exactly within the budget.
        cost: Its exact cost (``<= budget``).
        mean: Posterior mean of ``e`` there.
        std: Posterior standard deviation of ``e`` there (latent, without noise).
        carried: True when the point is a smaller budget's (the running minimum).
    """

    budget: float
    x: list[float]
    cost: float
    mean: float
    std: float
    carried: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def predicted_frontier(
    model: Model,
    bounds: Tensor,
    relaxed: Callable[[Tensor], Tensor],
    budgets: Sequence[float],
    *,
    exact: Callable[[Tensor], float] | None = None,
    observed: Tensor | None = None,
    num_restarts: int = 4,
    raw_samples: int = 256,
    seed: int = 0,
) -> list[FrontierPoint]:
    r"""The lowest posterior mean of ``model`` within each budget, non-increasing in the budget.

    Args:
        model: A fitted single-output model of the modelled term ``e``.
        bounds: The ``2 x d`` box.
        relaxed: The relaxed cost, ``batch_shape x d -> batch_shape`` (differentiable).
        budgets: Budgets; those below the cost of the box's lower corner are skipped.
        exact: The exact cost ``d -> float`` (default: ``relaxed``).
        observed: ``n x d`` observed points, candidates wherever they fit the budget.
        num_restarts: Restarts per budget.
        raw_samples: Feasible raw samples seeding them.
        seed: Seed of the raw samples.

    Returns:
        One :class:`FrontierPoint` per achievable budget, in increasing budget order.
    """
    objective = PosteriorMean(model, maximize=False)
    points: list[FrontierPoint] = []
    for i, budget in enumerate(sorted(float(b) for b in budgets)):
        constraint = KnownConstraint(relaxed, budget, exact)
        if not constraint.is_feasible(bounds[0]):
            continue
        candidates, _ = maximize_feasible(
            objective, bounds, constraint, num_restarts=num_restarts, raw_samples=raw_samples, seed=seed + i
        )
        lower, upper = bounds
        X = [constraint.project(x.reshape(-1).clamp(lower, upper), bounds) for x in candidates.detach()]
        if observed is not None:
            X += [x for x in observed if constraint.is_feasible(x)]
        X = torch.stack(X)
        with torch.no_grad():
            posterior = model.posterior(X)
        mean = posterior.mean.reshape(-1)
        std = posterior.variance.reshape(-1).clamp_min(0).sqrt()
        j = int(mean.argmin())
        point = FrontierPoint(budget, X[j].tolist(), constraint.exact_cost(X[j]), float(mean[j]), float(std[j]))
        if points and points[-1].mean < point.mean:  # a smaller budget's point is feasible here too
            previous = points[-1]
            point = FrontierPoint(budget, previous.x, previous.cost, previous.mean, previous.std, carried=True)
        points.append(point)
    return points
