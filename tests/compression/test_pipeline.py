"""The image pipeline: uint8 crops cached, normalized per batch, decoded ahead by a pool of threads."""

import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.models import EfficientNet_B0_Weights, ResNet50_Weights
from torchvision.transforms import v2

from compressbo.compression.config import ProblemConfig, RuntimeConfig
from compressbo.compression.data import BULK_DECODE, ImageFolderSet, imagenet_eval_transform, load_imagenet_val, load_validation
from compressbo.compression.evaluator import SubsampleEvaluator
from compressbo.compression.images import default_data_workers, split_transform
from compressbo.exceptions import SettingError

SIZES = [(300, 400), (520, 260), (256, 256), (231, 377), (640, 480), (250, 900)]


def write_varied_folder(root, per_class=3, classes=("n01440764", "n01443537")):
    """``root/val/<wnid>/``: images of varied sizes, as JPEG, PNG, grayscale JPEG and CMYK JPEG in turn."""
    rng = np.random.default_rng(0)
    k = 0
    for wnid in classes:
        folder = root / "val" / wnid
        folder.mkdir(parents=True)
        for i in range(per_class):
            height, width = SIZES[k % len(SIZES)]
            image = Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))
            kind = k % 4
            if kind == 0:
                image.save(folder / f"{i}.JPEG", quality=90)
            elif kind == 1:
                image.save(folder / f"{i}.png")
            elif kind == 2:
                image.convert("L").save(folder / f"{i}.JPEG")
            else:
                image.convert("CMYK").save(folder / f"{i}.JPEG")
            k += 1
    return root


def reference(data: ImageFolderSet, transform) -> torch.Tensor:
    """Today's float32 path: the whole transform on each PIL image."""
    return torch.stack([transform(Image.open(path).convert("RGB")) for path in data.paths])


@pytest.mark.parametrize(
    "weights",
    [None, ResNet50_Weights.IMAGENET1K_V2, EfficientNet_B0_Weights.IMAGENET1K_V1],
    ids=["vgg16-v1", "resnet50-v2-resize232", "efficientnet-bicubic"],
)
def test_uint8_cache_equals_the_float32_transform_within_rounding(tmp_path, weights):
    write_varied_folder(tmp_path)
    transform = imagenet_eval_transform() if weights is None else weights.transforms()
    data = load_imagenet_val(tmp_path, transform=transform)
    assert data.stages.split
    stored, _ = data.gather(torch.arange(len(data)))
    crop = transform.crop_size[0]
    assert stored.dtype == torch.uint8 and stored.shape == (6, 3, crop, crop)
    inputs, labels = data.get(torch.arange(len(data)))
    expected = reference(data, transform)
    assert inputs.dtype == torch.float32 and inputs.shape == expected.shape
    torch.testing.assert_close(inputs, expected, rtol=0, atol=1e-6)  # float32 rounding (bit-equal on the CPU)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_cache_accounting_counts_uint8_crops(tmp_path):
    write_varied_folder(tmp_path)
    one_crop = 3 * 224 * 224  # bytes of a uint8 crop; float32 would be 4x
    data = load_imagenet_val(tmp_path, cache_bytes=4 * one_crop)
    data.get(torch.arange(6))
    assert data.cached_bytes == 4 * one_crop and data.decodes == 6
    data.get(torch.arange(6))
    assert data.decodes == 6 + 2  # four fit in the bound of four crops, two decoded again
    assert data.pool_nbytes() == 6 * one_crop


def test_a_transform_that_cannot_be_split_keeps_the_float32_path(tmp_path):
    write_varied_folder(tmp_path)
    custom = v2.Compose([v2.PILToTensor(), v2.Resize(20, antialias=True), v2.CenterCrop(16), v2.ToDtype(torch.float32, scale=True)])
    data = load_imagenet_val(tmp_path, transform=custom)
    assert not data.stages.split
    stored, _ = data.gather(torch.arange(6))
    assert stored.dtype == torch.float32 and data.cached_bytes == 6 * 3 * 16 * 16 * 4
    assert torch.equal(data.get(torch.arange(6))[0], reference(data, custom))


