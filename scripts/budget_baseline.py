"""Reference errors for budgeted FC3 runs: uniform theta and a dense search over ranks, on the full set.

For each budget ``R`` (the compressed layers' parameter ratio), the script prints

- **uniform**: every layer at the same ``theta``, the largest whose exact cost meets ``R``
  (bisection), and its full-set error;
- **dense**: the best full-set error over every rank triple on the budget's boundary
  (``r1`` and ``r3`` enumerated within the box, ``r2`` the largest rank that still fits: the
  error does not rise with a rank, so the optimum lies there), the best known feasible error;

and the ratio of the uniform error to the dense one. A budgeted run's full-set error
(``best.json``'s ``budget.error``) is compared against both.

Usage::

    OMP_NUM_THREADS=1 python scripts/budget_baseline.py [--budgets 0.05 0.1] [--bounds 0.005 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from compressbo.compression.config import ProblemConfig, RuntimeConfig
from compressbo.compression.setup import CompressionSetup


def uniform_theta(compressor, bounds: torch.Tensor, budget: float) -> torch.Tensor:
    """The largest common ``theta`` (within the box) whose exact parameter cost meets ``budget``."""
    low, high = float(bounds[0].max()), float(bounds[1].min())
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if compressor.cost(torch.full((compressor.dim,), middle, dtype=torch.float64), "params") <= budget else (low, middle)
    return torch.full((compressor.dim,), low, dtype=torch.float64)


def full_error(setup: CompressionSetup, objective, ranks) -> float:
    return objective.score(setup.compressor.build(ranks), what="a baseline").metrics["error"]


def dense_best(setup: CompressionSetup, objective, budget: float) -> tuple[float, list[int], int]:
    """Best full-set error over rank triples on the boundary of ``budget`` (box-feasible)."""
    compressor, bounds = setup.compressor, setup.bounds
    cost = compressor.cost_function("params")
    lowest = compressor.ranks(bounds[0])
    full = [f.max_ranks for f in compressor.factors]
    best, best_ranks, count = float("inf"), None, 0
    for r1 in range(lowest[0], full[0] + 1):
        for r3 in range(lowest[2], full[2] + 1):
            if cost.exact_for_ranks([r1, lowest[1], r3]) > budget:
                break
            r2 = lowest[1]
            while r2 < full[1] and cost.exact_for_ranks([r1, r2 + 1, r3]) <= budget:
                r2 += 1
            error = full_error(setup, objective, [r1, r2, r3])
            count += 1
            if error < best:
                best, best_ranks = error, [r1, r2, r3]
    return best, best_ranks, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.05, 0.1])
    parser.add_argument("--bounds", type=float, nargs=2, default=[0.005, 1.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    setup = CompressionSetup.load(ProblemConfig(model="fc3", bounds=tuple(args.bounds)), RuntimeConfig(device="cpu"))
    objective = setup.objective()
    print(f"FC3, box {args.bounds}, full set of {len(setup.evaluator)} examples")
    print(f"{'budget':>7} {'uniform theta':>13} {'ranks':>14} {'cost':>7} {'error':>7} | "
          f"{'dense best ranks':>16} {'cost':>7} {'error':>7} {'points':>6} | uniform/dense")
    for budget in args.budgets:
        theta = uniform_theta(setup.compressor, setup.bounds, budget)
        ranks = setup.compressor.ranks(theta)
        uniform = full_error(setup, objective, ranks)
        started = time.perf_counter()
        dense, dense_ranks, count = dense_best(setup, objective, budget)
        dense_cost = setup.compressor.cost_function("params").exact_for_ranks(dense_ranks)
        print(
            f"{budget:7.3f} {theta[0].item():13.5f} {str(ranks):>14} {setup.compressor.cost(theta):7.4f} {uniform:7.4f} | "
            f"{str(dense_ranks):>16} {dense_cost:7.4f} {dense:7.4f} {count:6d} | {uniform / dense:6.2f}"
            f"   ({time.perf_counter() - started:.0f} s)"
        )


if __name__ == "__main__":
    main()
