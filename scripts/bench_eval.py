"""Throughput of the subsampled-accuracy evaluator vs a bare inference loop.

For each case a compressed network (Linear layers by truncated SVD, 3x3 convolutions by
Tucker-2, built with :mod:`compressbo.compression.lowrank`) is evaluated two ways on the same
preprocessed tensors with the same batch size:

* evaluator: ``SubsampleEvaluator.error(module, m)`` (fresh random subsample, gather,
  forward, top-1 count, variance);
* bare: ``with torch.inference_mode(): for batch in chunks: module(batch)`` over the first
  ``m`` pooled tensors (already on the device; on a GPU synchronized at the end).

Passes alternate between the two (so load drift on a shared machine hits both) and the
fastest pass of each is reported (the least disturbed by other load). Goal: evaluator >= 90% of the bare loop's images/second.

Cases: FC3 on digits; ResNet-18 (random weights) on a tensor pool of 112x112 images; and
ResNet-18 on a folder of generated 224x224 JPEGs through :class:`~compressbo.compression.data.ImageFolderSet`
with a warm cache (the ImageNet path). On a GPU a ResNet-50 at 224 case is added.

Usage::

    python scripts/bench_eval.py [--device auto|cpu|cuda] [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from compressbo.compression.architectures import fc3
from compressbo.compression.data import ImageFolderSet, TensorSet, ValidationSet, load_digits_split
from compressbo.compression.evaluator import SubsampleEvaluator, resolve_device
from compressbo.compression.lowrank import factorize_conv, factorize_linear


def compress_network(network: nn.Module, keep: float) -> nn.Module:
    """Replace every Linear (SVD) and every 3x3 Conv2d (Tucker-2) by a factorization keeping ``keep`` of its ranks."""
    for name, child in list(network.named_children()):
        if isinstance(child, nn.Linear) and min(child.weight.shape) > 16:
            rank = max(1, int(keep * min(child.weight.shape)))
            setattr(network, name, factorize_linear(child, rank))
        elif isinstance(child, nn.Conv2d) and child.kernel_size == (3, 3) and child.groups == 1:
            ranks = (max(1, int(keep * child.out_channels)), max(1, int(keep * child.in_channels)))
            setattr(network, name, factorize_conv(child, ranks, "tucker2"))
        else:
            compress_network(child, keep)
    return network


@dataclass
class Case:
    name: str
    network: Callable[[], nn.Module]
    dataset: Callable[[Path], ValidationSet]
    m: int
    batch_size: int


def digits_pool(_: Path) -> TensorSet:
    train, val = load_digits_split()
    return TensorSet(torch.cat([train.inputs, val.inputs]), torch.cat([train.labels, val.labels]))


def random_pool(n: int, size: int) -> Callable[[Path], TensorSet]:
    def build(_: Path) -> TensorSet:
        generator = torch.Generator().manual_seed(0)
        return TensorSet(torch.randn(n, 3, size, size, generator=generator), torch.randint(1000, (n,), generator=generator))

    return build


def jpeg_folder(n: int) -> Callable[[Path], ImageFolderSet]:
    def build(tmp: Path) -> ImageFolderSet:
        from PIL import Image
        from torchvision.datasets import ImageFolder

        from compressbo.compression.data import imagenet_eval_transform

        rng = np.random.default_rng(0)
        for i in range(n):
            folder = tmp / "val" / f"n{i % 4:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, size=(256, 320, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.JPEG", quality=85)
        return ImageFolderSet(ImageFolder(str(tmp / "val")).samples, imagenet_eval_transform())

    return build


def resnet(name: str) -> Callable[[], nn.Module]:
    @functools.cache  # Tucker-2 of every 3x3 convolution takes a while on a CPU: build once
    def build() -> nn.Module:
        import torchvision

        torch.manual_seed(0)
        return compress_network(getattr(torchvision.models, name)(weights=None), keep=0.5)

    return build


def compressed_fc3() -> nn.Module:
    torch.manual_seed(0)
    return compress_network(fc3(), keep=0.1)


def cases(device: torch.device, quick: bool) -> list[Case]:
    gpu = device.type == "cuda"
    scale = 1 if not quick else 4
    found = [
        Case("fc3 / digits (28x28)", compressed_fc3, digits_pool, 1024, 1024 if gpu else 512),
        Case("resnet18 / pool 112x112", resnet("resnet18"), random_pool(2048 if gpu else 256 // scale, 112), 1024 if gpu else 128 // scale, 256 if gpu else 64),
        Case("resnet18 / JPEG cache 224", resnet("resnet18"), jpeg_folder(1024 if gpu else 96 // scale), 512 if gpu else 64 // scale, 256 if gpu else 32),
    ]
    if gpu:
        found.append(Case("resnet50 / pool 224x224", resnet("resnet50"), random_pool(2048, 224), 1024, 256))
    return found


def bare_loop(module: nn.Module, inputs: Tensor, batch_size: int, device: torch.device, amp: bool = False) -> None:
    with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
        for start in range(0, inputs.shape[0], batch_size):
            module(inputs[start : start + batch_size])
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(case: Case, device: torch.device, repeats: int, amp: bool, tmp: Path) -> tuple[float, float]:
    dataset = case.dataset(tmp)
    module = case.network().to(device).eval()
    evaluator = SubsampleEvaluator(dataset, device=device, batch_size=case.batch_size, amp=amp)
    evaluator.full_error(module)  # warm-up; fills the image cache
    bare_inputs, _ = dataset.get(torch.arange(case.m))
    bare_inputs = bare_inputs.to(device)
    bare_loop(module, bare_inputs, case.batch_size, device, amp)

    def timed(fn: Callable[[], object]) -> float:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    ours, bare = [], []
    for _ in range(repeats):
        ours.append(timed(lambda: evaluator.error(module, case.m)))
        bare.append(timed(lambda: bare_loop(module, bare_inputs, case.batch_size, device, amp)))
    return case.m / min(ours), case.m / min(bare)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="evaluator throughput vs a bare inference loop")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=7, help="timed passes per loop (the fastest is reported)")
    parser.add_argument("--amp", action="store_true", help="run both loops under torch.autocast")
    parser.add_argument("--quick", action="store_true", help="smaller CPU cases")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {label}; torch {torch.__version__}; best of {args.repeats} alternating passes")
    print(f"{'case':<28}{'m':>6}{'batch':>7}{'evaluator img/s':>17}{'bare img/s':>12}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases(device, args.quick):
            ours, bare = run_case(case, device, args.repeats, args.amp, Path(tmp))
            print(f"{case.name:<28}{case.m:>6}{case.batch_size:>7}{ours:>17.1f}{bare:>12.1f}{ours / bare:>8.2f}")


if __name__ == "__main__":
    main()
