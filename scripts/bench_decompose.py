"""Benchmark: re-decomposing per evaluation vs building from cached factors.

For VGG-16 and ResNet-50 (random weights, real shapes) and the same random ``theta``s:

(a) the usual approach: every evaluation runs tensorly's ``partial_tucker`` (HOOI, SVD init,
    tensorly defaults) on every compressible layer at that evaluation's ranks, then builds
    the Tucker-2 modules and the network;
(b) compressbo: ``Compressor.compress(theta)``, truncating factors computed once.

Prints per-evaluation times, the ratio (a)/(b) (goal >= 100x), whether (b) builds VGG-16 in
under 0.1 s, the one-time decomposition and disk-cache load times, and the kernels' mean
relative reconstruction errors under (a) and (b).

    python scripts/bench_decompose.py [--repeats 3] [--networks vgg16 resnet50] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import tensorly as tl
import torch
from tensorly.decomposition import partial_tucker
from tensorly.tenalg import multi_mode_dot

from compressbo.compression.lowrank import TuckerFactors, build_factorized
from compressbo.compression.compressor import Compressor, replace_layers
from compressbo.compression.build import build_network
from compressbo.compression.spec import load_spec


def redecompose(compressor: Compressor, theta: torch.Tensor) -> tuple[torch.nn.Module, float]:
    """(a): HOOI of every layer at this theta's ranks, then the compressed network."""
    replacements, errors = {}, []
    for name, factors, ranks in zip(compressor.layer_names, compressor.factors, compressor.ranks(theta)):
        kernel = factors.layer.weight.detach()
        with tl.backend_context("pytorch"):
            (core, (out_factor, in_factor)), _ = partial_tucker(kernel, rank=list(ranks), modes=[0, 1], init="svd")
            approximation = multi_mode_dot(core, [out_factor, in_factor], modes=[0, 1])
        errors.append(float(torch.linalg.vector_norm(kernel - approximation) / torch.linalg.vector_norm(kernel)))
        hooi = TuckerFactors(core, out_factor, in_factor)
        replacements[name] = build_factorized(factors.layer, "tucker2", hooi, ranks)
    return replace_layers(compressor.network, replacements).eval(), statistics.fmean(errors)


def cached_error(compressor: Compressor, theta: torch.Tensor) -> float:
    """Mean relative kernel error of (b)'s truncated HOSVD at this theta."""
    errors = []
    for factors, ranks in zip(compressor.factors, compressor.ranks(theta)):
        kernel = factors.layer.weight.detach()
        approximation = factors.factors.reconstruct(ranks)
        errors.append(float(torch.linalg.vector_norm(kernel - approximation) / torch.linalg.vector_norm(kernel)))
    return statistics.fmean(errors)


def bench(name: str, repeats: int, seed: int) -> None:
    torch.manual_seed(seed)
    spec = load_spec(name)
    network = build_network(spec, weights="random")
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        compressor = Compressor(network, spec, cache_dir=cache_dir)
        decompose_s = time.perf_counter() - start
        start = time.perf_counter()
        Compressor(network, spec, cache_dir=cache_dir)
        load_s = time.perf_counter() - start
    generator = torch.Generator().manual_seed(seed)
    lo, hi = compressor.bounds
    uniform = [torch.rand(compressor.dim, generator=generator, dtype=torch.float64) for _ in range(repeats)]
    thetas = [lo + (hi - lo) * u for u in uniform]
    compressor.compress(thetas[0])  # warm-up (allocator, lazy imports)

    times_a, times_b, errors_a, errors_b = [], [], [], []
    for theta in thetas:
        start = time.perf_counter()
        _, error = redecompose(compressor, theta)
        times_a.append(time.perf_counter() - start)
        errors_a.append(error)
        start = time.perf_counter()
        compressed = compressor.compress(theta)
        times_b.append(time.perf_counter() - start)
        errors_b.append(cached_error(compressor, theta))
        print(
            f"  {name}: ratio {compressed.ratio:.3f}  (a) partial_tucker {times_a[-1]:8.3f} s"
            f"  (b) cached {times_b[-1] * 1e3:7.1f} ms",
            flush=True,
        )
    a, b = statistics.fmean(times_a), statistics.fmean(times_b)
    print(
        f"{name}: {compressor.dim} layers, {repeats} thetas | one-time decomposition {decompose_s:.2f} s, "
        f"load from disk cache {load_s:.2f} s\n"
        f"{name}: (a) re-decompose per evaluation {a:.3f} s | (b) build from cache {b * 1e3:.1f} ms "
        f"(median {statistics.median(times_b) * 1e3:.1f} ms) | (a)/(b) = {a / b:.0f}x (goal >= 100x)"
        + (f" | (b) < 0.1 s: {'yes' if b < 0.1 else 'NO'}" if name == "vgg16" else "")
        + f"\n{name}: mean relative kernel error (a) HOOI {statistics.fmean(errors_a):.4f}, "
        f"(b) cached HOSVD {statistics.fmean(errors_b):.4f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="+", default=["vgg16", "resnet50"])
    parser.add_argument("--repeats", type=int, default=3, help="random thetas per network")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    # HOOI asks for more vectors than a projected unfolding has when R_out > R_in * kh * kw; tensorly pads.
    warnings.filterwarnings("ignore", message="Trying to compute SVD with n_eigenvecs")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, tensorly {tl.__version__}, {torch.get_num_threads()} threads", flush=True)
    for name in args.networks:
        bench(name, args.repeats, args.seed)


if __name__ == "__main__":
    main()
