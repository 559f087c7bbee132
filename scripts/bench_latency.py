"""Measured forward latency of compressed networks against their FLOPs ratios.

FC3 (SVD), VGG-16 and ResNet-50 (Tucker-2) with random weights, every spec layer compressed
at the same ``theta`` (fraction of its parameters kept), timed with
``compressbo.compression.latency`` (median of repeated passes after warm-up,
``torch.inference_mode``). Prints, per network and batch size, both latencies, the measured
speedup, the speedup the FLOPs ratio would predict, and their quotient (1.0: latency fell
in proportion to FLOPs). With ``--layers``, the same per compressed layer, each at its own
input shape, to show where the time goes.

Random weights give the same shapes, ranks and FLOPs as trained ones, and the speed of a
forward pass does not depend on the values.

Usage::

    python scripts/bench_latency.py                      # fc3 vgg16 resnet50, theta 0.25, 1 thread
    python scripts/bench_latency.py --models resnet50 --batch-sizes 1 8 --layers
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from torch import nn

from compressbo.compression import Compressor, build_network, load_spec
from compressbo.compression.latency import compare_latency

METHODS = {"fc3": "svd", "vgg16": "tucker2", "resnet50": "tucker2"}


def _layer_inputs(network: nn.Module, names: list[str], input_size: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """The input shape (without batch) of each named layer for one ``input_size`` input."""
    modules = dict(network.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            shapes.setdefault(name, tuple(inputs[0].shape[1:]))  # returns None: a forward hook's return replaces the output

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    with torch.inference_mode():
        network(torch.zeros(1, *input_size))
    for handle in handles:
        handle.remove()
    return shapes


def bench(model: str, theta: float, batch_sizes: list[int], seconds: float, layers: bool) -> None:
    spec = load_spec(model)
    started = time.perf_counter()
    network = build_network(spec, "random")
    compressor = Compressor(network, spec, method=METHODS[model], cache_dir=False)
    compressed = compressor.compress([theta] * compressor.dim)
    print(f"\n## {model}: {METHODS[model]} at theta {theta} on every one of its {compressor.dim} spec layers "
          f"(factors in {time.perf_counter() - started:.1f} s)")
    print(f"parameter ratio (compressed layers) {compressed.ratio:.4f}, whole model {compressed.model_ratio:.4f}, "
          f"FLOPs ratio {compressed.flops_ratio:.4f}")
    latency = compare_latency(network, compressed.module, spec.input_size, batch_sizes=batch_sizes,
                              seconds=seconds, max_pass_seconds=600.0)
    print("| batch | original (ms) | compressed (ms) | measured speedup | FLOPs speedup (1 / FLOPs ratio) | measured / FLOPs | repeats |")
    print("|---|---|---|---|---|---|---|")
    predicted = 1 / compressed.flops_ratio
    for row in latency["batches"]:
        print(f"| {row['batch_size']} | {row['original']['median_ms']:.2f} | {row['compressed']['median_ms']:.2f} | "
              f"{row['speedup']:.2f}x | {predicted:.2f}x | {row['speedup'] / predicted:.2f} | "
              f"{row['original']['repeats']}/{row['compressed']['repeats']} |")
    if not layers:
        return
    shapes = _layer_inputs(network, compressor.layer_names, spec.input_size)
    original_modules, new_modules = dict(network.named_modules()), dict(compressed.module.named_modules())
    print(f"\n{model}, per layer at batch 1 (each at its own input shape):")
    print("| layer | input | ranks | original (ms) | factorized (ms) | measured speedup | MACs speedup |")
    print("|---|---|---|---|---|---|---|")
    for record in compressed.layers:
        shape = shapes[record.name]
        row = compare_latency(original_modules[record.name], new_modules[record.name], shape, seconds=seconds / 4)["batches"][0]
        print(f"| {record.name} | {'x'.join(map(str, shape))} | {record.ranks} | {row['original']['median_ms']:.3f} | "
              f"{row['compressed']['median_ms']:.3f} | {row['speedup']:.2f}x | {record.macs_before / record.macs_after:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--theta", type=float, default=0.25, help="fraction of each layer's parameters kept (0.25)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time budget of the timed passes of one network at one batch size (2)")
    parser.add_argument("--layers", action="store_true", help="also time every compressed layer on its own")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} thread(s), load average {load:.2f}")
    for model in args.models:
        bench(model, args.theta, args.batch_sizes, args.seconds, args.layers)


if __name__ == "__main__":
    main()
