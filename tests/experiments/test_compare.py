from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import wilcoxon

from compressbo.experiments.compare import run_comparison, run_one
from compressbo.app.job import CompressConfig
from compressbo.compression.config import ProblemConfig
from compressbo.experiments.compression_problem import CompressionProblem
from compressbo.exceptions import UserInputError
from compressbo.bo.optimizer import Optimizer
from compressbo.experiments.problems import GPSampleFamily, make_problem
from compressbo.experiments.report import (
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
COMPRESSION_ACQUISITIONS = ["ei", "cei", "random"]




@pytest.fixture(scope="module")
def compression_dir(tmp_path_factory: pytest.TempPathFactory, fc3_cache: Path) -> Path:
    """FC3 on digits: three acquisitions, two seeds, in two spawned worker processes."""
    out = tmp_path_factory.mktemp("fc3")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPRESSBO_CACHE", str(fc3_cache))  # inherited by the workers
        run_comparison(
            functools.partial(CompressionProblem, CompressConfig(samples=100)),
            COMPRESSION_ACQUISITIONS, SEEDS, ITERATIONS, out,
            n_init=N_INIT, workers=2, progress=False, optimizer_options=FAST,
        )  # fmt: skip
    return out


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
                "iteration", "phase", "x", "y", "yvar", "acquisition_value", "seconds_bo", "recommended",
                "score", "warnings",
            }  # fmt: skip
            assert step["seconds_bo"] > 0 and step["acquisition_value"] is not None


def test_histories_are_consistent_with_the_problem(parallel_dir: Path) -> None:
    problem = make_problem("hartmann3")
    for run in _runs(parallel_dir):
        points = [p["x"] for p in run["initial_design"] + run["steps"]]
        for entry in run["initial_design"] + run["steps"]:
            x = torch.tensor(entry["x"], dtype=torch.float64)
            assert entry["yvar"] == pytest.approx(float(problem.noise_std(x)) ** 2, rel=1e-12)
        for step in run["steps"]:
            recommended = torch.tensor(step["recommended"]["x"], dtype=torch.float64)
            assert step["score"] == pytest.approx(problem.score(recommended), rel=1e-12)
            assert step["recommended"]["x"] in points  # the incumbent is an observed point


def test_initial_designs_are_shared_across_acquisitions(parallel_dir: Path) -> None:
    runs = _runs(parallel_dir)
    for seed in range(SEEDS):
        designs = [_design(r) for r in runs if r["seed"] == seed]
        assert len(designs) == len(ACQUISITIONS)
        assert all(design == designs[0] for design in designs)
    by_seed = {r["seed"]: _design(r) for r in runs}
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
        assert _design(run) == _design(reference)
        for step, expected in zip(run["steps"], reference["steps"]):
            np.testing.assert_allclose(step["x"], expected["x"], rtol=1e-6, atol=1e-9)
            assert step["score"] == pytest.approx(expected["score"], rel=1e-6, abs=1e-9)


