from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import wilcoxon

from compressbo.compare import run_comparison
from compressbo.errors import UserInputError
from compressbo.problems import make_problem
from compressbo.report import (
    load_comparison,
    paired_wilcoxon,
    score_curves,
    summary_markdown,
    write_report,
)

ACQUISITIONS = ["ei", "cei", "logcei"]
SEEDS = 2
ITERATIONS = 3
N_INIT = 4
FAST = {"num_restarts": 2, "raw_samples": 32}


@pytest.fixture(scope="module")
def parallel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parallel")
    run_comparison(
        make_problem("hartmann3"), ACQUISITIONS, SEEDS, ITERATIONS, out,
        n_init=N_INIT, workers=2, progress=False, optimizer_options=FAST,
    )  # fmt: skip
    return out


def _runs(directory: Path) -> list[dict]:
    return json.loads((directory / "runs.json").read_text())["runs"]


def test_writes_every_artifact(parallel_dir: Path) -> None:
    assert (parallel_dir / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    comparison = load_comparison(parallel_dir)
    assert comparison["complete"] is True
    assert comparison["problem"]["name"] == "hartmann3"
    assert comparison["settings"]["seeds"] == [0, 1]
    assert comparison["settings"]["optimizer_options"] == FAST
    runs = comparison["runs"]
    assert [(r["acquisition"], r["seed"]) for r in runs] == [
        (a, s) for a in ACQUISITIONS for s in range(SEEDS)
    ]
    for run in runs:
        assert run["n_init"] == N_INIT and len(run["initial_design"]) == N_INIT
        assert len(run["steps"]) == ITERATIONS
        for step in run["steps"]:
            assert set(step) == {
                "x", "y", "yvar", "acquisition_value", "step_time", "recommended_x", "score",
                "warnings",
            }  # fmt: skip
            assert step["step_time"] > 0 and step["acquisition_value"] is not None


def test_histories_are_consistent_with_the_problem(parallel_dir: Path) -> None:
    problem = make_problem("hartmann3")
    for run in _runs(parallel_dir):
        points = [p["x"] for p in run["initial_design"] + run["steps"]]
        for entry in run["initial_design"] + run["steps"]:
            x = torch.tensor(entry["x"], dtype=torch.float64)
            assert entry["yvar"] == pytest.approx(float(problem.noise_std(x)) ** 2, rel=1e-12)
        for step in run["steps"]:
            recommended = torch.tensor(step["recommended_x"], dtype=torch.float64)
            assert step["score"] == pytest.approx(problem.score(recommended), rel=1e-12)
            assert step["recommended_x"] in points  # the incumbent is an observed point


def test_initial_designs_are_shared_across_acquisitions(parallel_dir: Path) -> None:
    runs = _runs(parallel_dir)
    for seed in range(SEEDS):
        designs = [r["initial_design"] for r in runs if r["seed"] == seed]
        assert len(designs) == len(ACQUISITIONS)
        assert all(design == designs[0] for design in designs)
    by_seed = {r["seed"]: r["initial_design"] for r in runs}
    assert by_seed[0] != by_seed[1]
    # Different acquisitions then diverge: the comparison compares something.
    steps = {r["acquisition"]: r["steps"][0]["x"] for r in runs if r["seed"] == 0}
    assert steps["ei"] != steps["cei"]


def test_serial_run_reproduces_the_parallel_histories(parallel_dir: Path, tmp_path: Path) -> None:
    run_comparison(
        make_problem("hartmann3"), ["cei"], [1], ITERATIONS, tmp_path,
        n_init=N_INIT, workers=1, progress=False, optimizer_options=FAST,
    )  # fmt: skip
    parallel = {(r["acquisition"], r["seed"]): r for r in _runs(parallel_dir)}
    for run in _runs(tmp_path):
        reference = parallel[(run["acquisition"], run["seed"])]
        assert run["initial_design"] == reference["initial_design"]
        for step, expected in zip(run["steps"], reference["steps"]):
            np.testing.assert_allclose(step["x"], expected["x"], rtol=1e-6, atol=1e-9)
            assert step["score"] == pytest.approx(expected["score"], rel=1e-6, abs=1e-9)


def test_summary_reports_quantiles_times_and_paired_tests(parallel_dir: Path) -> None:
    summary = (parallel_dir / "summary.md").read_text()
    runs = _runs(parallel_dir)
    assert summary.startswith("# Comparison on hartmann3\n")
    assert "| acquisition | runs | median | q25 | q75 | step time (s) |" in summary
    assert "CEI wins/losses | p (CEI vs) | LogCEI wins/losses | p (LogCEI vs) |" in summary
    rows = {line.split(" | ")[0].strip("| "): line for line in summary.splitlines()
            if line.startswith("| ") and "acquisition" not in line}  # fmt: skip
    assert set(rows) == {"EI", "CEI", "LogCEI"}
    final = {
        name: {r["seed"]: r["steps"][-1]["score"] for r in runs if r["acquisition"] == name}
        for name in ACQUISITIONS
    }
    for name, label in [("ei", "EI"), ("cei", "CEI"), ("logcei", "LogCEI")]:
        cells = [cell.strip() for cell in rows[label].strip("|").split("|")]
        assert cells[1] == str(SEEDS)
        assert cells[2] == f"{np.median(list(final[name].values())):.3g}"
        times = [s["step_time"] for r in runs if r["acquisition"] == name for s in r["steps"]]
        assert cells[5] == f"{np.mean(times):.3f}"
    p, n, wins, losses = paired_wilcoxon(final["cei"], final["ei"])
    ei_cells = [cell.strip() for cell in rows["EI"].strip("|").split("|")]
    assert ei_cells[6] == f"{wins}/{losses}" and ei_cells[7] == f"{p:.3g} (n={n})"
    assert "smallest possible p is 0.5" in summary


def test_report_regenerates_identical_files(parallel_dir: Path, tmp_path: Path) -> None:
    shutil.copy(parallel_dir / "runs.json", tmp_path / "runs.json")
    write_report(load_comparison(tmp_path), tmp_path)
    for name in ("summary.md", "convergence.png"):
        assert (tmp_path / name).read_bytes() == (parallel_dir / name).read_bytes()


def test_score_curves_start_after_the_initial_design(parallel_dir: Path) -> None:
    comparison = load_comparison(parallel_dir)
    curves = score_curves(comparison)
    assert list(curves) == ACQUISITIONS
    for name, curve in curves.items():
        assert curve.shape == (SEEDS, ITERATIONS + 1)
        runs = [r for r in comparison["runs"] if r["acquisition"] == name]
        assert curve[:, 0].tolist() == [r["initial_recommendation"]["score"] for r in runs]
    # The first recommendation depends only on the shared initial data, not the acquisition.
    np.testing.assert_allclose(curves["ei"][:, 0], curves["cei"][:, 0])


def test_partial_comparison_still_summarizes(parallel_dir: Path) -> None:
    comparison = load_comparison(parallel_dir)
    comparison["runs"] = [r for r in comparison["runs"] if r["acquisition"] != "logcei"][:3]
    comparison["complete"] = False
    summary = summary_markdown(comparison)
    assert "Runs finished: 3 of 6 (incomplete comparison)" in summary
    assert "LogCEI" not in summary.split("\n\n")[1]


def test_paired_wilcoxon_matches_scipy_and_handles_ties() -> None:
    reference = {0: 1.0, 1: 2.0, 2: 0.5, 3: 4.0, 4: 0.1, 5: 3.0}
    other = {0: 1.5, 1: 2.5, 2: 0.4, 3: 5.0, 4: 0.3, 5: 3.7, 9: 1.0}
    p, n, wins, losses = paired_wilcoxon(reference, other)
    seeds = sorted(reference)
    assert p == pytest.approx(wilcoxon([reference[s] for s in seeds],
                                       [other[s] for s in seeds]).pvalue)  # fmt: skip
    assert (n, wins, losses) == (6, 5, 1)
    assert paired_wilcoxon(reference, dict(reference)) == (1.0, 6, 0, 0)
    round_off = {seed: value * (1 + 1e-12) for seed, value in reference.items()}
    assert paired_wilcoxon(reference, round_off) == (1.0, 6, 0, 0)
    assert paired_wilcoxon(reference, {7: 1.0}) == (None, 0, 0, 0)


def test_bad_input_raises_user_input_error(tmp_path: Path) -> None:
    problem = make_problem("levy4")
    with pytest.raises(UserInputError, match="unknown acquisition 'eix'; choose from ei, logei"):
        run_comparison(problem, ["ei", "eix"], 1, 1, tmp_path / "a", progress=False)
    with pytest.raises(UserInputError, match="iterations must be at least 1"):
        run_comparison(problem, ["ei"], 1, 0, tmp_path / "b", progress=False)
    with pytest.raises(UserInputError, match="at least one seed"):
        run_comparison(problem, ["ei"], 0, 1, tmp_path / "c", progress=False)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "runs.json").write_text("{}")
    with pytest.raises(UserInputError, match="already holds a comparison"):
        run_comparison(problem, ["ei"], 1, 1, tmp_path / "d", progress=False)
    with pytest.raises(UserInputError, match="not a compressbo comparison"):
        load_comparison(tmp_path / "d")
    with pytest.raises(UserInputError, match="runs.json not found"):
        load_comparison(tmp_path / "missing")
