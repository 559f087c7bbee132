"""Evaluation throughput per batch size on this CPU, against the default batch size compressbo picks.

For ResNet-50 and VGG-16 (torchvision architectures, random weights) on synthetic inputs, a
``torch.inference_mode()`` forward loop runs at each batch size over the same number of
images (at least one batch), and the script prints images/second, the estimated activation
memory of one batch (:func:`compressbo.compression.batching.estimated_activation_bytes`),
and the ratio to the best batch size. The last lines give the batch size
:func:`~compressbo.compression.batching.default_batch_size` chooses for the same input and
its throughput relative to the best. Inputs are small (``--size``, default 112) to keep the
whole run to a few minutes on one thread; activations scale with the pixel count, so a batch
of ``b`` images at 112 x 112 holds what a batch of ``b / 4`` holds at 224 x 224.

Usage::

    python scripts/bench_batch.py [--size 112] [--images 128] [--threads 1] [--batches 1 4 8 16 32 64 128]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

from compressbo.compression.batching import default_batch_size, estimated_activation_bytes


def throughput(module: torch.nn.Module, batch: int, size: int, images: int, repeats: int) -> float:
    """Best images/second over ``repeats`` passes of ``max(images, batch)`` images in batches of ``batch``."""
    x = torch.randn(batch, 3, size, size)
    passes = max(1, images // batch)
    best = 0.0
    with torch.inference_mode():
        module(x[:1])  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(passes):
                module(x)
            best = max(best, passes * batch / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=112, help="input height and width (112)")
    parser.add_argument("--images", type=int, default=128, help="images per measurement (128)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--repeats", type=int, default=2, help="passes per batch size, best kept (2)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64, 128])
    parser.add_argument("--networks", nargs="+", default=["resnet50", "vgg16"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads {torch.get_num_threads()}, input 3x{args.size}x{args.size}, {args.images} images per measurement")
    for name in args.networks:
        module = torchvision.models.get_model(name, weights=None).eval()
        per_example = estimated_activation_bytes(module, (3, args.size, args.size), torch.float32)
        rates = {}
        print(f"\n{name}: {per_example / 2**20:.2f} MiB of activations per image (estimated)")
        print("| batch | images/s | batch activations (MiB) | vs best |")
        print("|---|---|---|---|")
        for batch in args.batches:
            rates[batch] = throughput(module, batch, args.size, args.images, args.repeats)
        best = max(rates.values())
        for batch, rate in rates.items():
            print(f"| {batch} | {rate:.2f} | {batch * per_example / 2**20:,.0f} | {rate / best:.2f} |")
        choice = default_batch_size(module, (3, args.size, args.size), torch.device("cpu"))
        chosen = rates.get(choice.batch_size) or throughput(module, choice.batch_size, args.size, args.images, args.repeats)
        print(f"default: {choice.describe(torch.device('cpu'))}; {chosen:.2f} images/s = {chosen / best:.2f} of the best")


if __name__ == "__main__":
    main()
