"""The kappa experiment: stopping iterations, regrets and profits from recorded runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from compressbo.exceptions import SettingError
from compressbo.experiments.kappa import stopping_iteration, summary_table, sweep


def _run(acquisition: str, seed: int, values: list[float | None], scores: list[float], ys=(3.0, 1.0)) -> dict:
    """A run with the given acquisition value per step and recommendation score per column."""
    return {
        "acquisition": acquisition,
        "seed": seed,
        "n_init": len(ys),
        "initial_design": [{"x": [0.0], "y": y, "yvar": 0.01} for y in ys],
        "initial_recommendation": {"recommended_x": [0.0], "score": scores[0]},
        "steps": [
            {"x": [0.0], "y": 0.0, "yvar": 0.01, "acquisition_value": v, "recommended_x": [0.0], "score": s}
            for v, s in zip(values, scores[1:])
        ],
    }


COMPARISON = {
    "format": "compressbo.experiments.compare/2",
    "problem": {"name": "toy"},
    "settings": {"acquisitions": ["cei", "ei", "logcei"], "seeds": [0, 1], "iterations": 5},
    "runs": [
        _run("cei", 0, [0.5, 0.05, 0.02, 0.004, 0.001], [1.0, 0.8, 0.6, 0.5, 0.4, 0.3]),
        _run("cei", 1, [0.3, 0.2, 0.1, 0.09, 0.08], [2.0, 1.0, 0.9, 0.8, 0.7, 0.6]),
        _run("ei", 0, [0.009, 0.5, 0.001, 0.0, 0.0], [1.0, 0.9, 0.9, 0.9, 0.9, 0.9]),
        _run("ei", 1, [0.5, 0.4, 0.005, 0.0, 0.0], [2.0, 1.5, 1.2, 1.1, 1.0, 1.0]),
        _run("logcei", 0, [math.log(0.5), math.log(0.02), None, -50.0, -60.0], [1.0, 0.5, 0.4, 0.3, 0.2, 0.1]),
        _run("ucb", 0, [1.0] * 5, [1.0] * 6),  # the rule does not apply: left out
    ],
}


@pytest.mark.parametrize(
    "run, kappa, expected",
    [
        (0, 0.1, (1, True)),  # step 2's proposal (0.05) is the first below 0.1: 1 iteration evaluated
        (0, 0.003, (4, True)),
        (0, 1e-4, (5, False)),  # never below: all 5 iterations, censored
        (1, 0.1, (3, True)),  # 0.09 at step 4
        (2, 0.01, (0, True)),  # EI stops at once
        (3, 0.01, (2, True)),
        (4, 0.1, (1, True)),  # log(0.02) < log(0.1)
        (4, 0.01, (2, True)),  # None (a log acquisition's -inf) counts as below
    ],
)
def test_stopping_iterations_of_known_acquisition_values(run: int, kappa: float, expected: tuple) -> None:
    assert stopping_iteration(COMPARISON["runs"][run], kappa) == expected


def test_relative_kappa_scales_by_the_initial_spread() -> None:
    run = COMPARISON["runs"][0]  # initial ys 3 and 1: spread 2
    assert stopping_iteration(run, 0.05, relative=True) == (1, True)  # threshold 0.1
    assert stopping_iteration(run, 0.05) == (2, True)  # threshold 0.05


def test_sweep_gives_regret_and_profit_at_the_stop() -> None:
    stops = sweep(COMPARISON, [0.1, 0.003])
    assert {s.acquisition for s in stops} == {"cei", "ei", "logcei"}
    first = next(s for s in stops if (s.acquisition, s.seed, s.kappa) == ("cei", 0, 0.1))
    assert (first.iterations, first.regret, first.initial_regret) == (1, 0.8, 1.0)
    assert first.profit(0.01) == pytest.approx(1.0 - 0.8 - 0.01 * 1)
    late = next(s for s in stops if (s.acquisition, s.seed, s.kappa) == ("cei", 0, 0.003))
    assert (late.iterations, late.regret) == (4, 0.4)
    table = summary_table(stops, cost=0.01)
    assert "| 0.1 | cei | 2 | 2 | 2 | 0.8 |" in table  # T = 1 and 3, regrets 0.8 and 0.8
    assert "| 0.1 | ei | 2 | 2 | 1 | 1.1 |" in table  # T = 0 and 2: regrets 1.0 and 1.2
    with pytest.raises(SettingError, match="kappa must be a positive number"):
        sweep(COMPARISON, [0.0])


def test_the_script_prints_the_table_and_plots(tmp_path: Path) -> None:
    (tmp_path / "runs.json").write_text(json.dumps(COMPARISON))
    script = Path(__file__).resolve().parents[2] / "scripts" / "kappa_sweep.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "runs.json"), "--kappas", "0.1", "0.01",
         "--cost", "0.01", "--plot", str(tmp_path / "profit.png")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "| 0.01 | ei | 2 | 2 | 1 |" in done.stdout
    assert (tmp_path / "profit.png").read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "nowhere" / "runs.json"), "--kappas", "0.1"],
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not found" in bad.stderr
