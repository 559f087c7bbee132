"""The known constraint cost(x) <= bound: every point asked and the recommendation meet it exactly."""

from __future__ import annotations

import pytest
import torch

from compressbo.bo.constraints import KnownConstraint
from compressbo.bo.optimizer import Optimizer
from compressbo.exceptions import OptimizerInputError

WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
BOX = [(0.01, 1.0)] * 3
TARGET = torch.tensor([0.3, 0.3, 0.3], dtype=torch.float64)


def relaxed(X: torch.Tensor) -> torch.Tensor:
    return (X * WEIGHTS.to(X)).sum(-1)


def exact(x: torch.Tensor) -> float:
    """A step function above the relaxed cost (ceil to 1/20): projection is needed."""
    return float((torch.ceil(x * 20) / 20 * WEIGHTS).sum())


def objective(x: torch.Tensor) -> float:
    return float(((x - TARGET) ** 2).sum())


def _optimizer(bound: float, **kwargs) -> Optimizer:
    constraint = KnownConstraint(relaxed, bound, exact, name="toy")
    return Optimizer(BOX, n_init=4, seed=3, num_restarts=2, raw_samples=32, constraint=constraint, **kwargs)


def test_every_point_and_the_recommendation_meet_the_exact_budget():
    opt = _optimizer(0.15)
    for _ in range(9):
        x = opt.ask()
        assert exact(x) <= 0.15
        assert bool((x >= opt.bounds[0]).all() and (x <= opt.bounds[1]).all())
        opt.tell(x, objective(x), 1e-4)
    rec = opt.recommend()
    assert exact(rec.x) <= 0.15
    assert any(torch.equal(rec.x, x) for x in opt.X)
    # the search moves to the budget's boundary (the objective falls toward it)
    assert max(exact(x) for x in opt.X[4:]) >= 0.1


def test_a_batch_of_pending_points_is_feasible_and_distinct():
    opt = _optimizer(0.2)
    for x in opt.ask(4):
        opt.tell(x, objective(x), 1e-4)
    batch = opt.ask(3)
    assert all(exact(x) <= 0.2 for x in batch)
    distance = (batch[:, None] - batch[None]).abs().amax(-1) + torch.eye(3, dtype=torch.float64)
    assert bool((distance > 1e-6).all())


def test_the_initial_design_is_inside_a_tight_budget():
    # the lower corner costs about 0.05 (ceil to 1/20); a budget of 0.06 leaves a sliver of the box
    opt = _optimizer(0.06)
    points = opt.ask(4)
    assert all(exact(x) <= 0.06 for x in points)
    assert len({tuple(x.tolist()) for x in points}) == 4


def test_projection_shrinks_onto_the_exact_budget():
    constraint = KnownConstraint(relaxed, 0.3, exact)
    bounds = torch.tensor(BOX, dtype=torch.float64).T
    x = torch.tensor([0.9, 0.5, 0.4], dtype=torch.float64)
    projected = constraint.project(x, bounds)
    assert exact(projected) <= 0.3 < exact(x)
    lower = bounds[0]
    ratio = (projected - lower) / (x - lower)
    assert torch.allclose(ratio, ratio[0].expand(3))  # along the ray to the lower corner
    assert exact(lower + (ratio[0] + 0.02) * (x - lower)) > 0.3  # no farther than needed


def test_a_budget_below_the_lower_corner_is_refused():
    with pytest.raises(OptimizerInputError, match="lower corner"):
        _optimizer(0.01)


def test_state_keeps_the_budget_and_the_next_proposal():
    opt = _optimizer(0.15)
    for _ in range(5):
        x = opt.ask()
        opt.tell(x, objective(x), 1e-4)
    state = opt.state_dict()
    assert state["constraint"] == {"name": "toy", "bound": 0.15}
    same = Optimizer.from_state_dict(state, constraint=KnownConstraint(relaxed, 0.15, exact, name="toy"))
    assert torch.equal(same.ask(), opt.ask())
    with pytest.raises(OptimizerInputError, match="constraint"):
        Optimizer.from_state_dict(state, constraint=KnownConstraint(relaxed, 0.2, exact))
    with pytest.raises(OptimizerInputError, match="constraint"):
        Optimizer.from_state_dict(state)
