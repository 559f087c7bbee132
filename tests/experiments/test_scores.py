"""The scoring rules of a comparison: recommendation, best evaluated, best observed."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from compressbo.experiments.compare import run_comparison
from compressbo.experiments.problems import make_problem
from compressbo.experiments.report import (
    available_rules,
    final_scores,
    score_curves,
    summary_markdown,
)
from compressbo.experiments.scores import best_observed_curve

FAST = {"num_restarts": 2, "raw_samples": 32, "kernel": "matern52"}
ITERATIONS, N_INIT, SEEDS = 4, 4, 3


@pytest.fixture(scope="module")
def comparison(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("scores")
    problem = make_problem("hartmann3", noise="homo:0.05")
    return run_comparison(
        problem, ["ei", "cei"], SEEDS, ITERATIONS, out,
        n_init=N_INIT, workers=1, progress=False, optimizer_options=FAST,
    )  # fmt: skip


def test_best_evaluated_is_the_min_of_the_true_values_of_evaluated_points(comparison: dict) -> None:
    problem = make_problem("hartmann3", noise="homo:0.05")
    for run in comparison["runs"]:
        points = [r["x"] for r in run["initial_design"] + run["steps"]]
        true = [problem.score(torch.tensor(x, dtype=torch.float64)) for x in points]
        curve = run["best_evaluated_scores"]
        assert len(curve) == ITERATIONS + 1
        for t, value in enumerate(curve):
            assert value == pytest.approx(min(true[: N_INIT + t]), rel=1e-12)
        assert all(a >= b for a, b in itertools.pairwise(curve))  # a running minimum


def test_best_observed_scores_the_point_with_the_lowest_noisy_y(comparison: dict) -> None:
    problem = make_problem("hartmann3", noise="homo:0.05")
    for run in comparison["runs"]:
        records = run["initial_design"] + run["steps"]
        for t, value in enumerate(run["best_observed_scores"]):
            seen = records[: N_INIT + t]
            lowest = min(seen, key=lambda r: r["y"])
            assert value == pytest.approx(problem.score(torch.tensor(lowest["x"], dtype=torch.float64)), rel=1e-12)


def test_best_observed_scores_each_distinct_point_once() -> None:
    calls = []

    class Counting:
        def score(self, x: torch.Tensor) -> float:
            calls.append(x.tolist())
            return float(x.sum())

    run = {
        "initial_design": [{"x": [0.5], "y": 3.0}, {"x": [0.2], "y": 1.0}],
        "steps": [{"x": [0.9], "y": 2.0}, {"x": [0.1], "y": 0.5}, {"x": [0.7], "y": 0.6}],
    }
    assert best_observed_curve(Counting(), run) == [0.2, 0.2, 0.1, 0.1]
    assert calls == [[0.2], [0.1]]


def test_report_tests_every_rule(comparison: dict) -> None:
    assert available_rules(comparison) == ["recommendation", "best_evaluated", "best_observed"]
    for rule in available_rules(comparison):
        curves, finals = score_curves(comparison, rule), final_scores(comparison, rule)
        assert curves["cei"].shape == (SEEDS, ITERATIONS + 1)
        assert [finals["cei"][s] for s in range(SEEDS)] == curves["cei"][:, -1].tolist()
    summary = summary_markdown(comparison)
    for rule in ("best_evaluated", "best_observed"):
        section = summary.split(f"Score `{rule}`")[1].split("\n\n")[1]
        rows = [line for line in section.splitlines() if line.startswith("| EI |")]
        assert len(rows) == 1 and "(n=3)" in rows[0]
        values = np.array(list(final_scores(comparison, rule)["ei"].values()))
        assert f"| EI | 3 | {np.median(values):.3g} |" in rows[0]
    # a comparison recorded before the extra rules still summarizes, with its one table
    old = {**comparison, "runs": [{k: v for k, v in r.items() if not k.startswith("best_")} for r in comparison["runs"]]}
    assert available_rules(old) == ["recommendation"] and "Score `best" not in summary_markdown(old)


def test_compare_resume_checks_the_kernel(tmp_path: Path) -> None:
    from compressbo.exceptions import UserInputError

    kwargs = {"n_init": N_INIT, "workers": 1, "progress": False}
    problem = make_problem("levy4")
    run_comparison(problem, ["ei"], [0], 1, tmp_path, optimizer_options=FAST, **kwargs)
    with pytest.raises(UserInputError, match="optimizer_options = .*matern52.*rbf"):
        run_comparison(problem, ["cei"], [0], 1, tmp_path, resume=True,
                       optimizer_options={**FAST, "kernel": "rbf"}, **kwargs)  # fmt: skip
    done = run_comparison(problem, ["cei"], [0], 1, tmp_path, resume=True, optimizer_options=FAST, **kwargs)
    assert [r["acquisition"] for r in done["runs"]] == ["ei", "cei"]
    # comparisons recorded before kernels existed ran (and resume with) the default kernel
    old = tmp_path / "old"
    run_comparison(problem, ["ei"], [0], 1, old, optimizer_options={"num_restarts": 2, "raw_samples": 32}, **kwargs)
    run_comparison(problem, ["cei"], [0], 1, old, resume=True,
                   optimizer_options={"num_restarts": 2, "raw_samples": 32, "kernel": "rbf"}, **kwargs)  # fmt: skip