def test_summary_reports_quantiles_times_and_paired_tests(parallel_dir: Path) -> None:
    summary = (parallel_dir / "summary.md").read_text()
    runs = _runs(parallel_dir)
    assert summary.startswith("# Comparison on hartmann3\n")
    assert "| acquisition | runs | median | q25 | q75 | step time (s) |" in summary
    assert "CEI wins/losses | p (CEI vs) | LogCEI wins/losses | p (LogCEI vs) |" in summary
    main_table = summary.split("Score `")[0]  # the tables of the other scoring rules follow it
    rows = {line.split(" | ")[0].strip("| "): line for line in main_table.splitlines()
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
        times = [s["seconds_bo"] for r in runs if r["acquisition"] == name for s in r["steps"]]
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
    with pytest.raises(UserInputError, match="already holds a comparison.*or resume to add runs"):
        run_comparison(problem, ["ei"], 1, 1, tmp_path / "d", progress=False)
    with pytest.raises(UserInputError, match="not a compressbo comparison"):
        load_comparison(tmp_path / "d")
    with pytest.raises(UserInputError, match="runs.json not found"):
        load_comparison(tmp_path / "missing")


def test_compression_comparison_writes_every_artifact(compression_dir: Path) -> None:
    for name in ("convergence.png", "recommendations.png"):
        assert (compression_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    comparison = load_comparison(compression_dir)
    assert comparison["complete"] is True
    assert comparison["problem"]["name"] == "fc3" and comparison["problem"]["dim"] == 3
    assert comparison["problem"]["score_label"] == "full-set ratio + 1 * error"
    assert comparison["setup_seconds"] > 0
    runs = comparison["runs"]
    assert [(r["acquisition"], r["seed"]) for r in runs] == [
        (a, s) for a in COMPRESSION_ACQUISITIONS for s in range(SEEDS)
    ]
    for run in runs:
        assert run["setup_seconds"] > 0 and len(run["steps"]) == ITERATIONS
        final = run["final_metrics"]
        assert run["steps"][-1]["score"] == pytest.approx(final["score"])
        assert final["score"] == pytest.approx(final["ratio"] + final["error"])
        assert 0 < final["ratio"] <= 1.2 and 0 <= final["error"] <= 1
        # 100 of 540 validation images per evaluation: binomial variances, never zero
        for entry in run["initial_design"] + run["steps"]:
            assert 0 < entry["yvar"] <= 0.25 / 100 + 1e-12
    for seed in range(SEEDS):
        designs = [_design(r) for r in runs if r["seed"] == seed]
        assert all(design == designs[0] for design in designs)
    summary = (compression_dir / "summary.md").read_text()
    assert "| acquisition | ratio | error |" in summary and "| Random |" in summary


def test_compression_scores_use_the_whole_validation_set(
    compression_dir: Path, fc3_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPRESSBO_CACHE", str(fc3_cache))
    problem = CompressionProblem(ProblemConfig(samples=100))
    run = _runs(compression_dir)[1]
    for step in run["steps"]:
        x = torch.tensor(step["recommended"]["x"], dtype=torch.float64)
        assert step["score"] == pytest.approx(problem.score(x), rel=1e-12)
    # Subsample observations scatter around the full-set objective; scores do not.
    x = torch.tensor(run["steps"][-1]["recommended"]["x"], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    observations = [problem.evaluate(x, generator)[0] for _ in range(8)]
    assert len(set(observations)) > 1
    assert abs(np.mean(observations) - problem.score(x)) < 4 * np.std(observations) / np.sqrt(8) + 1e-9


def test_compression_report_regenerates_identical_files(compression_dir: Path, tmp_path: Path) -> None:
    shutil.copy(compression_dir / "runs.json", tmp_path / "runs.json")
    written = write_report(load_comparison(tmp_path), tmp_path)
    assert written == ["convergence.png", "summary.md", "recommendations.png"]
    for name in written:
        assert (tmp_path / name).read_bytes() == (compression_dir / name).read_bytes()


def test_known_optimum_acquisitions_need_an_optimum(
    fc3_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPRESSBO_CACHE", str(fc3_cache))
    problem = CompressionProblem(ProblemConfig(samples=100))
    with pytest.raises(UserInputError, match="erm, cbm need the objective's known optimum value; pass known_optimum"):
        run_comparison(problem, ["ei", "erm", "cbm"], 1, 1, tmp_path / "a", progress=False)
    assert not (tmp_path / "a" / "runs.json").exists()
    run = run_one(problem, "erm", 0, iterations=1, n_init=3, optimizer_options=FAST,
                  known_optimum=0.05)  # fmt: skip
    assert run["acquisition_options"] == {"f_star": 0.05}
    # Synthetic problems pass their own optimum.
    synthetic = make_problem("hartmann3")
    run = run_one(synthetic, "cbm", 0, iterations=1, n_init=3, optimizer_options=FAST)
    assert run["acquisition_options"] == {"f_star": synthetic.optimal_value}


def test_score_every_scores_checkpoints_and_the_last_iteration(tmp_path: Path) -> None:
    comparison = run_comparison(
        make_problem("levy4"), ["ei"], 1, 5, tmp_path, n_init=4, workers=1, progress=False,
        optimizer_options=FAST, score_every=2,
    )  # fmt: skip
    scores = [step["score"] for step in comparison["runs"][0]["steps"]]
    assert [score is not None for score in scores] == [False, True, False, True, True]
    assert comparison["runs"][0]["initial_recommendation"]["score"] is not None
    curve = score_curves(comparison)["ei"]
    assert np.isnan(curve[0, [1, 3]]).all() and np.isfinite(curve[0, [0, 2, 4, 5]]).all()
    assert "Scored every 2 iterations" in (tmp_path / "summary.md").read_text()


def test_resume_adds_missing_runs_and_keeps_finished_ones(tmp_path: Path) -> None:
    kwargs = dict(n_init=4, workers=1, progress=False, optimizer_options=FAST)
    first = run_comparison(make_problem("levy4"), ["cei"], [0], 2, tmp_path, **kwargs)
    with pytest.raises(UserInputError, match="was run with iterations = 2, not 3"):
        run_comparison(make_problem("levy4"), ["ei"], [0], 3, tmp_path, resume=True, **kwargs)
    with pytest.raises(UserInputError, match="compares on levy4 with other problem settings"):
        run_comparison(make_problem("levy6"), ["ei"], [0], 2, tmp_path, resume=True, **kwargs)
    resumed = run_comparison(make_problem("levy4"), ["ei"], [0, 1], 2, tmp_path, resume=True, **kwargs)
    assert resumed["settings"]["acquisitions"] == ["cei", "ei"]
    assert resumed["settings"]["seeds"] == [0, 1]
    assert [(r["acquisition"], r["seed"]) for r in resumed["runs"]] == [
        ("cei", 0), ("cei", 1), ("ei", 0), ("ei", 1)
    ]
    assert resumed["runs"][0] == first["runs"][0]  # not rerun
    assert load_comparison(tmp_path)["complete"] is True
    with pytest.raises(UserInputError, match="holds no runs.json, so there is nothing to resume; drop resume"):
        run_comparison(make_problem("levy4"), ["ei"], 1, 2, tmp_path / "new", resume=True, **kwargs)


def test_gp_sample_runs_optimize_one_function_per_seed(tmp_path: Path) -> None:
    family = GPSampleFamily(dim=1, lengthscale=0.1)
    comparison = run_comparison(
        family, ["ei", "cei"], 2, 2, tmp_path, n_init=3, workers=1, progress=False,
        optimizer_options=FAST,
    )  # fmt: skip
    assert comparison["problem"]["name"] == "gpsample1"
    assert comparison["problem"]["optimal_value"] is None
    optima = {run["seed"]: run["optimal_value"] for run in comparison["runs"]}
    assert optima == {seed: family.for_seed(seed).optimal_value for seed in (0, 1)}
    assert optima[0] != optima[1]
    with pytest.raises(UserInputError, match="other problem settings"):  # another prior or noise
        run_comparison(GPSampleFamily(dim=1, lengthscale=0.1, noise_std=0.5), ["ei"], 2, 2, tmp_path,
                       n_init=3, workers=1, progress=False, optimizer_options=FAST, resume=True)  # fmt: skip
    for run in comparison["runs"]:
        function = family.for_seed(run["seed"])
        for entry in run["initial_design"] + run["steps"]:
            assert entry["yvar"] == pytest.approx(0.01)
        for step in run["steps"]:
            x = torch.tensor(step["recommended"]["x"], dtype=torch.float64)
            assert step["score"] == pytest.approx(function.score(x)) and step["score"] >= 0


def test_gp_sample_model_is_the_exact_posterior_of_the_known_kernel() -> None:
    problem = GPSampleFamily(dim=2, lengthscale=0.3, outputscale=2.0).for_seed(0)
    optimizer = Optimizer(problem.bounds, n_init=5, seed=0, known_kernel=problem.known_kernel)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = optimizer.ask()
        optimizer.tell(x, *problem.evaluate(x, generator))
    model = optimizer._fitted_model()
    X, Y, test = optimizer.X, optimizer.Y, torch.rand(7, 2, dtype=torch.float64)

    def kernel(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.exp(-torch.cdist(A, B) ** 2 / (2 * 0.3**2))

    K = kernel(X, X) + 0.1**2 * torch.eye(5, dtype=torch.float64)
    mean = kernel(test, X) @ torch.linalg.solve(K, Y)
    variance = 2.0 - (kernel(test, X) @ torch.linalg.solve(K, kernel(X, test))).diagonal()
    with torch.no_grad():
        posterior = model.posterior(test)
    torch.testing.assert_close(posterior.mean.reshape(-1), mean)
    torch.testing.assert_close(posterior.variance.reshape(-1), variance)
    restored = Optimizer.from_state_dict(optimizer.state_dict())
    assert restored.known_kernel == problem.known_kernel


def test_eign_observes_exact_gradients_on_synthetic_problems():
    from compressbo.experiments.compare import run_one
    from compressbo.experiments.problems import make_problem

    problem = make_problem("hartmann3")
    x = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64)
    h = 1e-6 * torch.eye(3, dtype=torch.float64)
    finite = torch.stack([(problem.true_value(x + e) - problem.true_value(x - e)) / 2e-6 for e in h])
    assert torch.allclose(problem.true_gradient(x), finite, rtol=1e-5, atol=1e-8)

    options = {"num_restarts": 2, "raw_samples": 32}
    with_gradients = run_one(problem, "eign", 0, iterations=2, optimizer_options=options)
    value_only = run_one(problem, "ei", 0, iterations=2, optimizer_options=options)
    assert with_gradients["observed_gradients"] and not value_only["observed_gradients"]
    assert _design(with_gradients) == _design(value_only)
    bounds = problem.bounds
    for step in with_gradients["steps"]:
        x = torch.tensor(step["x"], dtype=torch.float64)
        assert torch.all((bounds[0] <= x) & (x <= bounds[1]))


def test_out_must_be_new_empty_or_an_earlier_comparison(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # "" must not mean the current directory
    problem = make_problem("levy4")
    kwargs = dict(n_init=4, workers=1, progress=False, optimizer_options=FAST)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "convergence.png").write_bytes(b"my plot")
    (tmp_path / "file").write_text("my data")
    cases = [
        (mine, False, "--out .*mine exists and holds other files, not a compressbo comparison; choose a new"),
        (mine, True, "--out .*mine exists and holds other files"),
        (tmp_path / "file", False, "--out .*file is a file, not a directory"),
        ("", False, "--out must name a directory"),
        ("", True, "--out must name a directory"),
    ]
    for out, resume, message in cases:
        with pytest.raises(UserInputError, match=message) as info:
            run_comparison(problem, ["ei"], 1, 1, out, resume=resume, **kwargs)
        assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine"]
    assert [p.name for p in mine.iterdir()] == ["convergence.png"]
    assert (mine / "convergence.png").read_bytes() == b"my plot"
    assert (tmp_path / "file").read_text() == "my data"


def test_ctrl_c_saves_finished_runs_and_says_how_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import compressbo.experiments.compare

    kwargs = dict(n_init=4, workers=1, progress=False, optimizer_options=FAST)
    real_run_one = compressbo.experiments.compare.run_one
    calls = []

    def interrupted_on_the_second_run(*args: object, **options: object) -> dict:
        calls.append(args[1:3])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_one(*args, **options)

    monkeypatch.setattr(compressbo.experiments.compare, "run_one", interrupted_on_the_second_run)
    out = tmp_path / "cmp"
    with pytest.raises(KeyboardInterrupt):
        run_comparison(make_problem("levy4"), ["ei", "cei"], [0, 1], 2, out, **kwargs)
    saved = load_comparison(out)
    assert [(r["acquisition"], r["seed"]) for r in saved["runs"]] == [("ei", 0)]
    assert saved["complete"] is False
    assert capsys.readouterr().err.splitlines() == [
        f"compressbo: 1 of 4 runs finished and are saved in {out / 'runs.json'} (seeds per "
        f"acquisition: ei 1/2, cei 0/2); continue with the same flags: "
        f"compressbo compare ... --out {out} --resume"
    ]
    monkeypatch.setattr(compressbo.experiments.compare, "run_one", real_run_one)
    resumed = run_comparison(make_problem("levy4"), ["ei", "cei"], [0, 1], 2, out, resume=True, **kwargs)
    assert resumed["complete"] is True and len(resumed["runs"]) == 4
    assert resumed["runs"][0] == saved["runs"][0]  # the saved run is kept, not rerun


def test_pool_keeps_the_runs_that_finish_after_ctrl_c() -> None:
    from tqdm import tqdm

    from compressbo.experiments.compare import _run_pool

    recorded: dict[tuple[str, int], dict] = {}

    def record(run: dict) -> None:
        first = not recorded
        recorded[(run["acquisition"], run["seed"])] = run
        if first:
            raise KeyboardInterrupt  # Ctrl-C while the other run is still running

    kwargs = {"iterations": 1, "n_init": 3, "optimizer_options": FAST, "score_every": 1, "known_optimum": None}
    with tqdm(disable=True) as bar, pytest.raises(KeyboardInterrupt):
        _run_pool(make_problem("levy4"), [("ei", 0), ("cei", 0)], 2, kwargs, record, bar)
    assert sorted(recorded) == [("cei", 0), ("ei", 0)]


def _design(run: dict) -> list[tuple]:
    """The initial design's points and observations (not its timings)."""
    return [(entry["x"], entry["y"], entry["yvar"]) for entry in run["initial_design"]]
def test_warp_variants_run_side_by_side_on_the_same_initial_design(tmp_path: Path) -> None:
    """cei@none and cei@learned share seeds and initial designs; each run records its warp."""
    kwargs = dict(n_init=4, workers=1, progress=False, optimizer_options=FAST)
    comparison = run_comparison(make_problem("levy4"), ["cei", "cei@learned"], [0], 2, tmp_path, **kwargs)
    runs = {run["acquisition"]: run for run in comparison["runs"]}
    assert runs["cei"]["warp"] == "none"  # synthetic problems keep the GP on x
    assert runs["cei@learned"]["warp"] == "learned"
    assert _design(runs["cei"]) == _design(runs["cei@learned"])
    assert runs["cei"]["steps"][0]["x"] != runs["cei@learned"]["steps"][0]["x"]
    assert "CEI@learned" in (tmp_path / "summary.md").read_text()
    with pytest.raises(UserInputError, match="cei@log on levy4: warp 'log' needs a box with positive lower bounds"):
        run_comparison(make_problem("levy4"), ["cei@log"], [0], 2, tmp_path / "log", **kwargs)
    with pytest.raises(UserInputError, match="unknown warp 'cubic' in 'cei@cubic'"):
        run_comparison(make_problem("levy4"), ["cei@cubic"], [0], 2, tmp_path / "cubic", **kwargs)
    with pytest.raises(UserInputError, match="cei@spectral on levy4: warp 'spectral' needs a known scale"):
        run_comparison(make_problem("levy4"), ["cei@spectral"], [0], 2, tmp_path / "spectral", **kwargs)


def test_compression_default_warp_is_part_of_what_resume_checks(fc3_cache: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("COMPRESSBO_CACHE", str(fc3_cache))
    kwargs = dict(n_init=3, workers=1, progress=False, optimizer_options=FAST)
    comparison = run_comparison(
        CompressionProblem(ProblemConfig(samples=100), warp="none"), ["cei", "cei@log", "cei@spectral", "cei@activation"],
        [0], 1, tmp_path, **kwargs,
    )  # fmt: skip
    assert comparison["problem"]["warp"] == "none" and comparison["problem"]["surrogate"] == "composite"
    assert [run["warp"] for run in comparison["runs"]] == ["none", "log", "spectral", "activation"]
    assert [run["surrogate"] for run in comparison["runs"]] == ["composite"] * 4  # the problem's default
    with pytest.raises(UserInputError, match="with other problem settings \\(warp differ; it was run with warp 'none'\\)"):
        run_comparison(CompressionProblem(ProblemConfig(samples=100)), ["cei"], [0, 1], 1, tmp_path, resume=True, **kwargs)
    with pytest.raises(UserInputError, match="with other problem settings"):
        problem = CompressionProblem(ProblemConfig(samples=100), warp="none", surrogate="sum")
        run_comparison(problem, ["cei"], [0, 1], 1, tmp_path, resume=True, **kwargs)


class _ScaledInParentOnly(CompressionProblem):
    """FC3 whose known input scale may be computed only in the process that started the comparison."""

    def __init__(self, parent: int, config: ProblemConfig) -> None:
        super().__init__(config)
        self.parent = parent

    def known_scale(self, warp: str):
        if os.getpid() != self.parent:
            raise RuntimeError(f"worker {os.getpid()} computed the {warp} scale again")
        return super().known_scale(warp)


def test_known_scales_are_computed_once_in_the_parent_and_runs_do_not_depend_on_workers(
    fc3_cache: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("COMPRESSBO_CACHE", str(fc3_cache))  # inherited by the workers
    source = functools.partial(_ScaledInParentOnly, os.getpid(), ProblemConfig(samples=100))
    kwargs = dict(n_init=3, progress=False, optimizer_options=FAST)
    acquisitions = ["cei@activation", "cei@spectral"]
    pooled = run_comparison(source, acquisitions, [0], 1, tmp_path / "pool", workers=2, **kwargs)
    alone = run_comparison(source, acquisitions, [0], 1, tmp_path / "alone", workers=1, **kwargs)
    assert [run["warp"] for run in pooled["runs"]] == ["activation", "spectral"]
    for in_pool, in_parent in zip(pooled["runs"], alone["runs"], strict=True):
        assert [step["x"] for step in in_pool["steps"]] == [step["x"] for step in in_parent["steps"]]
        assert in_pool["final_metrics"] == in_parent["final_metrics"]


def test_composite_variants_model_the_error_and_add_the_known_cost(fc3_cache: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("COMPRESSBO_CACHE", str(fc3_cache))
    kwargs = dict(n_init=3, workers=1, progress=False, optimizer_options=FAST)
    problem = CompressionProblem(ProblemConfig(samples=100, bounds=(0.005, 1.0)))
    comparison = run_comparison(problem, ["cei@log+sum", "cei@log+composite", "nei@log"], [0], 2, tmp_path, **kwargs)
    runs = {run["acquisition"]: run for run in comparison["runs"]}
    assert runs["cei@log+composite"]["surrogate"] == "composite" and runs["cei@log+sum"]["surrogate"] == "sum"
    assert runs["nei@log"]["surrogate"] == "sum"  # the problem's default, where the acquisition takes it
    assert _design(runs["cei@log+sum"]) == _design(runs["cei@log+composite"])
    for step in runs["cei@log+composite"]["steps"]:  # y is still the recorded objective
        metrics = problem.objective(torch.tensor(step["x"]), m=100)
        assert step["y"] >= metrics.cost  # cost + gamma * error, error >= 0
    assert "CEI@log+composite" in (tmp_path / "summary.md").read_text()
    with pytest.raises(UserInputError, match="needs the objective's known cost"):
        run_comparison(make_problem("levy4"), ["cei+composite"], [0], 2, tmp_path / "levy", **kwargs)
    with pytest.raises(UserInputError, match="unknown surrogate 'product'"):
        run_comparison(problem, ["cei+product"], [0], 2, tmp_path / "product", **kwargs)


def test_in_flight_runs_are_asynchronous_recorded_and_kept_by_resume(tmp_path: Path) -> None:
    problem = make_problem("hartmann3")
    out = tmp_path / "async"
    comparison = run_comparison(
        problem, ["cei"], 1, 4, out, n_init=N_INIT, workers=1, progress=False, optimizer_options=FAST, in_flight=3
    )
    run = comparison["runs"][0]
    sequential = run_one(problem, "cei", 0, iterations=4, n_init=N_INIT, optimizer_options=FAST)
    points = [r["x"] for r in [*run["initial_design"], *run["steps"]]]
    assert len(points) == N_INIT + 4 and len({tuple(p) for p in points}) == len(points)
    assert [r["x"] for r in run["initial_design"]] == [r["x"] for r in sequential["initial_design"]]
    assert [r["x"] for r in run["steps"]] != [r["x"] for r in sequential["steps"]]  # asked with two pending
    assert comparison["settings"]["in_flight"] == 3
    assert "3 evaluations in flight per run" in (out / "summary.md").read_text()
    with pytest.raises(UserInputError, match="in_flight = 3, not 1"):
        run_comparison(problem, ["cei"], 2, 4, out, n_init=N_INIT, workers=1, progress=False,
                       optimizer_options=FAST, resume=True)  # fmt: skip
