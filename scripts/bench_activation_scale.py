"""What ``--warp activation`` costs on a convolutional network: one pass of calibration inputs.

For VGG-16 or ResNet-50 (torchvision architectures, random weights, the shipped spec's layers
and method), :func:`compressbo.compression.energy.activation_knots` runs on ``--images`` and on
``2 * --images`` synthetic 224 x 224 inputs; the difference gives the cost per input (the
forward pass with the layers' patch moments recorded), the rest is the fixed cost of turning
the moments into every layer's fractions. A plain forward pass of the same inputs is timed
beside it, and the script prints both per input and their ratio.

Usage::

    python scripts/bench_activation_scale.py [--model vgg16] [--images 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from compressbo.compression.build import build_network
from compressbo.compression.compressor import Compressor
from compressbo.compression.energy import activation_knots
from compressbo.compression.spec import load_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16", choices=["vgg16", "resnet50"])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_spec(args.model)
    torch.manual_seed(0)
    network = build_network(spec, weights="random").eval()
    compressor = Compressor(network, spec, cache_dir=False, threads=args.threads)
    inputs = torch.randn(2 * args.images, 3, 224, 224)
    seconds = {}
    for n in (args.images, 2 * args.images):
        start = time.perf_counter()
        activation_knots(compressor, inputs[:n].split(4))
        seconds[n] = time.perf_counter() - start
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in inputs[: args.images].split(4):
            network(batch)
    forward = (time.perf_counter() - start) / args.images
    per_input = (seconds[2 * args.images] - seconds[args.images]) / args.images
    fixed = seconds[args.images] - per_input * args.images
    print(f"{args.model}, {len(compressor.factors)} layers by {compressor.factors[0].method}, {args.threads} thread(s)")
    print(f"activation scale: {per_input:.3f} s per input + {fixed:.1f} s for the fractions")
    print(f"forward pass alone: {forward:.3f} s per input; the scale's pass costs {per_input / forward:.2f}x a forward pass")


if __name__ == "__main__":
    main()