def test_prefetched_batches_equal_batches_decoded_on_demand(tmp_path):
    write_varied_folder(tmp_path, per_class=5)
    chunks = list(torch.tensor([7, 0, 3, 9, 1, 2, 8, 5, 4, 6]).split(3))
    expected = [load_imagenet_val(tmp_path, workers=1, check=False).gather(chunk) for chunk in chunks]
    for workers, prefetch in [(1, 0), (1, 1), (3, 1), (3, 3)]:
        data = load_imagenet_val(tmp_path, workers=workers, check=False)
        got = list(data.batches(chunks, prefetch=prefetch))
        assert len(got) == len(chunks)
        for (x, y), (ex, ey) in zip(got, expected):
            assert torch.equal(x, ex) and torch.equal(y, ey)
        assert data.decodes == 10  # each image decoded once, prefetched or not
        assert list(data.batches(chunks, prefetch=prefetch))[1][0].equal(expected[1][0])
        assert data.decodes == 10  # a warm pass decodes nothing


def test_the_next_batch_decodes_while_the_current_one_is_used(tmp_path):
    write_varied_folder(tmp_path, per_class=5)
    chunks = list(torch.arange(10).split(3))
    on_demand = load_imagenet_val(tmp_path, workers=2, check=False)
    next(on_demand.batches(chunks, prefetch=0))
    assert on_demand.decodes == 3  # nothing beyond the batch handed out
    ahead = load_imagenet_val(tmp_path, workers=2, check=False)
    batches = ahead.batches(chunks, prefetch=1)
    next(batches)  # batch 0 handed out, batch 1 submitted: it decodes while batch 0 is used
    deadline = time.monotonic() + 30
    while ahead.decodes < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ahead.decodes == 6
    assert len(list(batches)) == 3 and ahead.decodes == 10


