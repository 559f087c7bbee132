import importlib.util
import json
from pathlib import Path

import pytest
import torch

from compressbo.compression.architectures import FC3
from compressbo.compression.data import load_digits_split
from compressbo.exceptions import UserInputError
from compressbo.compression.training import pretrained_fc3_weights, train_fc3

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_fc3.py"


@pytest.fixture(scope="module")
def digits():
    return load_digits_split(seed=0)


def test_train_fc3_reaches_low_validation_error(digits):
    train, val = digits
    state, val_error = train_fc3(train, val, epochs=3, seed=0)
    assert val_error < 0.10
    net = FC3()
    net.load_state_dict(state)
    with torch.inference_mode():
        recomputed = (net(val.inputs).argmax(1) != val.labels).float().mean().item()
    assert recomputed == pytest.approx(val_error)


def test_train_fc3_is_seeded_and_leaves_global_rng_alone(digits):
    train, _ = digits
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, none_error = train_fc3(train, epochs=1, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    b, _ = train_fc3(train, epochs=1, seed=5)
    c, _ = train_fc3(train, epochs=1, seed=6)
    assert none_error is None
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc1.weight"], c["fc1.weight"])


def test_pretrained_weights_are_trained_once_then_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSBO_CACHE", str(tmp_path / "cache"))
    first = pretrained_fc3_weights(epochs=3)
    assert first.trained and first.val_error < 0.10
    assert first.path == tmp_path / "cache" / "fc3-digits-seed0.pth"
    record = json.loads(first.path.with_suffix(".json").read_text())
    assert record["val_error"] == first.val_error and record["dataset"] == "digits"
    net = FC3()
    net.load_state_dict(torch.load(first.path, weights_only=True))
    stamp = first.path.stat().st_mtime_ns
    second = pretrained_fc3_weights(epochs=3)
    assert not second.trained and second.val_error == first.val_error
    assert first.path.stat().st_mtime_ns == stamp


def test_pretrained_weights_reject_other_datasets(tmp_path):
    with pytest.raises(UserInputError, match="scripts/train_fc3.py"):
        pretrained_fc3_weights(dataset="mnist", cache_dir=tmp_path)


def load_script():
    spec = importlib.util.spec_from_file_location("train_fc3_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_script_writes_loadable_state_dict(tmp_path, capsys):
    out = tmp_path / "fc3.pth"
    assert load_script().main(["--data", "digits", "--epochs", "1", "--device", "cpu", "--out", str(out)]) == 0
    FC3().load_state_dict(torch.load(out, weights_only=True))
    assert json.loads(out.with_suffix(".json").read_text())["epochs"] == 1
    assert "validation error" in capsys.readouterr().out


def test_train_script_reports_missing_mnist_in_one_line(tmp_path, capsys):
    code = load_script().main(["--data", "mnist", "--root", str(tmp_path), "--out", str(tmp_path / "x.pth")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "train-images-idx3-ubyte" in err
