"""End-to-end tests of ``compressbo compress``: artifacts, resume, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from compressbo.app.cli import main
from tests.app.runs import FAST
from tests.app.runs import read_history as _history
from compressbo.compression.export import load_compressed


def test_compress_writes_every_artifact(env):
    out = env / "run"
    assert main(["compress", "--init", "4", "--iterations", "2", "--out", str(out), *FAST]) == 0
    for name in ("config.json", "history.jsonl", "optimizer_state.json", "best.json", "convergence.png",
                 "pareto.png", "report.md"):
        assert (out / name).is_file(), name
    history = _history(out)
    assert [r["iteration"] for r in history] == list(range(6))
    assert [r["phase"] for r in history] == ["init"] * 4 + ["bo"] * 2
    for record in history:
        assert record["yvar"] > 0 and record["m"] == 100
        assert record["y"] == pytest.approx(record["ratio"] + record["error"])
        assert record["seconds_compress"] >= 0 and record["seconds_evaluate"] > 0 and record["seconds_bo"] >= 0
        assert len(record["x"]) == len(record["ranks"]) == 3
    assert all(r["acquisition_value"] is not None for r in history[4:])

    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["acq"] == "cei" and config["versions"]["botorch"]

    best = json.loads((out / "best.json").read_text())
    assert best["samples"] == 540  # the whole digits validation split
    assert 0 < best["ratio"] <= 1.2 and 0 <= best["error"] <= 1
    assert best["score"] == pytest.approx(best["ratio"] + best["error"])
    assert [layer["name"] for layer in best["layers"]] == ["fc1", "fc2", "fc3"]
    assert best["refinement"] is None  # SVD factors are already optimal: nothing to refine
    assert "| fc2 | svd |" in (out / "report.md").read_text()

    # The exported model is the recommended compressed network, loadable without the job.
    model = load_compressed(out / "model")
    assert [model.fc1[0].out_features, model.fc2[0].out_features, model.fc3[0].out_features] == best["ranks"]
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)

    # `compressbo report` regenerates the artifacts from the files alone, identically.
    report = (out / "report.md").read_text()
    for name in ("report.md", "convergence.png", "pareto.png"):
        (out / name).unlink()
    history_before = (out / "history.jsonl").read_text()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text() == report
    assert (out / "convergence.png").stat().st_size > 0 and (out / "pareto.png").stat().st_size > 0
    assert (out / "history.jsonl").read_text() == history_before


def test_report_on_an_unfinished_run_says_how_to_finish_it(env, monkeypatch, capsys):
    out = env / "run"
    _interrupt_after(monkeypatch, 2)
    assert main(["compress", "--init", "3", "--iterations", "1", *FAST, "--out", str(out)]) == 130
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["report", str(out)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "has not finished" in err and f"--resume {out}" in err


def _interrupt_after(monkeypatch, calls):
    """Make the objective raise KeyboardInterrupt (Ctrl-C) at its ``calls + 1``-th call."""
    from compressbo.compression.objective import CompressionObjective

    original = CompressionObjective.__call__
    count = {"n": 0}

    def interrupted(self, theta, m=None, **kwargs):
        if count["n"] == calls:
            raise KeyboardInterrupt
        count["n"] += 1
        return original(self, theta, m, **kwargs)

    monkeypatch.setattr(CompressionObjective, "__call__", interrupted)
    return original


def test_interrupted_run_resumes_to_the_same_history(env, monkeypatch, capsys):
    args = ["compress", "--init", "4", "--iterations", "3", *FAST]
    assert main([*args, "--out", str(env / "straight")]) == 0
    straight = _history(env / "straight")

    original = _interrupt_after(monkeypatch, 5)
    assert main([*args, "--out", str(env / "cut")]) == 130
    assert "--resume" in capsys.readouterr().err
    prefix = (env / "cut" / "history.jsonl").read_text()
    assert len(prefix.splitlines()) == 5
    assert not (env / "cut" / "best.json").exists()

    from compressbo.compression.objective import CompressionObjective

    monkeypatch.setattr(CompressionObjective, "__call__", original)
    assert main(["compress", "--resume", str(env / "cut"), "--quiet"]) == 0
    resumed = _history(env / "cut")
    assert (env / "cut" / "history.jsonl").read_text().startswith(prefix)
    assert len(resumed) == len(straight) == 7
    for a, b in zip(resumed, straight):  # nothing lost, nothing repeated, same subsamples
        assert a["x"] == pytest.approx(b["x"]) and a["y"] == pytest.approx(b["y"])
    assert (env / "cut" / "best.json").is_file()


def test_resume_after_a_crash_between_history_and_state(env):
    """The history is the truth: evaluations the saved state missed are told again."""
    out = env / "run"
    assert main(["compress", "--init", "3", "--iterations", "0", *FAST, "--out", str(out)]) == 0
    state = json.loads((out / "optimizer_state.json").read_text())
    # the state as saved after the first evaluation: every per-observation field has one row
    state["optimizer"].update({key: state["optimizer"][key][:1] for key in ("X", "Y", "Yvar", "gradients", "modelled")})
    (out / "optimizer_state.json").write_text(json.dumps(state))
    config = json.loads((out / "config.json").read_text())
    config["settings"]["iterations"] = 2  # a longer budget, so the resumed run has work to do
    (out / "config.json").write_text(json.dumps(config))
    assert main(["compress", "--resume", str(out), "--quiet"]) == 0
    history = _history(out)
    assert [r["iteration"] for r in history] == list(range(5))
    thetas = [tuple(r["x"]) for r in history]
    assert len(set(thetas)) == len(thetas)
    final = json.loads((out / "optimizer_state.json").read_text())["optimizer"]
    assert final["pending"] == []
    assert final["X"] == [r["x"] for r in history]  # nothing dropped, nothing told twice
    assert final["Y"] == [r["y"] for r in history] and final["Yvar"] == [r["yvar"] for r in history]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "nonet"], "no network spec named 'nonet'"),
        (["--acq", "foo"], "unknown acquisition 'foo'"),
        (["--bounds", "0", "0.5"], "0 < lo < hi <= 1"),
        (["--bounds", "0.2", "1.5"], "0 < lo < hi <= 1"),
        (["--samples", "100000"], "--samples 100000 asks for more than the 540 validation examples"),
        (["--samples", "100:"], "START:END"),
        (["--samples", " 100"], "START:END"),
        (["--seed", "-1"], "--seed must be an integer in 0..2^63-1"),
        (["--acq", "ucb", "--kappa", "0.001"], "--kappa does not apply to ucb"),
        (["--objective", "distill", "--samples", "1:100"], "distill needs --samples of at least 2"),
        (["--weights", "missing.pth"], "does not exist"),
        (["--data", "mnist", "--data-dir", "nowhere"], "nowhere"),
        (["--objective", "mse"], "unknown objective"),
        (["--acq", "erm"], "--known-optimum VALUE"),
        (["--acq", "cei", "--known-optimum", "0.05"], "--known-optimum applies to erm and cbm"),
        (["--samples", "10:x"], "START:END"),
        (["--samples", "10:1000"], "--samples 10:1000 asks for more than the 540"),
        (["--resume", "nowhere-run"], "no config.json"),
        (["--kernel", "periodic"], "unknown kernel 'periodic'; choose one of rbf, matern52 (set by --kernel)"),
    ],
)
def test_bad_input_exits_2_with_one_line(env, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(["compress", "--out", str(env / "run"), *argv] if argv[0] != "--resume" else ["compress", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("compressbo: error:") and "\n" not in err and message in err
    assert "Traceback" not in err
    assert not (env / "run").exists()  # a failed set-up leaves --out free


def test_unwritable_out_exits_2(env, capsys):
    (env / "file").write_text("x")
    with pytest.raises(SystemExit) as info:
        main(["compress", "--out", str(env / "file" / "run"), *FAST])
    assert info.value.code == 2
    assert "writable --out" in capsys.readouterr().err


def test_resume_refuses_new_settings(env, capsys):
    with pytest.raises(SystemExit) as info:
        main(["compress", "--resume", str(env), "--acq", "ei", "--iterations", "9"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "drop --acq" in err and "--iterations" not in err.split("drop")[1]


def test_resume_with_more_iterations_extends_a_finished_run(env, capsys):
    out = env / "run"
    assert main(["compress", "--init", "3", "--iterations", "1", *FAST, "--out", str(out)]) == 0
    before = (out / "history.jsonl").read_text()
    assert main(["compress", "--resume", str(out), "--iterations", "3", "--quiet"]) == 0
    after = (out / "history.jsonl").read_text()
    assert after.startswith(before) and len(_history(out)) == 3 + 3
    assert json.loads((out / "config.json").read_text())["settings"]["iterations"] == 3
    assert json.loads((out / "best.json").read_text())["evaluations"] == 6
    with pytest.raises(SystemExit) as info:
        main(["compress", "--resume", str(out), "--iterations", "2"])
    assert info.value.code == 2 and "can only be extended" in capsys.readouterr().err
    lines = after.splitlines(keepends=True)
    (out / "history.jsonl").write_text("".join([lines[1], lines[0], *lines[2:]]))  # damaged
    config = (out / "config.json").read_text()
    with pytest.raises(SystemExit) as info:
        main(["compress", "--resume", str(out), "--iterations", "9"])
    assert info.value.code == 2 and (out / "config.json").read_text() == config  # refused, nothing rewritten


def test_resume_may_change_device_and_batch_size_but_nothing_else(env, monkeypatch, capsys):
    out = env / "run"
    original = _interrupt_after(monkeypatch, 3)
    assert main(["compress", "--init", "3", "--iterations", "2", *FAST, "--out", str(out)]) == 130
    from compressbo.compression.objective import CompressionObjective

    monkeypatch.setattr(CompressionObjective, "__call__", original)
    capsys.readouterr()
    assert main(["compress", "--resume", str(out), "--device", "cpu", "--batch-size", "7", "--quiet"]) == 0
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert (settings["device"], settings["batch_size"], settings["iterations"]) == ("cpu", 7, 2)
    assert len(_history(out)) == 5
    with pytest.raises(SystemExit) as info:
        main(["compress", "--resume", str(out), "--gamma", "2"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "only --final-samples, --iterations, --device, --batch-size, --threads, --data-workers and --data-on-device may change" in err


def _jpeg_folder(root, classes=("n01440764", "n01443537"), per_class=3):
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for wnid in classes:
        (root / "val" / wnid).mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (48, 64, 3), generator=generator, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(root / "val" / wnid / f"ILSVRC2012_val_{i:08d}.JPEG")
    return root


def _with_classes(env, model, count):
    """The shipped spec ``model`` naming ``count`` classes (an ImageNet spec expects all 1,000)."""
    from compressbo.compression.spec import load_spec

    path = env / f"{model}-{count}.toml"
    path.write_text(load_spec(model).path.read_text() + f"\nbuilder_kwargs = {{ num_classes = {count} }}\n")
    return str(path)


@pytest.mark.parametrize("model", ["vgg16", "resnet50"])
def test_imagenet_specs_compress_a_tiny_folder_with_random_weights(env, caplog, model):
    torch.manual_seed(0)
    data = _jpeg_folder(env / "imagenet")
    out = env / "run"
    argv = ["compress", "--model", _with_classes(env, model, 2), "--weights", "random", "--data-dir", str(data), "--init", "2",
            "--iterations", "1", "--samples", "4", "--batch-size", "3", "--num-restarts", "2",
            "--raw-samples", "16", "--out", str(out)]
    with caplog.at_level("WARNING"):
        assert main(argv) == 0
    assert "accuracy is meaningless" in caplog.text
    history = _history(out)
    assert len(history) == 3 and all(r["m"] == 4 for r in history)
    best = json.loads((out / "best.json").read_text())
    assert best["samples"] == 6 and len(best["layers"]) == {"vgg16": 13, "resnet50": 16}[model]
    assert all(layer["method"] == "tucker2" and len(layer["ranks"]) == 2 for layer in best["layers"])
    assert 0 < best["flops_ratio"] < 1.5 and 0 < best["model_ratio"] <= 1.2
    refinement = best["refinement"]  # HOOI on the Tucker-2 layers, kept only if significantly better
    better = refinement["score_after"] < refinement["score_before"]
    assert refinement["method"] == "hooi" and refinement["kept"] == (better and refinement["p_value"] < 0.05)
    assert best["score"] == (refinement["score_after"] if refinement["kept"] else refinement["score_before"])
    assert "refined by HOOI" in (out / "report.md").read_text()


def test_samples_schedule_grows_m_and_each_observation_keeps_its_variance(env):
    out = env / "run"
    argv = ["compress", "--init", "3", "--iterations", "1", *FAST, "--samples", "50:110", "--out", str(out)]
    assert main(argv) == 0
    history = _history(out)
    assert [r["m"] for r in history] == [50, 70, 90, 110]
    for record in history:
        p = (record["error"] * record["m"] + 1) / (record["m"] + 2)
        assert record["yvar"] == pytest.approx(p * (1 - p) / record["m"])


def test_known_optimum_acquisitions_run_with_a_given_optimum(env):
    out = env / "run"
    argv = ["compress", "--acq", "cbm", "--known-optimum", "0.05", "--init", "3", "--iterations", "1", *FAST,
            "--out", str(out)]
    assert main(argv) == 0
    history = _history(out)
    assert history[-1]["phase"] == "bo" and history[-1]["acquisition_value"] <= 0  # negated CBM


def test_a_known_optimum_above_the_observations_is_warned_about_once(env, caplog):
    argv = ["compress", "--acq", "erm", "--known-optimum", "100", "--init", "3", "--iterations", "1", *FAST,
            "--out", str(env / "run")]
    assert main(argv) == 0
    warned = [r for r in caplog.records if "--known-optimum 100 is above the observed objective" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_a_real_interrupt_or_kill_resumes_with_no_evaluation_lost_or_repeated(env, signal_name):
    """The console script, stopped by Ctrl-C or killed mid-run, then resumed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = env / "run"
    argv = [sys.executable, "-m", "compressbo.app.cli", "compress", "--init", "4", "--iterations", "4", *FAST,
            "--out", str(out)]
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}  # and COMPRESSBO_CACHE from the fixture
    # the child's Ctrl-C must not depend on how this test was started: a runner started in the
    # background by a non-interactive shell inherits SIGINT ignored, and so would the child
    process = subprocess.Popen(
        argv, stderr=subprocess.PIPE, text=True, env=one_thread, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    history = out / "history.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not history.exists() or len(history.read_text().splitlines()) < 5):
        time.sleep(0.05)
    process.send_signal(getattr(signal, signal_name))
    _, err = process.communicate(timeout=60)
    if signal_name == "SIGINT":
        assert process.returncode == 130 and f"--resume {out}" in err and "Traceback" not in err
    else:
        assert process.returncode == -signal.SIGKILL
    prefix = history.read_text()
    assert 5 <= len(prefix.splitlines()) < 8

    assert main(["compress", "--resume", str(out), "--quiet"]) == 0
    records = _history(out)
    assert history.read_text().startswith(prefix)
    assert [r["iteration"] for r in records] == list(range(8))
    assert len({tuple(r["x"]) for r in records}) == 8


def test_kappa_stops_before_evaluating_the_proposal_and_resume_agrees(env):
    """The paper's rule: the first proposal whose maximized CEI is below kappa is not evaluated,
    and a run killed right after that ask resumes to the same history."""
    args = ["compress", "--init", "4", "--iterations", "6", *FAST]
    assert main([*args, "--out", str(env / "probe")]) == 0
    values = [r["acquisition_value"] for r in _history(env / "probe")[4:]]
    kappa = max(values) * 1.0001  # the first BO proposal already falls below it
    assert main([*args, "--kappa", str(kappa), "--out", str(env / "straight")]) == 0
    straight = _history(env / "straight")
    best = json.loads((env / "straight" / "best.json").read_text())
    assert len(straight) == 4 and best["stopped_by_kappa"] and best["evaluations"] == 4

    # a kill right after that ask: the state holds the below-kappa proposal as pending
    out = env / "cut"
    assert main([*args, "--kappa", str(kappa), "--init", "4", "--iterations", "0", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    config["settings"]["iterations"] = 6
    (out / "config.json").write_text(json.dumps(config))
    (out / "best.json").unlink()
    assert main(["compress", "--resume", str(out), "--quiet"]) == 0
    assert len(_history(out)) == 4 and json.loads((out / "best.json").read_text())["stopped_by_kappa"]


def test_damaged_run_directory_is_a_one_line_error(env, capsys):
    out = env / "run"
    assert main(["compress", "--init", "3", "--iterations", "0", *FAST, "--out", str(out)]) == 0
    (out / "optimizer_state.json").write_text("{not json")
    with pytest.raises(SystemExit) as info:
        main(["compress", "--resume", str(out)])
    assert info.value.code == 2 and "damaged" in capsys.readouterr().err


def test_resume_refuses_a_state_that_is_not_the_historys(env, capsys):
    first, second = env / "first", env / "second"
    for out, seed in ((first, "0"), (second, "1")):
        assert main(["compress", "--init", "3", "--iterations", "0", *FAST, "--seed", seed, "--out", str(out)]) == 0
    history = (first / "history.jsonl").read_text()
    (first / "optimizer_state.json").write_text((second / "optimizer_state.json").read_text())
    with pytest.raises(SystemExit) as info:
        main(["compress", "--resume", str(first), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "\n" not in err and "not the first ones of history.jsonl" in err
    assert (first / "history.jsonl").read_text() == history  # nothing lost, nothing appended


def test_kernel_is_recorded_and_kept_by_resume(env):
    out = env / "run"
    assert main(["compress", "--init", "3", "--iterations", "1", "--kernel", "matern52", *FAST, "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["settings"]["kernel"] == "matern52"
    assert json.loads((out / "optimizer_state.json").read_text())["optimizer"]["kernel"] == "matern52"
    assert main(["compress", "--resume", str(out), "--iterations", "2", "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["settings"]["kernel"] == "matern52"
    assert json.loads((out / "optimizer_state.json").read_text())["optimizer"]["kernel"] == "matern52"
    assert len(_history(out)) == 3 + 2


# ------------------------------------------------------------------ ImageNet-layout data: checks and fingerprints


@pytest.fixture
def tiny(env):
    from tests.app.tiny_imagenet import write_folder, write_spec

    return write_spec(env / "tiny.toml"), write_folder(env / "imagenet")


TINY = ["--weights", "random", "--init", "2", "--iterations", "0", "--samples", "6", "--batch-size", "4",
        "--num-restarts", "2", "--raw-samples", "16", "--quiet"]


def test_a_run_records_its_data_and_resume_refuses_other_data(env, tiny, capsys):
    spec, data = tiny
    out = env / "run"
    assert main(["compress", "--model", str(spec), "--data-dir", str(data), *TINY, "--out", str(out)]) == 0
    fingerprint = json.loads((out / "config.json").read_text())["fingerprints"]["data"]
    assert fingerprint["classes"] == ["n01440764", "n01443537", "n01484850"] and fingerprint["files"] == 12
    assert main(["compress", "--resume", str(out), "--iterations", "1", "--quiet", "--trust-code"]) == 0  # the same data: fine
    assert json.loads((out / "config.json").read_text())["fingerprints"]["data"] == fingerprint
    files = {name: (out / name).read_text() for name in ("config.json", "history.jsonl", "best.json")}
    removed = data / "val" / "n01443537"
    for path in removed.iterdir():
        path.unlink()
    removed.rmdir()
    with pytest.raises(SystemExit) as info:
        main(["compress", "--resume", str(out), "--iterations", "2", "--trust-code"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "\n" not in err and "Traceback" not in err
    assert "not the data this run was made with (class(es) n01443537 missing; 8 files instead of 12)" in err
    assert {name: (out / name).read_text() for name in files} == files  # nothing written


def test_a_corrupt_image_or_a_wrong_folder_fails_before_the_search(env, tiny, capsys):
    spec, data = tiny
    (data / "val" / "n01484850" / "ILSVRC2012_val_00000001.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(SystemExit) as info:
        main(["compress", "--model", str(spec), "--data-dir", str(data), *TINY, "--out", str(env / "run")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "\n" not in err and "cannot read validation image" in err
    assert "n01484850/ILSVRC2012_val_00000001.png" in err and not (env / "run").exists()
    with pytest.raises(SystemExit) as info:  # an ImageNet spec needs the 1,000 wnid folders
        main(["compress", "--model", "resnet50", "--data-dir", str(data), *TINY, "--out", str(env / "run")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "holds 3 class folders but the network expects 1,000 (997 missing;" in err


def test_the_original_network_is_scored_once_across_a_run_and_its_extension(env, tiny, caplog):
    import logging

    spec, data = tiny
    out = env / "run"
    with caplog.at_level(logging.INFO, logger="compressbo"):
        assert main(["compress", "--model", str(spec), "--data-dir", str(data), *TINY, "--out", str(out)]) == 0
        assert main(["compress", "--resume", str(out), "--iterations", "1", "--quiet", "--trust-code"]) == 0
    lines = [r.getMessage() for r in caplog.records]
    assert sum(line == "scoring the original network on 12 validation examples" for line in lines) == 1
    assert sum(line == "scoring the recommended network on 12 validation examples" for line in lines) == 2
    assert sum("(cached in original_metrics.json)" in line for line in lines) == 1
    cached = json.loads((out / "original_metrics.json").read_text())
    best = json.loads((out / "best.json").read_text())
    assert best["original_error"] == cached["error"] == cached["wrong"] / 12 and best["evaluations"] == 3
    refinement = best["refinement"]
    assert refinement["improved"] + refinement["worsened"] <= 12 and 0 < refinement["p_value"] <= 1
    assert "Paired test (exact one-sided paired sign test" in (out / "report.md").read_text()


def test_final_samples_scores_a_fixed_seeded_subset(env, tiny, capsys):
    spec, data = tiny
    runs = []
    for name in ("a", "b"):
        out = env / name
        argv = ["compress", "--model", str(spec), "--data-dir", str(data), *TINY, "--final-samples", "5", "--out", str(out)]
        assert main(argv) == 0
        runs.append(json.loads((out / "best.json").read_text()))
    assert runs[0]["samples"] == 5 and runs[0]["final_samples"] == 5 and runs[0]["validation_size"] == 12
    assert runs[0]["error"] == runs[1]["error"] and runs[0]["original_error"] == runs[1]["original_error"]
    assert json.loads((env / "a" / "original_metrics.json").read_text())["key"]["examples"] == 5
    assert "5: a fixed seeded subset of the 12 validation examples (--final-samples)" in (env / "a" / "report.md").read_text()
    with pytest.raises(SystemExit) as info:
        main(["compress", "--model", str(spec), "--data-dir", str(data), *TINY, "--final-samples", "13", "--out", str(env / "c")])
    assert info.value.code == 2 and "--final-samples 13 asks for more than the 12" in capsys.readouterr().err
def test_warp_is_recorded_in_config_and_state_and_kept_by_resume(env, capsys):
    out = env / "run"
    assert main(["compress", "--init", "3", "--iterations", "1", *FAST, "--out", str(out)]) == 0
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["warp"] == "learned" and settings["surrogate"] == "composite"  # the defaults, recorded as used
    state = json.loads((out / "optimizer_state.json").read_text())["optimizer"]
    assert state["warp"] == "learned" and state["surrogate"] == "composite"
    with pytest.raises(SystemExit) as info:
        main(["compress", "--resume", str(out), "--warp", "none", "--iterations", "2"])
    assert info.value.code == 2 and "drop --warp" in capsys.readouterr().err
    spectral = env / "spectral"  # the layers' log energies are computed again on resume, not stored
    assert main(["compress", "--init", "3", "--iterations", "1", "--warp", "spectral", *FAST, "--out", str(spectral)]) == 0
    assert main(["compress", "--resume", str(spectral), "--iterations", "2", "--quiet"]) == 0
    assert json.loads((spectral / "config.json").read_text())["settings"]["warp"] == "spectral"
    state = json.loads((spectral / "optimizer_state.json").read_text())["optimizer"]
    assert state["warp"] == "spectral" and len(state["X"]) == 5


def test_a_run_from_before_warping_resumes_with_the_gp_of_the_sum_on_theta(env):
    out = env / "run"
    argv = ["compress", "--init", "3", "--iterations", "1", "--warp", "none", "--surrogate", "sum", *FAST]
    assert main([*argv, "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    del config["settings"]["warp"], config["settings"]["surrogate"]  # such runs recorded neither
    (out / "config.json").write_text(json.dumps(config))
    state = json.loads((out / "optimizer_state.json").read_text())
    del state["optimizer"]["warp"]
    del state["run"]["settings"]["warp"], state["run"]["settings"]["surrogate"]
    (out / "optimizer_state.json").write_text(json.dumps(state))
    assert main(["compress", "--resume", str(out), "--iterations", "2", "--quiet"]) == 0
    state = json.loads((out / "optimizer_state.json").read_text())["optimizer"]
    assert state["warp"] == "none" and state["surrogate"] == "sum"
    assert json.loads((out / "config.json").read_text())["settings"]["surrogate"] == "sum"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--warp", "cubic"], "unknown warp 'cubic'; choose one of none, log, learned, spectral, activation (set by --warp)"),
        (["--acq", "eign", "--warp", "log"], "acquisition eign takes --warp none, not log"),
    ],
)
def test_bad_warp_exits_2_with_one_line(env, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(["compress", *argv, "--out", str(env / "bad"), *FAST])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (env / "bad").exists()


def test_flops_cost_is_the_objectives_known_term(env):
    out = env / "run"
    assert main(["compress", "--init", "3", "--iterations", "1", "--cost", "flops", *FAST, "--out", str(out)]) == 0
    best = json.loads((out / "best.json").read_text())
    macs = [(layer["macs_after"], layer["macs_before"]) for layer in best["layers"]]
    assert best["cost_metric"] == "flops"
    assert best["cost"] == pytest.approx(sum(a for a, _ in macs) / sum(b for _, b in macs), rel=1e-12)
    assert best["score"] == pytest.approx(best["cost"] + best["error"], rel=1e-12)
    assert best["cost"] != best["ratio"]  # FC3's biases: MACs are not parameters
    for record in _history(out):
        assert record["y"] == pytest.approx(record["cost"] + record["error"], rel=1e-12)
    assert "FLOPs ratio of the compressed layers" in (out / "report.md").read_text()
    with pytest.raises(SystemExit) as info:
        main(["compress", "--cost", "macs", "--out", str(env / "bad"), *FAST])
    assert info.value.code == 2 and not (env / "bad").exists()


def test_composite_surrogate_fits_the_error_and_resumes(env, monkeypatch, capsys):
    out = env / "run"
    argv = ["compress", "--init", "3", "--iterations", "2", "--surrogate", "composite", "--bounds", "0.005", "1"]
    original = _interrupt_after(monkeypatch, 4)
    assert main([*argv, *FAST, "--out", str(out)]) == 130
    monkeypatch.setattr("compressbo.compression.objective.CompressionObjective.__call__", original)
    state = json.loads((out / "optimizer_state.json").read_text())["optimizer"]
    assert state["surrogate"] == "composite" and all(row is not None for row in state["modelled"])
    assert main(["compress", "--resume", str(out), "--quiet"]) == 0
    history = _history(out)
    assert len(history) == 5 and [r["iteration"] for r in history] == list(range(5))
    for record in history:  # the recorded y stays cost + gamma * error, with the error's variance
        assert record["y"] == pytest.approx(record["cost"] + record["error"], rel=1e-12)
        assert record["yvar"] == pytest.approx(record["variance"], rel=1e-12)
    assert json.loads((out / "config.json").read_text())["settings"]["surrogate"] == "composite"
    with pytest.raises(SystemExit) as info:
        main(["compress", "--acq", "kg", "--surrogate", "composite", "--out", str(env / "bad"), *FAST])
    assert info.value.code == 2 and "needs --surrogate sum" in capsys.readouterr().err
