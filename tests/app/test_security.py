"""Trust nothing on disk: each attack or fault reproduced for real on the file system.

A planted builder or pickle never runs (a marker file is never written); symbolic links are
never written through; a tampered run directory is refused on ``--resume`` before anything
is written (every file stays byte-identical); a second writer is refused at once; a full
disk is one line, leaves no torn artifact and a run that resumes.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from compressbo.app.cli import main

FAST = ["--num-restarts", "2", "--raw-samples", "32", "--samples", "100", "--quiet"]


def _snapshot(directory: Path) -> dict[str, bytes | str]:
    """Every file under ``directory``: its bytes (or a link's target)."""
    files: dict[str, bytes | str] = {}
    for path in sorted(directory.rglob("*")):
        key = str(path.relative_to(directory))
        if path.is_symlink():
            files[key] = f"-> {os.readlink(path)}"
        elif path.is_file():
            files[key] = path.read_bytes()
    return files


def _error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("compressbo: error:") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def finished(fc3_cache, tmp_path_factory):
    """A finished FC3 run made from a spec file and a weights file of its own (copies)."""
    base = tmp_path_factory.mktemp("finished")
    shutil.copy(Path(__file__).parents[2] / "models" / "fc3.toml", base / "fc3.toml")
    shutil.copy(next(fc3_cache.glob("fc3-digits-seed0.pth")), base / "weights.pth")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMPRESSBO_CACHE", str(fc3_cache))
        argv = ["compress", "--model", str(base / "fc3.toml"), "--weights", str(base / "weights.pth"),
                "--init", "3", "--iterations", "0", *FAST, "--out", str(base / "run")]  # fmt: skip
        assert main(argv) == 0
    return base


@pytest.fixture
def run(finished, fc3_cache, monkeypatch, tmp_path):
    """A private copy of the finished run (its config names the shared spec and weights)."""
    monkeypatch.setenv("COMPRESSBO_CACHE", str(fc3_cache))
    shutil.copytree(finished / "run", tmp_path / "run")
    return tmp_path / "run"


def _edit_json(path: Path, edit) -> None:
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


# ----------------------------------------------------------------------------- code execution


def test_resume_does_not_run_a_builder_that_the_run_directory_names(run, capsys, tmp_path):
    marker = tmp_path / "marker"
    evil = run / "evil.toml"
    evil.write_text(
        'builder = "os:system"\nweights = "random"\ndataset = "digits"\ninput_size = [1, 28, 28]\n'
        f'method = "svd"\nlayers = ["fc1"]\n[builder_kwargs]\ncommand = "touch {marker}"\n'
    )
    import hashlib

    def point_at_evil(config):
        config["settings"]["model"] = str(evil)
        config["fingerprints"]["spec"] = hashlib.sha256(evil.read_bytes()).hexdigest()

    _edit_json(run / "config.json", point_at_evil)
    before = _snapshot(run)
    err = _error(capsys, ["compress", "--resume", str(run), "--quiet"])
    assert "builder 'os:system' is not on compressbo's allowlist" in err and "--trust-code" in err
    assert not marker.exists() and _snapshot(run) == before


# ----------------------------------------------------------------------------- links


def test_report_refuses_a_run_directory_whose_report_is_a_link(run, capsys, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (run / "report.md").unlink()
    (run / "report.md").symlink_to(target)
    err = _error(capsys, ["report", str(run)])
    assert "report.md is a symbolic link" in err and "never writes through links" in err
    assert target.read_text() == "keep me"


def test_resume_refuses_a_symlinked_history_and_changes_nothing(run, capsys, tmp_path):
    target = tmp_path / "elsewhere.jsonl"
    target.write_bytes((run / "history.jsonl").read_bytes())
    (run / "history.jsonl").unlink()
    (run / "history.jsonl").symlink_to(target)
    before, target_before = _snapshot(run), target.read_bytes()
    err = _error(capsys, ["compress", "--resume", str(run), "--iterations", "2", "--quiet"])
    assert "history.jsonl is a symbolic link" in err
    assert _snapshot(run) == before and target.read_bytes() == target_before


# ----------------------------------------------------------------------------- verified resume


def _forged_line(run: Path) -> None:
    record = json.loads((run / "history.jsonl").read_text().splitlines()[-1])
    record.update(iteration=record["iteration"] + 1, y=-5.0, error=-5.0, ratio=0.0)
    with open(run / "history.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _line_without_y(run: Path) -> None:
    lines = (run / "history.jsonl").read_text().splitlines()
    record = json.loads(lines[1])
    del record["y"]
    lines[1] = json.dumps(record)
    (run / "history.jsonl").write_text("\n".join(lines) + "\n")


def _edit_setting(name, value):
    return lambda run: _edit_json(run / "config.json", lambda c: c["settings"].__setitem__(name, value))


def _edit_state(name, value):
    return lambda run: _edit_json(run / "optimizer_state.json", lambda s: s["optimizer"].__setitem__(name, value))


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_forged_line, "history.jsonl"),  # y = -5 would become the recommendation
        (_line_without_y, "history.jsonl line 2 has no finite 'y'"),
        (_edit_setting("gamma", 0.5), "gamma = 0.5, but the run was made with 1.0"),
        (_edit_setting("seed", 7), "seed"),
        (_edit_setting("samples", 50), "samples"),
        (_edit_state("acquisition", "ei"), "acquisition = 'ei', but config.json gives 'cei'"),
        (_edit_state("n_init", 2), "n_init"),
        (_edit_state("bounds", [[0.05], [1.0]]), "bounds"),  # the wrong dimension
    ],
    ids=["forged-line", "no-y", "gamma", "seed", "samples", "acquisition", "n_init", "bounds-dimension"],
)
def test_resume_refuses_a_tampered_run_and_changes_nothing(run, capsys, tamper, message):
    tamper(run)
    before = _snapshot(run)
    err = _error(capsys, ["compress", "--resume", str(run), "--iterations", "2", "--quiet"])
    assert message in err and "nothing was changed" in err
    assert _snapshot(run) == before


