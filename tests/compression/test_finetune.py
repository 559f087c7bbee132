"""Fine-tuning a compressed FC3 on the digits training split: it recovers accuracy, and resumes exactly."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from compressbo.compression import Compressor, build_network, load_spec
from compressbo.compression.data import load_digits_split, load_imagenet_train, load_training_set
from compressbo.compression.evaluator import SubsampleEvaluator
from compressbo.compression.finetune import (
    FinetuneCheckpoint,
    FinetuneSettings,
    distillation_loss,
    epoch_seed,
    finetune,
)
from compressbo.exceptions import DataError, RunDirError, SettingError


@pytest.fixture(scope="module")
def strongly_compressed(fc3_cache, tmp_path_factory):
    """FC3 (briefly trained) and its strongly compressed version (ranks 4, 4, 3)."""
    spec = load_spec("fc3")
    original = build_network(spec, fc3_cache / "fc3-digits-seed0.pth")
    compressed = Compressor(original, spec, cache_dir=tmp_path_factory.mktemp("factors")).build([4, 4, 3])
    return original, compressed.module


@pytest.fixture(scope="module")
def digits():
    return load_digits_split(0)


def _student(strongly_compressed):
    return copy.deepcopy(strongly_compressed[1])  # its unreplaced layers would share the original's storage


@pytest.mark.parametrize("loss", ["kd", "ce"])
def test_a_short_finetune_lowers_the_full_set_error(strongly_compressed, digits, loss) -> None:
    original, _ = strongly_compressed
    train, val = digits
    student = _student(strongly_compressed)
    shapes = {name: p.shape for name, p in student.named_parameters()}
    before = SubsampleEvaluator(val, device="cpu").full_error(student)
    result = finetune(student, train, val, FinetuneSettings(epochs=2, loss=loss), teacher=original, progress=False)
    assert result.error_before == pytest.approx(before) and before > 0.2
    assert result.error_after < before - 0.05, (before, result.error_after)  # a real recovery, not noise
    assert SubsampleEvaluator(val, device="cpu").full_error(student) == pytest.approx(result.error_after)
    assert [h["epoch"] for h in result.history] == [1, 2] and result.finished
    assert result.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the cosine schedule ends at 0
    assert {name: p.shape for name, p in student.named_parameters()} == shapes  # the ranks never change
    assert result.train_examples == len(train) == 1257 and result.validation_examples == len(val) == 540


def test_interrupted_then_resumed_ends_with_the_same_weights(strongly_compressed, digits, tmp_path) -> None:
    original, _ = strongly_compressed
    train, val = digits
    settings = FinetuneSettings(epochs=3, lr=0.02, batch_size=32, seed=5)
    straight = _student(strongly_compressed)
    finetune(straight, train, val, settings, teacher=original, checkpoint=FinetuneCheckpoint(tmp_path / "a"), progress=False)

    checkpoint = FinetuneCheckpoint(tmp_path / "b")
    first = finetune(_student(strongly_compressed), train, val, settings, teacher=original, checkpoint=checkpoint,
                     stop_after=1, progress=False)
    assert first.epochs_done == 1 and not first.finished
    state = torch.load(checkpoint.weights_path, weights_only=True)
    metadata = json.loads(checkpoint.json_path.read_text())
    assert state["epoch"] == metadata["epoch"] == 1 and metadata["settings"] == settings.to_dict()
    assert set(state) >= {"model", "optimizer", "schedule", "scaler", "history"}

    resumed = _student(strongly_compressed)  # a fresh process would start from model/ again
    result = finetune(resumed, train, val, settings, teacher=original, checkpoint=checkpoint, resume=True, progress=False)
    assert result.finished and result.epochs_done == 3 and len(result.history) == 3
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert result.error_before == first.error_before

    with pytest.raises(RunDirError, match="other settings"):
        finetune(_student(strongly_compressed), train, val, FinetuneSettings(epochs=4), teacher=original,
                 checkpoint=checkpoint, resume=True, progress=False)


def test_epoch_seeds_are_a_function_of_seed_and_epoch() -> None:
    seeds = {epoch_seed(seed, epoch) for seed in range(3) for epoch in range(3)}
    assert len(seeds) == 9 and epoch_seed(1, 2) == epoch_seed(1, 2) and all(0 <= s < 2**63 for s in seeds)


def test_distillation_at_alpha_zero_is_cross_entropy_and_matches_identical_logits() -> None:
    logits, labels = torch.randn(8, 10, generator=torch.Generator().manual_seed(0)), torch.arange(8)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert distillation_loss(logits, labels, torch.randn(8, 10), FinetuneSettings(alpha=0.0)) == pytest.approx(float(ce))
    assert distillation_loss(logits, labels, logits, FinetuneSettings(alpha=1.0)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("change", [{"epochs": 0}, {"lr": -1.0}, {"loss": "mse"}, {"alpha": 2.0}, {"batch_size": 0}])
def test_bad_settings_name_the_setting(change) -> None:
    with pytest.raises(SettingError) as info:
        FinetuneSettings(**change).validate()
    assert info.value.setting == next(iter(change))


def test_a_diverging_loss_stops_with_a_setting_error_naming_lr(strongly_compressed, digits) -> None:
    original, _ = strongly_compressed
    with pytest.raises(SettingError, match="lower lr") as info:
        finetune(_student(strongly_compressed), *digits, FinetuneSettings(lr=1e6), teacher=original, progress=False)
    assert info.value.setting == "lr"


def test_kd_needs_the_teacher(strongly_compressed, digits) -> None:
    with pytest.raises(SettingError, match="teacher"):
        finetune(_student(strongly_compressed), *digits, FinetuneSettings(), progress=False)


def test_training_splits_never_hold_the_validation_images(digits) -> None:
    train, val = digits
    split = load_training_set("digits", seed=0)
    assert torch.equal(split.inputs, train.inputs) and len(split) + len(val) == 1797
    with pytest.raises(DataError, match="train"):
        load_training_set("imagenet", None)


def test_imagenet_train_folder(tmp_path) -> None:
    from PIL import Image

    with pytest.raises(DataError, match=r"train does not exist"):
        load_imagenet_train(tmp_path)
    for wnid in ("n01440764", "n01443537"):
        (tmp_path / "train" / wnid).mkdir(parents=True)
        pixels = torch.randint(0, 256, (40, 50, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        Image.fromarray(pixels.numpy()).save(tmp_path / "train" / wnid / "a.JPEG")
    dataset = load_imagenet_train(tmp_path)
    x, y = dataset[1]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 1
