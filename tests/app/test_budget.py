"""``compressbo compress --target-ratio R``: the budget is never violated, refused when unachievable, kept by resume."""

from __future__ import annotations

import json

import pytest

from compressbo.app.cli import main
from tests.app.runs import FAST
from tests.app.runs import read_history as _history
from compressbo.compression.budget import achievable_range
from compressbo.compression.config import ProblemConfig


def test_every_evaluation_and_the_recommendation_meet_the_budget(env):
    out = env / "run"
    assert main(["compress", "--target-ratio", "0.1", "--init", "4", "--iterations", "3", "--out", str(out), *FAST]) == 0
    history = _history(out)
    assert len(history) == 7
    for record in history:
        assert record["ratio"] <= 0.1  # the exact cost of the ranks evaluated
        assert record["y"] == record["error"] and record["yvar"] == record["variance"]  # the GP models the error
    best = json.loads((out / "best.json").read_text())
    assert best["ratio"] <= 0.1
    assert best["budget"] == {
        "setting": "target_ratio", "cost": "params", "bound": 0.1,
        "achieved_cost": pytest.approx(best["ratio"]), "met": True, "error": best["error"],
    }
    assert best["theta"] in [r["x"] for r in history]  # an observed point
    report = (out / "report.md").read_text()
    assert "budget (target_ratio): params cost <= | 0.1000 |" in report
    assert f"exact params cost achieved | {best['ratio']:.4f} (met)" in report
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["target_ratio"] == 0.1 and settings["surrogate"] == "sum"  # a budget models the error alone


def test_a_flops_budget_is_met_on_the_flops_cost(env):
    out = env / "run"
    assert main(["compress", "--cost", "flops", "--target-flops", "0.08", "--init", "3", "--iterations", "1",
                 "--out", str(out), *FAST]) == 0
    assert all(r["cost"] <= 0.08 for r in _history(out))
    best = json.loads((out / "best.json").read_text())
    assert best["budget"]["cost"] == "flops" and best["budget"]["achieved_cost"] <= 0.08


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--target-ratio", "0.01"], ["--target-ratio 0.01 is not achievable", "[0.04927, 1)", "rank 1"]),
        (["--target-ratio", "1"], ["--target-ratio 1 is not achievable", "[0.04927, 1)"]),
        (["--target-ratio", "0.001", "--bounds", "0.001", "1"], ["[0.003788, 1)", "(every layer at rank 1)"]),
        (["--target-ratio", "0.1", "--cost", "flops"], ["--target-ratio bounds the params cost"]),
        (["--target-ratio", "0.1", "--target-flops", "0.1", "--cost", "flops"], ["one budget"]),
        (["--target-ratio", "0.1", "--surrogate", "composite"], ["error alone", "--surrogate"]),
    ],
)
def test_an_infeasible_budget_exits_2_with_one_line_and_no_run_dir(env, capsys, flags, words):
    out = env / "run"
    with pytest.raises(SystemExit) as info:
        main(["compress", *flags, "--out", str(out), *FAST])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for word in words:
        assert word in err
    assert not out.exists()


def test_the_range_is_the_exact_cost_of_the_box_corner(fc3_cache, monkeypatch):
    from compressbo.compression.setup import CompressionSetup
    from compressbo.compression.config import RuntimeConfig

    monkeypatch.setenv("COMPRESSBO_CACHE", str(fc3_cache))
    config = ProblemConfig(target_ratio=0.2, bounds=(0.005, 1.0), samples=50)
    lowest, rank_one, top = achievable_range(config)
    setup = CompressionSetup.load(config, RuntimeConfig(device="cpu"))
    assert lowest == pytest.approx(setup.compressor.cost(setup.bounds[0], "params"))
    assert rank_one == pytest.approx(setup.compressor.cost_function("params").exact_for_ranks([1, 1, 1]))
    assert rank_one < lowest < 0.006 and top == 1.0


def test_resume_keeps_the_budget(env, capsys):
    out = env / "run"
    assert main(["compress", "--target-ratio", "0.08", "--init", "3", "--iterations", "1", "--out", str(out), *FAST]) == 0
    assert main(["compress", "--resume", str(out), "--iterations", "3", "--quiet"]) == 0
    history = _history(out)
    assert len(history) == 6 and all(r["ratio"] <= 0.08 for r in history)
    assert json.loads((out / "config.json").read_text())["settings"]["target_ratio"] == 0.08
    state = json.loads((out / "optimizer_state.json").read_text())
    assert state["optimizer"]["constraint"] == {"name": "params", "bound": 0.08}
    assert json.loads((out / "best.json").read_text())["budget"]["bound"] == 0.08
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["compress", "--resume", str(out), "--target-ratio", "0.2", "--quiet"])
    assert info.value.code == 2
    assert "--target-ratio" in capsys.readouterr().err


def test_the_frontier_is_monotone_and_agrees_with_the_recommendation(env):
    out = env / "run"
    assert main(["compress", "--target-ratio", "0.1", "--init", "4", "--iterations", "4", "--out", str(out), *FAST]) == 0
    frontier = json.loads((out / "frontier.json").read_text())
    assert frontier["cost"] == "params" and "model prediction" in frontier["note"]
    points = frontier["points"]
    budgets = [p["budget"] for p in points]
    assert budgets == sorted(budgets) and len(points) >= 20
    errors = [p["predicted_error"] for p in points]
    assert all(later <= earlier for earlier, later in zip(errors, errors[1:]))
    assert all(p["cost"] <= p["budget"] and p["std"] >= 0 and len(p["ranks"]) == 3 for p in points)
    best = json.loads((out / "best.json").read_text())
    at_recommendation = next(p for p in points if p["budget"] == pytest.approx(best["ratio"], rel=0, abs=1e-12))
    assert abs(at_recommendation["predicted_error"] - best["posterior_mean"]) <= 2 * best["posterior_std"]
    assert "## Predicted trade-off curve (a model prediction)" in (out / "report.md").read_text()
    # `compressbo report` redraws the frontier from frontier.json alone
    before = (out / "report.md").read_text()
    assert main(["report", str(out)]) == 0 and (out / "report.md").read_text() == before


def test_a_composite_run_has_a_frontier_and_a_sum_run_none(env):
    composite, plain = env / "composite", env / "sum"
    assert main(["compress", "--init", "3", "--iterations", "1", "--out", str(composite), *FAST]) == 0  # the default
    points = json.loads((composite / "frontier.json").read_text())["points"]
    assert [p["predicted_error"] for p in points] == sorted((p["predicted_error"] for p in points), reverse=True)
    assert main(["compress", "--surrogate", "sum", "--init", "3", "--iterations", "1", "--out", str(plain), *FAST]) == 0
    assert not (plain / "frontier.json").exists()