@pytest.mark.parametrize("changed", ["weights.pth", "fc3.toml"])
def test_resume_refuses_other_weights_or_another_spec(run, finished, capsys, changed):
    path = finished / changed
    original = path.read_bytes()
    try:
        if changed == "weights.pth":
            state = torch.load(path, weights_only=True)
            torch.save({k: v + 0.01 for k, v in state.items()}, path)  # another network
        else:
            path.write_bytes(original + b"\n# edited\n")
        before = _snapshot(run)
        err = _error(capsys, ["compress", "--resume", str(run), "--iterations", "2", "--quiet"])
        kind = "weights" if changed == "weights.pth" else "spec"
        assert f"the {kind} fingerprint" in err and "nothing was changed" in err
        assert _snapshot(run) == before
    finally:
        path.write_bytes(original)


# ----------------------------------------------------------------------------- one writer


def _hold_lock(directory: Path) -> subprocess.Popen:
    code = ("import sys, time; from compressbo.files import lock_directory; lock_directory(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_of_a_run_directory_is_refused_at_once(run, capsys):
    holder = _hold_lock(run)
    try:
        before = _snapshot(run)
        started = time.monotonic()
        err = _error(capsys, ["compress", "--resume", str(run), "--iterations", "2", "--quiet"])
        assert "is in use by another compressbo process" in err and time.monotonic() - started < 10
        assert _snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    assert main(["compress", "--resume", str(run), "--quiet"]) == 0  # the kernel released the lock


def test_a_second_writer_of_a_comparison_folder_is_refused(capsys, tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "--problem", "levy2", "--acq", "ei", "--seeds", "1", "--iterations", "1", "--init", "3",
            "--workers", "1", "--num-restarts", "2", "--raw-samples", "32", "--quiet", "--out", str(out)]
    assert main(args) == 0
    holder = _hold_lock(out)
    try:
        before = _snapshot(out)
        err = _error(capsys, [*args, "--resume", "--seeds", "2"])
        assert "is in use by another compressbo process" in err and _snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- full disk


def test_a_full_disk_at_export_is_one_line_leaves_no_torn_model_and_resumes(fc3_cache, tmp_path):
    cache = tmp_path / "cache"  # FC3's weights, but no factors yet: the factor cache fills the disk first
    cache.mkdir()
    for path in fc3_cache.glob("fc3-digits-seed0.*"):
        shutil.copy(path, cache / path.name)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "compressbo.app.cli", "compress", "--init", "3", "--iterations", "0", *FAST,
            "--out", str(out)]  # fmt: skip
    limit = 200_000  # bytes per file: the history and state fit, the factors and the model do not

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "COMPRESSBO_CACHE": str(cache), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    child = subprocess.run(argv, env=env, preexec_fn=small_disk, capture_output=True, text=True, timeout=300)
    err = child.stderr.strip().splitlines()
    assert child.returncode == 2, child.stderr
    assert err[-1].startswith("compressbo: error: cannot write or read") and "is the disk full" in err[-1]
    assert f"--resume {out}" in err[-1] and "Traceback" not in child.stderr
    assert any("cannot write the factor cache" in line for line in err)  # a warning, not an abort
    assert not (out / "best.json").exists() and not (out / "model" / "compressed.json").exists()
    assert not (out / "model" / "compressed.pth").exists()  # no torn model
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    history = (out / "history.jsonl").read_text()
    assert len(history.splitlines()) == 3 and not [p for p in cache.rglob("*") if p.name.endswith(".tmp")]

    resumed = subprocess.run(argv[:4] + ["--resume", str(out), "--quiet"], env=env, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "history.jsonl").read_text() == history  # nothing lost, nothing repeated
    assert json.loads((out / "best.json").read_text())["evaluations"] == 3


