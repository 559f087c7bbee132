r"""A known inequality constraint ``cost(x) <= bound``: search the feasible set only.

A budget ("at most 10% of the parameters") is a constraint whose function is known exactly
before any evaluation, so the optimizer never proposes a point that violates it. The BO
engine knows nothing of what the cost measures: it crosses as two plain callables,

- ``relaxed``: ``batch_shape x d -> batch_shape``, continuous and differentiable almost
  everywhere (the acquisition optimizer follows its gradient);
- ``exact``: ``d -> float``, the cost that counts (e.g. a step function of ``x`` through
  integer ranks); by default the relaxed one.

Both must be non-decreasing in every coordinate of ``x`` (more of anything costs more), so
shrinking a point toward the box's lower corner never raises its cost. Then:

- the **initial design** is drawn inside the budget: the first feasible point of a block of
  the Sobol sequence (rejection), or, when a block holds none, its first point shrunk toward
  the lower corner onto the budget (:meth:`KnownConstraint.shrink`);
- the **acquisition** is maximized over the feasible set only: ``optimize_acqf`` with the
  relaxed cost as a nonlinear inequality constraint, from feasible initial conditions
  (:func:`maximize_feasible`);
- every proposal is **projected** so that the *exact* cost meets the budget
  (:meth:`KnownConstraint.project`: the largest shrink factor toward the lower corner whose
  exact cost fits, by bisection);
- the **recommendation** is the feasible observed point with the lowest posterior mean.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.optim import optimize_acqf
from botorch.exceptions.warnings import BadInitialCandidatesWarning
from botorch.optim.initializers import initialize_q_batch
from torch import Tensor
from torch.quasirandom import SobolEngine

from compressbo.exceptions import OptimizerInputError

__all__ = ["KnownConstraint", "maximize_feasible"]

REJECTION_BLOCK = 1024  # Sobol points tried per feasible initial point before shrinking one
BISECTION_STEPS = 60
SOBOL_CAP = 8  # raw samples drawn for the restarts: up to SOBOL_CAP * raw_samples Sobol points


@dataclass
class KnownConstraint:
    r"""``cost(x) <= bound`` with ``cost`` known.

    Example:
        >>> constraint = KnownConstraint(relaxed=lambda X: X.mean(-1), bound=0.1)
        >>> opt = Optimizer([(0.01, 1.0)] * 3, constraint=constraint)

    Attributes:
        relaxed: ``batch_shape x d -> batch_shape``, differentiable, non-decreasing in ``x``.
        bound: The budget.
        exact: ``d -> float``, the cost that must meet the budget; None: ``relaxed``.
        name: What the cost is called in messages and in the state (e.g. ``params``).
    """

    relaxed: Callable[[Tensor], Tensor]
    bound: float
    exact: Callable[[Tensor], float] | None = None
    name: str = "cost"

    def __post_init__(self) -> None:
        if not callable(self.relaxed) or (self.exact is not None and not callable(self.exact)):
            raise OptimizerInputError("a known constraint needs callables: relaxed (batch x d -> batch) and exact (d -> float).")
        if isinstance(self.bound, bool) or not isinstance(self.bound, (int, float)) or not math.isfinite(self.bound):
            raise OptimizerInputError(f"the constraint's bound must be a finite number, got {self.bound!r}.")
        self.bound = float(self.bound)

    # ------------------------------------------------------------------ costs

    def exact_cost(self, x: Tensor) -> float:
        """The exact cost of one point ``x`` (``d``)."""
        x = x.reshape(-1)
        if self.exact is None:
            return float(self.relaxed(x.unsqueeze(0)).reshape(()).item())
        return float(self.exact(x))

    def is_feasible(self, x: Tensor) -> bool:
        """Whether the exact cost of ``x`` (``d``) meets the budget."""
        return self.exact_cost(x) <= self.bound

    def relaxed_bound(self, bounds: Tensor) -> float:
        """The bound the relaxed cost is held to: the budget, or the lower corner's relaxed cost if higher.

        Where the exact cost steps below its relaxation, a budget the exact cost meets near the
        lower corner may lie below every relaxed cost; the relaxed constraint is then loosened
        to the corner's, and :meth:`project` enforces the exact budget.
        """
        with torch.no_grad():
            corner = float(self.relaxed(bounds[0].unsqueeze(0)).reshape(()).item())
        return max(self.bound, corner)

    def state(self) -> dict[str, Any]:
        """What the optimizer state records of the constraint (its callables are not saved)."""
        return {"name": self.name, "bound": self.bound}

    # ------------------------------------------------------------------ feasibility

    def check_box(self, bounds: Tensor) -> None:
        """``OptimizerInputError`` unless the box's lower corner meets the budget (else nothing does)."""
        lowest = self.exact_cost(bounds[0])
        if lowest > self.bound:
            raise OptimizerInputError(
                f"no point of the box meets {self.name} <= {self.bound:g}: its lower corner already costs "
                f"{lowest:.6g}; raise the budget or lower the box's lower bounds."
            )

    def shrink(self, X: Tensor, bounds: Tensor) -> Tensor:
        r"""Points scaled toward the lower corner until their relaxed cost meets the budget.

        ``x -> lo + t (x - lo)`` with the largest ``t`` in ``[0, 1]`` (by bisection) whose
        relaxed cost fits; feasible points are returned unchanged.

        Args:
            X: An ``n x d`` tensor inside the box.
            bounds: The ``2 x d`` box.

        Returns:
            An ``n x d`` tensor, relaxed-feasible wherever the lower corner is.
        """
        lower, limit = bounds[0], self.relaxed_bound(bounds)
        with torch.no_grad():
            fits = self.relaxed(X) <= limit
            low = torch.zeros(X.shape[0], dtype=X.dtype)
            high = torch.ones(X.shape[0], dtype=X.dtype)
            for _ in range(BISECTION_STEPS):
                middle = (low + high) / 2
                ok = self.relaxed(lower + middle.unsqueeze(-1) * (X - lower)) <= limit
                low, high = torch.where(ok, middle, low), torch.where(ok, high, middle)
        t = torch.where(fits, torch.ones_like(low), low)
        return lower + t.unsqueeze(-1) * (X - lower)

    def project(self, x: Tensor, bounds: Tensor) -> Tensor:
        """``x`` (``d``) if its exact cost meets the budget, else shrunk toward the lower corner until it does."""
        if self.is_feasible(x):
            return x
        lower = bounds[0]
        if not self.is_feasible(lower):
            self.check_box(bounds)
        low, high = 0.0, 1.0
        for _ in range(BISECTION_STEPS):
            middle = (low + high) / 2
            low, high = (middle, high) if self.is_feasible(lower + middle * (x - lower)) else (low, middle)
        return lower + low * (x - lower)

    def feasible_sobol_point(self, sobol: SobolEngine, bounds: Tensor) -> Tensor:
        """The next initial-design point inside the budget (see the module docstring).

        Draws a block of :data:`REJECTION_BLOCK` points of ``sobol`` and returns its first
        feasible one; if there is none, the block's first point shrunk onto the budget. The
        block is always drawn whole, so the sequence's position stays a count of blocks.
        """
        U = sobol.draw(REJECTION_BLOCK, dtype=torch.float64)
        X = bounds[0] + U * (bounds[1] - bounds[0])
        with torch.no_grad():
            fits = (self.relaxed(X) <= self.relaxed_bound(bounds)).nonzero().reshape(-1).tolist()
        for i in fits:
            if self.is_feasible(X[i]):
                return X[i].clone()
        return self.project(self.shrink(X[:1], bounds)[0], bounds)

    def feasible_samples(self, n: int, bounds: Tensor, seed: int) -> Tensor:
        """``n`` relaxed-feasible points of the box: Sobol points inside the budget, topped up by shrunk ones.

        Args:
            n: How many.
            bounds: The ``2 x d`` box.
            seed: Seed of the Sobol sequence.

        Returns:
            An ``n x d`` tensor.
        """
        d = bounds.shape[-1]
        engine = SobolEngine(d, scramble=True, seed=seed)
        X = bounds[0] + engine.draw(SOBOL_CAP * n, dtype=torch.float64) * (bounds[1] - bounds[0])
        with torch.no_grad():
            fits = self.relaxed(X) <= self.relaxed_bound(bounds)
        inside, outside = X[fits][:n], X[~fits][: max(0, n - int(fits.sum()))]
        return torch.cat([inside, self.shrink(outside, bounds)])


