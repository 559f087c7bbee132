"""The predicted frontier: the lowest posterior mean within each budget, non-increasing, exactly feasible."""

from __future__ import annotations

import torch

from compressbo.bo.frontier import predicted_frontier
from compressbo.bo.models.gp import fit_gp

WEIGHTS = torch.tensor([0.6, 0.4], dtype=torch.float64)


def relaxed(X: torch.Tensor) -> torch.Tensor:
    return (X * WEIGHTS.to(X)).sum(-1)


def exact(x: torch.Tensor) -> float:
    return float((torch.floor(x * 50) / 50 * WEIGHTS).sum())


def _model():
    generator = torch.Generator().manual_seed(0)
    X = 0.02 + 0.98 * torch.rand(24, 2, generator=generator, dtype=torch.float64)
    Y = torch.exp(-6 * X).sum(-1)  # falls as either coordinate grows: more budget, lower error
    bounds = torch.tensor([[0.02, 0.02], [1.0, 1.0]], dtype=torch.float64)
    return fit_gp(X, Y, torch.full_like(Y, 1e-4), bounds), X, bounds


def test_frontier_is_non_increasing_feasible_and_near_the_true_optimum():
    model, X, bounds = _model()
    budgets = [0.01, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0]
    points = predicted_frontier(model, bounds, relaxed, budgets, exact=exact, observed=X, num_restarts=3, raw_samples=64)
    assert [p.budget for p in points] == budgets[1:]  # 0.01 lies below the lower corner's cost
    means = [p.mean for p in points]
    assert all(b <= a for a, b in zip(means, means[1:]))
    assert all(exact(torch.tensor(p.x, dtype=torch.float64)) == p.cost <= p.budget for p in points)
    # min of exp(-6 x1) + exp(-6 x2) on 0.6 x1 + 0.4 x2 <= 0.4 (Lagrange: x2 - x1 = ln(1.5) / 6):
    # x = (0.373, 0.440), value 0.178
    at = next(p for p in points if p.budget == 0.4)
    assert abs(at.mean - 0.178) < 0.02
    assert max(abs(at.x[0] - 0.373), abs(at.x[1] - 0.440)) < 0.05

