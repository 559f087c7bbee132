from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import compressbo.experiments.compare
from compressbo.bo.acquisition import ACQUISITION_NAMES
from compressbo.app.cli import COMMANDS, main




def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("compressbo: error: ")
    return lines[0]


def test_compare_then_report_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = ["compare", "--problem", "hartmann", "--dim", "3", "--acq", "ei", "cei",
            "--seeds", "1", "--iterations", "2", "--init", "4", "--workers", "1",
            "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    comparison = json.loads((out / "runs.json").read_text())
    assert comparison["problem"]["name"] == "hartmann3"
    assert comparison["settings"]["acquisitions"] == ["ei", "cei"]
    assert [len(run["steps"]) for run in comparison["runs"]] == [2, 2]
    assert {run["n_init"] for run in comparison["runs"]} == {4}
    summary, plot = (out / "summary.md").read_bytes(), (out / "convergence.png").read_bytes()
    (out / "summary.md").unlink()
    (out / "convergence.png").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "summary.md").read_bytes() == summary
    assert (out / "convergence.png").read_bytes() == plot
    assert "wrote" in capsys.readouterr().out


def test_compare_on_a_compression_problem_then_report(
    tmp_path: Path, fc3_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPRESSBO_CACHE", str(fc3_cache))
    out = tmp_path / "fc3"
    argv = ["compare", "--problem", "fc3", "--acq", "cei", "erm", "--known-optimum", "0.05",
            "--seeds", "1", "--iterations", "3", "--init", "4", "--workers", "1",
            "--samples", "50", "--gamma", "2", "--bounds", "0.02", "0.5", "--score-every", "2",
            "--num-restarts", "2", "--raw-samples", "32", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    comparison = json.loads((out / "runs.json").read_text())
    assert comparison["problem"]["score_label"] == "full-set ratio + 2 * error"
    assert comparison["problem"]["bounds"] == [[0.02] * 3, [0.5] * 3]
    assert comparison["settings"]["known_optimum"] == 0.05
    assert comparison["settings"]["optimizer_options"] == {"num_restarts": 2, "raw_samples": 32, "kernel": "rbf"}
    erm = comparison["runs"][1]
    assert erm["acquisition"] == "erm" and erm["acquisition_options"] == {"f_star": 0.05}
    assert [step["score"] is None for step in erm["steps"]] == [True, False, False]
    for entry in erm["initial_design"]:
        assert entry["yvar"] <= 4 * 0.25 / 50 + 1e-12  # gamma^2 p(1-p)/m
    files = {name: (out / name).read_bytes() for name in ("summary.md", "convergence.png", "recommendations.png")}
    for name in files:
        (out / name).unlink()
    assert main(["report", str(out)]) == 0
    assert {name: (out / name).read_bytes() for name in files} == files
    # resuming with another subsample size would pool runs of two problems: refused
    resume = [*argv, "--resume"]
    resume[resume.index("--samples") + 1] = "60"
    with pytest.raises(SystemExit) as info:
        main(resume)
    assert info.value.code == 2
    assert main([*argv, "--resume"]) == 0  # the same flags: nothing to add, accepted


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["compare", "--problem", "fc3", "--acq", "ei", "erm", "--out", "x"],
         "erm need the objective's known optimum value; pass --known-optimum VALUE"),
        (["compare", "--problem", "levy4", "--samples", "100", "--out", "x"],
         "--samples apply only to compression problems, not 'levy4'; drop them"),
        (["compare", "--problem", "fc3", "--dim", "3", "--out", "x"], "--dim does not apply"),
        (["compare", "--problem", "fc3", "--samples", "50:100", "--out", "x"],
         "compare needs one subsample size, not --samples 50:100"),
        (["compare", "--problem", "nosuchnet", "--out", "x"],
         "unknown problem 'nosuchnet'; choose one of hartmann, griewank, levy, powell (optionally with a dimension, e.g. hartmann3), gpsample, or a compression spec (fc3"),
        (["compare", "--problem", "levy4", "--score-every", "0", "--out", "x"],
         "--score-every must be at least 1"),
        (["compare", "--problem", "rosenbrock", "--out", "x"],
         "unknown problem 'rosenbrock'; choose one of hartmann, griewank, levy, powell"),
        (["compare", "--problem", "levy", "--dim", "4", "--acq", "ei", "foo", "--out", "x"],
         "unknown acquisition 'foo'; choose from " + ", ".join(ACQUISITION_NAMES)),
        (["compare", "--problem", "levy", "--seeds", "many", "--out", "x"],
         "argument --seeds: invalid int value: 'many'"),
        (["compare", "--problem", "levy", "--seeds", "0", "--out", "x"], "at least one seed"),
        (["compare", "--problem", "levy"], "the following arguments are required: --out"),
        (["compare", "--problem", "powell", "--dim", "5", "--out", "x"], "multiple of 4"),
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["report", "does/not/exist"], "does/not/exist/runs.json not found"),
        (["compare", "--problem", "levy", "--noise", "pink", "--out", "x"], "unknown noise model 'pink'"),
        (["compare", "--problem", "gpsample", "--noise", "homo", "--out", "x"], "gpsample takes --noise-std; drop --noise"),
        (["compare", "--problem", "levy", "--kernel", "periodic", "--out", "x"],
         "unknown kernel 'periodic'; choose one of rbf, matern52 (set by --kernel)"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_code_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, fc3_cache: Path,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMPRESSBO_CACHE", str(fc3_cache))
    assert expected in _error_line(capsys, argv)
    assert not (tmp_path / "x").exists()


def test_keyboard_interrupt_exits_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(compressbo.experiments.compare, "run_comparison", interrupted)
    argv = ["compare", "--problem", "levy4", "--out", str(tmp_path / "x")]
    assert main(argv) == 130
    assert capsys.readouterr().err.strip() == "compressbo: interrupted"


def test_every_command_is_a_parser_and_runner_pair() -> None:
    assert set(COMMANDS) >= {"compare", "report"}
    assert all(callable(add) and callable(run) for add, run in COMMANDS.values())


def test_console_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "compressbo.app.cli", "compare", "--problem", "levy4",
         "--acq", "bogus", "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "compressbo: error: unknown acquisition 'bogus'; choose from "
        + ", ".join(ACQUISITION_NAMES)
        + " (set by --acq)"
    ]
    assert result.stdout == ""
