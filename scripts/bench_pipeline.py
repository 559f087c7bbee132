"""Images per second of an ImageNet-folder evaluation, cold and warm cache, against the bare forward loop.

A synthetic ImageNet-layout folder (2 classes, JPEGs of varied sizes around ImageNet's typical
500 x 375) and a torchvision architecture (random weights, 2 classes) at 224 x 224:
MobileNet-V3-small by default, whose forward pass costs about as much as decoding an image on
a CPU core (so the pipeline shows), or ResNet-18 (``--model resnet18``, 30x the compute).
Each evaluation is ``SubsampleEvaluator.error(module, m)`` with ``m`` = every image, so a pass
reads the whole pool:

* ``bare forward``: ``module(batch)`` over the pre-made float32 inputs (already on the device);
  ``bare forward, batch copied``: the same, each batch first copied into a fresh tensor (timed
  too), as the evaluator's batches are fresh tensors; on this shared CPU the two bare loops
  differ by -25% to +20% from run to run (cache and load effects), so read ratios near 1 as 1;
* ``float32 cache``: the weights' transform applied whole, float32 tensors cached, no prefetch
  (the pipeline before the uint8 split);
* ``uint8 cache``: the split transform (uint8 crops cached, normalization per batch on the
  device), the next batch decoded while the current one runs forward (``data_workers`` threads);
  ``no prefetch``: the same, each batch decoded when it is asked for.

``cold``: a fresh pool, every image decoded during the pass; ``warm``: the same pool again,
nothing decoded. Passes alternate between the rows (load drift on a shared machine hits all)
and the fastest pass of each row is reported. Goal: warm uint8 cache >= 90% of the bare loop.

Usage::

    OMP_NUM_THREADS=1 python scripts/bench_pipeline.py [--images 192] [--repeats 3] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compressbo.compression.data import ImageFolderSet, imagenet_eval_transform, list_image_folder
from compressbo.compression.evaluator import SubsampleEvaluator, resolve_device
from compressbo.compression.images import default_data_workers


def jpeg_folder(root: Path, n: int) -> Path:
    """``root/val/<wnid>/*.JPEG``: ``n`` random-texture JPEGs, 2 classes, sizes 333..640 x 250..500."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / "val" / ("n01440764", "n01443537")[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        height, width = int(rng.integers(250, 501)), int(rng.integers(333, 641))
        # smooth noise (upsampled), so the JPEGs compress like photographs rather than static
        small = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
        image.save(folder / f"ILSVRC2012_val_{i:08d}.JPEG", quality=90)
    return root / "val"


def pool(folder: Path, whole: bool, workers: int, prefetch: int = 1) -> ImageFolderSet:
    """A fresh (cold) pool: the transform split into uint8 crops, or applied whole (float32, no prefetch)."""
    from torchvision import transforms

    _, samples = list_image_folder(folder)
    transform = imagenet_eval_transform()
    if whole:  # a Compose has no splitter: the float32 path
        return ImageFolderSet([(p, y) for p, y, _ in samples], transforms.Compose([transform]), workers=workers, prefetch=0)
    return ImageFolderSet([(p, y) for p, y, _ in samples], transform, workers=workers, prefetch=prefetch)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    import torchvision

    parser = argparse.ArgumentParser(description="image pipeline throughput: cold and warm cache vs the bare forward loop")
    parser.add_argument("--images", type=int, default=192, help="images in the synthetic folder")
    parser.add_argument("--repeats", type=int, default=3, help="alternating passes per row (the fastest is reported)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data-workers", type=int, default=None, help="decode threads (default: as compressbo chooses)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="mobilenet_v3_small", help="torchvision architecture (mobilenet_v3_small, resnet18, ...)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    workers = args.data_workers or default_data_workers()
    torch.manual_seed(0)
    module = torchvision.models.get_model(args.model, weights=None, num_classes=2).to(device).eval()
    n, batch = args.images, args.batch_size
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} torch threads)"
    print(f"device: {label}; torch {torch.__version__}; {args.model} (random weights) at 224x224; {n} JPEGs; "
          f"batch {batch}; {workers} decode thread(s); best of {args.repeats} alternating passes")
    with tempfile.TemporaryDirectory() as tmp:
        folder = jpeg_folder(Path(tmp), n)
        reference = pool(folder, whole=False, workers=workers)
        inputs = reference.get(torch.arange(n))[0].to(device)
        crop_bytes = reference.pool_nbytes() // n

        def bare() -> None:
            with torch.inference_mode():
                for start in range(0, n, batch):
                    module(inputs[start : start + batch])
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        def bare_copied() -> None:
            with torch.inference_mode():
                for start in range(0, n, batch):
                    module(inputs[start : start + batch].clone())
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        bare()  # warm-up
        seconds: dict[str, list[float]] = {}
        warm_pools: dict[str, SubsampleEvaluator] = {}
        for _ in range(args.repeats):
            seconds.setdefault("bare forward", []).append(timed(bare))
            seconds.setdefault("bare forward, batch copied", []).append(timed(bare_copied))
            cold = SubsampleEvaluator(pool(folder, False, workers, prefetch=0), device=device, batch_size=batch)
            seconds.setdefault("uint8 cache, cold, no prefetch", []).append(timed(lambda: cold.error(module, n)))
            for name, whole in (("float32 cache", True), ("uint8 cache", False)):
                evaluator = SubsampleEvaluator(pool(folder, whole, workers), device=device, batch_size=batch)
                seconds.setdefault(f"{name}, cold", []).append(timed(lambda: evaluator.error(module, n)))
                seconds.setdefault(f"{name}, warm", []).append(timed(lambda: evaluator.error(module, n)))
                warm_pools[name] = evaluator
    rates = {row: n / min(times) for row, times in seconds.items()}
    per_image = {"bare forward": None, "float32 cache": 4 * crop_bytes, "uint8 cache": crop_bytes}
    print(f"{'pipeline':<32}{'img/s':>9}{'vs bare':>9}{'cache/img':>11}")
    for row, rate in rates.items():
        size = per_image[row.split(",")[0]]
        print(f"{row:<32}{rate:>9.1f}{rate / rates['bare forward']:>9.2f}{'' if size is None else f'{size / 1e3:.0f} KB':>11}")
    cached = {name: evaluator.dataset.cached_bytes // n for name, evaluator in warm_pools.items()}
    print(f"cache bytes per image measured: float32 {cached['float32 cache']:,}, uint8 {cached['uint8 cache']:,}; "
          f"the 8 GiB default holds {8 * 2**30 // cached['float32 cache']:,} vs {8 * 2**30 // cached['uint8 cache']:,} images")
    print(f"goal: warm uint8 cache >= 0.90 of bare forward: {rates['uint8 cache, warm'] / rates['bare forward']:.2f}")


if __name__ == "__main__":
    main()