def test_evaluations_do_not_depend_on_the_number_of_decode_threads(tmp_path):
    write_varied_folder(tmp_path, per_class=5)
    torch.manual_seed(0)
    net = nn.Sequential(nn.AvgPool2d(8), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    results = []
    for workers in (1, 4):
        data = load_imagenet_val(tmp_path, workers=workers, check=False)
        evaluator = SubsampleEvaluator(data, device="cpu", batch_size=3, seed=5)
        errors = [evaluator.error(net, 7).wrong for _ in range(4)]
        logits = evaluator.logits(net, torch.arange(10))
        results.append((errors, logits))
    assert results[0][0] == results[1][0]
    assert torch.equal(results[0][1], results[1][1])
    with torch.inference_mode():  # and the evaluator's logits are the float32 path's
        expected = net(reference(data, imagenet_eval_transform()))
    torch.testing.assert_close(results[0][1], expected, rtol=0, atol=1e-6)


def test_data_workers_reach_the_decode_pool(tmp_path):
    write_varied_folder(tmp_path)
    data = load_validation("imagenet", tmp_path, workers=3)
    assert data.workers == 3
    data.get(torch.arange(6))
    assert data._pool._max_workers == 3
    assert load_imagenet_val(tmp_path, check=False).workers == default_data_workers()
    assert 1 <= default_data_workers() <= min(8, torch.get_num_threads())


def test_the_setup_passes_data_workers_and_data_on_device_from_the_runtime_config(tmp_path):
    from compressbo.compression.setup import CompressionSetup
    from tests.app.tiny_imagenet import write_folder, write_spec

    spec = write_spec(tmp_path / "tiny.toml")
    write_folder(tmp_path / "imagenet")
    problem = ProblemConfig(model=str(spec), weights="random", data_dir=str(tmp_path / "imagenet"), samples=6)
    setup = CompressionSetup.load(problem, RuntimeConfig(device="cpu", batch_size=4, data_workers=2, data_on_device="no"))
    assert setup.evaluator.dataset.workers == 2 and setup.evaluator.data_on_device is False
    assert setup.evaluator.dataset.stages.split  # the default ImageNet transform: uint8 crops
    setup.evaluator.error(setup.network, 6)
    assert setup.evaluator.dataset.cached_bytes == 6 * 3 * 224 * 224


@pytest.mark.parametrize("workers", [0, -2, 1.5, True])
def test_bad_data_workers_are_a_setting_error(tmp_path, workers):
    with pytest.raises(SettingError, match="data_workers must be an integer >= 1") as info:
        RuntimeConfig(data_workers=workers).validate()
    assert info.value.setting == "data_workers" and "\n" not in str(info.value)
    write_varied_folder(tmp_path)
    with pytest.raises(SettingError, match="data_workers"):
        load_imagenet_val(tmp_path, workers=workers)


def test_bad_data_on_device_is_a_setting_error():
    with pytest.raises(SettingError, match="data_on_device must be one of auto, yes, no"):
        RuntimeConfig(data_on_device="maybe").validate()
    assert [RuntimeConfig(data_on_device=v).pool_on_device for v in ("auto", "yes", "no")] == [None, True, False]


def test_the_pool_can_be_held_as_one_tensor_and_gives_the_same_batches(tmp_path):
    write_varied_folder(tmp_path, per_class=5)
    data = load_imagenet_val(tmp_path, check=False)
    indices = torch.tensor([9, 2, 4])
    before, _ = data.get(indices)
    data.load_onto("cpu", batch_size=4)
    assert data.decodes == 10 and data._cache == {} and data.cached_bytes == 10 * 3 * 224 * 224
    after, labels = data.get(indices)
    assert torch.equal(before, after) and labels.tolist() == [1, 0, 0]
    assert data.decodes == 10  # selected from the pool, nothing decoded


def test_a_bulk_first_pass_shows_a_progress_bar_and_a_warm_pass_none(tmp_path, monkeypatch):
    write_varied_folder(tmp_path, per_class=1)
    paths = [(str(p), 0) for p in sorted((tmp_path / "val").glob("*/*"))] * (BULK_DECODE // 2)  # >= BULK_DECODE entries
    data = ImageFolderSet(paths, imagenet_eval_transform(), progress=True)

    class Terminal:  # tqdm draws only on a terminal; this one is the test's stderr
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, text):
            self.text += text

        def flush(self):
            pass

    import compressbo.progress as progress

    terminal = Terminal()
    tqdm = progress.tqdm
    monkeypatch.setattr(progress, "tqdm", lambda *args, **options: tqdm(*args, file=terminal, **options))
    list(data.batches(list(torch.arange(len(data)).split(64))))
    first = terminal.text
    terminal.text = ""
    list(data.batches(list(torch.arange(len(data)).split(64))))
    assert f"decoding {len(data):,} images" in first
    assert terminal.text == ""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("data_on_device", [None, True, False])
def test_gpu_pool_on_the_device_gives_the_cpu_results(tmp_path, data_on_device):
    write_varied_folder(tmp_path, per_class=5)
    torch.manual_seed(0)
    net = nn.Sequential(nn.AvgPool2d(8), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    cpu = SubsampleEvaluator(load_imagenet_val(tmp_path, check=False), device="cpu", batch_size=3, seed=1)
    expected = cpu.logits(net, torch.arange(10))
    data = load_imagenet_val(tmp_path, check=False)
    gpu = SubsampleEvaluator(data, device="cuda", batch_size=3, seed=1, data_on_device=data_on_device)
    logits = gpu.logits(net, torch.arange(10))
    assert data.device.type == ("cpu" if data_on_device is False else "cuda")
    torch.testing.assert_close(logits.cpu(), expected, rtol=1e-4, atol=1e-4)
    assert data.decodes == 10