def test_report_refuses_a_run_whose_exported_model_is_torn(run, capsys):
    model = run / "model" / "compressed.pth"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    before = _snapshot(run)
    err = _error(capsys, ["report", str(run)])
    assert "exported model is torn" in err and f"--resume {run}" in err
    assert _snapshot(run) == before


# ----------------------------------------------------------------------------- one line, not a traceback


@pytest.mark.parametrize(
    ("spec_text", "message"),
    [
        (b'builder = "compressbo.compression.architectures:fc3"\nbuilder_kwargs = { depth = 3 }\nweights = "random"\n'
         b'dataset = "digits"\ninput_size = [1, 28, 28]\nmethod = "svd"\nlayers = ["fc1"]\n',
         "does not take builder_kwargs ['depth']"),
        (b'name = "caf\xe9"\nbuilder = "fc3"\n', "not UTF-8 text"),
        (b'name = "../outside/x"\nbuilder = "compressbo.compression.architectures:fc3"\nweights = "train"\n'
         b'dataset = "digits"\ninput_size = [1, 28, 28]\nmethod = "svd"\nlayers = ["fc1"]\n',
         "spec name '../outside/x' is not a plain name"),
        (None, "is a directory"),
    ],
    ids=["builder-kwargs", "non-utf8", "path-name", "directory"],
)
def test_bad_specs_are_one_line(env_cache, capsys, tmp_path, spec_text, message):
    path = tmp_path / "spec.toml"
    if spec_text is None:
        path.mkdir()
    else:
        path.write_bytes(spec_text)
    err = _error(capsys, ["compress", "--model", str(path), "--init", "3", "--iterations", "0", *FAST,
                          "--out", str(tmp_path / "run")])  # fmt: skip
    assert message in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "outside").exists()


def test_a_huge_gamma_is_one_line(env_cache, capsys, tmp_path):
    err = _error(capsys, ["compress", "--gamma", "1e200", *FAST, "--out", str(tmp_path / "run")])
    assert "--gamma must be a number from 0 to 1e+06" in err


@pytest.fixture
def env_cache(fc3_cache, monkeypatch):
    monkeypatch.setenv("COMPRESSBO_CACHE", str(fc3_cache))