def maximize_feasible(
    acquisition: AcquisitionFunction,
    bounds: Tensor,
    constraint: KnownConstraint,
    *,
    num_restarts: int,
    raw_samples: int,
    seed: int,
) -> tuple[Tensor, Tensor]:
    r"""Maximize ``acquisition`` over ``{x in box: relaxed cost(x) <= bound}``.

    The restarts start from ``num_restarts`` of ``raw_samples`` feasible points (Boltzmann
    sampling on their acquisition values, BoTorch's ``initialize_q_batch``), and SLSQP keeps
    the relaxed constraint (``optimize_acqf``'s ``nonlinear_inequality_constraints``), held to
    :meth:`KnownConstraint.relaxed_bound`.

    Returns:
        ``(candidates, values)``: ``num_restarts x 1 x d`` and ``num_restarts``, one per
        restart, not yet projected onto the exact budget.
    """
    limit = constraint.relaxed_bound(bounds)

    def slack(x: Tensor) -> Tensor:  # scipy's form: >= 0 where feasible
        return limit - constraint.relaxed(x.unsqueeze(0)).reshape(())

    raw = constraint.feasible_samples(raw_samples, bounds, seed).unsqueeze(1)  # raw x 1 x d
    with torch.no_grad():
        values = torch.cat([acquisition(chunk) for chunk in raw.split(256)])
    with warnings.catch_warnings():  # a budget at the lower corner: every raw sample is that corner
        warnings.simplefilter("ignore", BadInitialCandidatesWarning)
        starts, _ = initialize_q_batch(raw, values, n=min(num_restarts, raw.shape[0]))
    return optimize_acqf(
        acquisition,
        bounds=bounds,
        q=1,
        num_restarts=starts.shape[0],
        batch_initial_conditions=starts,
        nonlinear_inequality_constraints=[(slack, True)],
        return_best_only=False,
    )
