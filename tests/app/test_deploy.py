"""``compressbo finetune``, ``export`` and ``bench`` on finished compress runs, and the run's latency."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from compressbo.app.cli import main
from compressbo.app.deploy import finetune_run
from compressbo.app.deploy_report import format_ms
from compressbo.compression.data import load_digits_split
from compressbo.compression.evaluator import SubsampleEvaluator
from compressbo.compression.export import load_compressed

FAST = ["--num-restarts", "2", "--raw-samples", "32", "--samples", "100", "--quiet"]


@pytest.fixture(scope="session")
def fc3_run(fc3_cache, tmp_path_factory) -> Path:
    """A finished FC3 run on digits in the wide box (theta down to 0.005): 6 evaluations."""
    out = tmp_path_factory.mktemp("deploy") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMPRESSBO_CACHE", str(fc3_cache))
        assert main(["compress", "--init", "4", "--iterations", "2", "--bounds", "0.005", "1", "--out", str(out), *FAST]) == 0
    return out


@pytest.fixture
def run(fc3_run, fc3_cache, monkeypatch, tmp_path) -> Path:
    """A private copy of the finished run (the commands write into it)."""
    monkeypatch.setenv("COMPRESSBO_CACHE", str(fc3_cache))
    copy = tmp_path / "run"
    shutil.copytree(fc3_run, copy)
    return copy


def _best(run: Path) -> dict:
    return json.loads((run / "best.json").read_text())


def _error_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("compressbo: error: "), lines
    return lines[0]


# ----------------------------------------------------------------------------- latency


def test_every_finished_run_records_its_latency(fc3_run) -> None:
    best = _best(fc3_run)
    latency = best["latency"]
    assert latency["device"] == "cpu" and latency["threads"] >= 1
    assert [row["requested_batch_size"] for row in latency["batches"]] == [1, 512]  # 1 and the run's batch size
    for row in latency["batches"]:
        for network in ("original", "compressed"):
            figures = row[network]
            assert figures["median_ms"] > 0 and figures["images_per_s"] > 0 and figures["repeats"] >= 3
            assert figures["batch_size"] == row["batch_size"]
        assert row["speedup"] == pytest.approx(row["original"]["median_ms"] / row["compressed"]["median_ms"])
    report = (fc3_run / "report.md").read_text()
    assert "## Measured latency (cpu" in report
    assert f"| {latency['batches'][0]['speedup']:.2f}x |" in report
    assert f"would predict a {1 / best['flops_ratio']:.2f}x speedup" in report


def test_latencies_keep_four_significant_digits_below_a_millisecond() -> None:
    assert [format_ms(ms) for ms in (412.3456, 5.5, 0.10937, 0.012345)] == ["412.346", "5.500", "0.1094", "0.01235"]
    printed = float(format_ms(0.1634)) / float(format_ms(0.1104))  # a small network's batch-1 latencies
    assert printed == pytest.approx(0.1634 / 0.1104, rel=1e-3)


def test_bench_prints_both_latencies_and_the_speedup(run, capsys) -> None:
    assert main(["bench", str(run), "--device", "cpu", "--batch-size", "16"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0] in ("1", "16")]
    assert [row[0] for row in rows] == ["1", "16"]
    for row in rows:
        original, compressed, speedup = float(row[1]), float(row[2]), float(row[3].rstrip("x"))
        assert original > 0 and compressed > 0
        assert speedup == pytest.approx(original / compressed, rel=0.01, abs=0.01)
    assert "FLOPs ratio" in out and "the run measured on cpu" in out


# ----------------------------------------------------------------------------- finetune


def test_finetune_writes_a_loadable_model_and_its_errors(run, capsys) -> None:
    model_json = (run / "model" / "compressed.json").read_text()
    assert main(["finetune", str(run), "--epochs", "2", "--device", "cpu"]) == 0
    assert "fine-tuned 2 epochs: full-set error" in capsys.readouterr().out
    entry = _best(run)["finetune"]
    assert entry["epochs_done"] == 2 and entry["finished"] and entry["settings"]["loss"] == "kd"
    assert entry["error_before"] == pytest.approx(_best(run)["error"])  # the search's full-set error
    assert entry["original_error"] == pytest.approx(_best(run)["original_error"])
    assert [h["epoch"] for h in entry["history"]] == [1, 2] and entry["history"][-1]["val_error"] == entry["error_after"]
    assert entry["train_examples"] == 1257 and entry["validation_examples"] == 540

    tuned, searched = load_compressed(run / "finetuned"), load_compressed(run / "model")
    assert {k: v.shape for k, v in tuned.state_dict().items()} == {k: v.shape for k, v in searched.state_dict().items()}
    assert any(not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), searched.state_dict().values()))
    val = load_digits_split(0)[1]
    assert SubsampleEvaluator(val, device="cpu").full_error(tuned) == pytest.approx(entry["error_after"])
    assert (run / "model" / "compressed.json").read_text() == model_json  # model/ is left as it was

    report = (run / "report.md").read_text()
    assert "## Fine-tuning (full validation set)" in report and f"| compressed, fine-tuned | {entry['error_after']:.4f} |" in report
    assert main(["report", str(run)]) == 0 and (run / "report.md").read_text() == report  # regenerated alike

    assert "fine-tuned already" in _error_line(capsys, ["finetune", str(run)])


def test_finetune_killed_mid_run_resumes_to_the_same_weights(run, tmp_path, fc3_cache, capsys) -> None:
    """A real interruption: the fine-tune runs in a child process that is SIGKILLed after an epoch."""
    straight = tmp_path / "straight"
    shutil.copytree(run, straight)
    args = ["--epochs", "4", "--batch-size", "16", "--lr", "0.005", "--device", "cpu", "--quiet"]
    assert main(["finetune", str(straight), *args]) == 0

    env = {**os.environ, "COMPRESSBO_CACHE": str(fc3_cache), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "compressbo.app.cli", "finetune", str(run), *args],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = run / "finetune_checkpoint" / "checkpoint.json"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if progress.is_file() and json.loads(progress.read_text())["epoch"] >= 1:
                break
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    epoch = json.loads(progress.read_text())["epoch"]
    assert 1 <= epoch < 4 and not (run / "finetuned").exists()

    assert "unfinished fine-tune" in _error_line(capsys, ["finetune", str(run), *args])
    assert main(["finetune", str(run), "--resume", "--quiet"]) == 0
    resumed = torch.load(run / "finetuned" / "compressed.pth", weights_only=True)
    expected = torch.load(straight / "finetuned" / "compressed.pth", weights_only=True)
    assert resumed.keys() == expected.keys() and all(torch.equal(resumed[k], expected[k]) for k in expected)
    without_time = lambda entry: [{k: v for k, v in h.items() if k != "seconds"} for h in entry["history"]]  # noqa: E731
    assert without_time(_best(run)["finetune"]) == without_time(_best(straight)["finetune"])


def test_finetune_stops_and_resumes_through_the_api(run) -> None:
    first = finetune_run(run, resume=False, device="cpu", stop_after=1, progress=False)
    assert first["epochs_done"] == 1 and not first["finished"] and "finetune" not in _best(run)
    done = finetune_run(run, resume=True, device="cpu", progress=False)
    assert done["finished"] and done["epochs_done"] == 2 and _best(run)["finetune"]["epochs_done"] == 2


# ----------------------------------------------------------------------------- export


def test_export_onnx_of_the_finetuned_model_runs_under_onnx_runtime(run, capsys) -> None:
    import onnxruntime

    assert main(["finetune", str(run), "--epochs", "1", "--quiet"]) == 0
    assert main(["export", str(run), "--format", "onnx", "--finetuned"]) == 0
    out = capsys.readouterr().out
    assert "ONNX Runtime vs PyTorch at batch sizes 1, 7: max abs diff" in out
    path = run / "export" / "finetuned.onnx"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 1, 28, 28)
    with torch.inference_mode():
        expected = load_compressed(run / "finetuned")(x).numpy()
    assert np.abs(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0] - expected).max() <= 1e-4


@pytest.mark.parametrize("format, name", [("torchscript", "model.torchscript.pt"), ("state-dict", "model.state_dict.pth")])
def test_export_torchscript_and_state_dict(run, capsys, format, name) -> None:
    assert main(["export", str(run), "--format", format]) == 0
    assert f"wrote {run / 'export' / name}" in capsys.readouterr().out and (run / "export" / name).is_file()


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("command", [["finetune"], ["export", "--format", "onnx"], ["bench"]])
def test_commands_refuse_a_directory_that_is_not_a_finished_run(run, tmp_path, capsys, command) -> None:
    assert "is not a finished compress run (no config.json there)" in _error_line(capsys, [command[0], str(tmp_path), *command[1:]])
    (run / "best.json").unlink()  # a run that was interrupted before its end
    assert "(no best.json there)" in _error_line(capsys, [command[0], str(run), *command[1:]])


def test_bad_export_and_finetune_input(run, capsys) -> None:
    assert "unknown export format 'tflite'; choose one of onnx, torchscript, state-dict" in _error_line(
        capsys, ["export", str(run), "--format", "tflite"])
    assert "no fine-tuned model" in _error_line(capsys, ["export", str(run), "--format", "onnx", "--finetuned"])
    assert "no fine-tune checkpoint to resume" in _error_line(capsys, ["finetune", str(run), "--resume"])
    assert "--loss" in _error_line(capsys, ["finetune", str(run), "--loss", "mse"])
    assert "--epochs" in _error_line(capsys, ["finetune", str(run), "--epochs", "0"])
    assert "--batch-size must be at least 1" in _error_line(capsys, ["bench", str(run), "--batch-size", "0"])


class TinyConv(nn.Module):
    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=4, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean(dim=(2, 3)))


def tiny_conv(num_classes: int = 2) -> nn.Module:
    return TinyConv(num_classes)


def _jpegs(folder: Path, classes=("n01440764", "n01443537"), per_class=3) -> None:
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for wnid in classes:
        (folder / wnid).mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (48, 64, 3), generator=generator, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / wnid / f"{i:08d}.JPEG")


def test_imagenet_finetune_needs_the_train_folder_and_then_uses_it(tmp_path, capsys) -> None:
    spec = tmp_path / "tiny.toml"
    spec.write_text(f'builder = "{__name__}:tiny_conv"\nbuilder_kwargs = {{ num_classes = 2 }}\nweights = "random"\ndataset = "imagenet"\n'
                    'input_size = [3, 224, 224]\nmethod = "tucker2"\nlayers = ["conv2"]\n')
    data, out = tmp_path / "imagenet", tmp_path / "run"
    _jpegs(data / "val")
    assert main(["compress", "--model", str(spec), "--data-dir", str(data), "--init", "2", "--iterations", "0",
                 "--samples", "4", "--batch-size", "3", "--out", str(out), "--quiet", "--trust-code"]) == 0
    line = _error_line(capsys, ["finetune", str(out), "--quiet", "--trust-code"])
    assert f"ImageNet training folder {data / 'train'} does not exist" in line
    _jpegs(data / "train", per_class=2)
    line = _error_line(capsys, ["finetune", str(out), "--quiet"])
    assert "not on compressbo's allowlist" in line and "--trust-code" in line  # a test-module builder
    assert main(["finetune", str(out), "--epochs", "1", "--batch-size", "2", "--workers", "2", "--loss", "ce", "--quiet",
                 "--trust-code"]) == 0
    entry = _best(out)["finetune"]
    assert entry["train_examples"] == 4 and entry["validation_examples"] == 6 and entry["dataset"] == "imagenet"
