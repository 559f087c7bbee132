"""Evaluations per second of ``compress`` in process, on a process pool and on local Ray actors.

A problem where evaluation dominates: ResNet-50 (torchvision architecture, random weights,
2 classes) on a generated folder of JPEGs in the ImageNet layout, every evaluation on ``m``
images. Each mode runs the same search (same seed, same budget) through
:class:`~compressbo.app.job.CompressionJob`, as ``compressbo compress`` does:

* ``in process``: today's sequential evaluation (the driver evaluates, on every core);
* ``pool xN``: ``--workers N`` worker processes (cores split between them);
* ``ray xN``: ``--ray --workers N`` actors on a local Ray (``ray.init(num_cpus=cores)``).

Reported per mode: the wall time of the search (workers' start-up included), the steady rate
in evaluations per second (from the records' start and end times: evaluations finished over the
span from the first start to the last end; in process: evaluations over the search's time
without start-up), the mean evaluation time, the driver's overhead per evaluation (ask, i.e.
GP fit + acquisition maximization with the pending points, + tell + record) and the speedup
against one worker of the same kind. The factor cache is warmed first, so no mode decomposes.

Usage::

    python scripts/bench_parallel.py [--workers 2] [--samples 16] [--evaluations 12] [--skip-ray]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from compressbo.app.config import CompressConfig
from compressbo.app.job import CompressionJob
from compressbo.app.parallel import Parallel
from compressbo.app.rundir import RunDirectory
from compressbo.compression.spec import load_spec


def jpeg_folder(root: Path, per_class: int) -> Path:
    """``root/val/<wnid>/*.JPEG``: two classes of random 64x48 images (resized by the weights' transforms)."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for wnid in ("n01440764", "n01443537"):
        (root / "val" / wnid).mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (48, 64, 3), generator=generator, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(root / "val" / wnid / f"ILSVRC2012_val_{i:08d}.JPEG")
    return root


def two_class_spec(root: Path, model: str) -> str:
    """The shipped spec ``model`` with a 2-class head (an ImageNet spec expects 1,000 class folders)."""
    path = root / f"{model}-2.toml"
    path.write_text(load_spec(model).path.read_text() + "\nbuilder_kwargs = { num_classes = 2 }\n")
    return str(path)


def run_mode(config: CompressConfig, out: Path, parallel: Parallel | None) -> dict[str, Any]:
    """One search; its wall time and the records' timing figures."""
    run = RunDirectory.create(out, {"settings": config.to_dict()})
    try:
        job = CompressionJob(config, run, progress=False, parallel=parallel)
        started = time.perf_counter()
        job.search()
        wall = time.perf_counter() - started
    finally:
        run.close()
    records = job.history
    asks = [r.get("seconds_bo") or 0.0 for r in records]
    if parallel is None:
        evaluation = [(wall - sum(asks)) / len(records)]  # the driver asks, then evaluates, in turn
        span = wall
    else:
        evaluation = [r["finished"] - r["started"] for r in records]
        span = max(r["finished"] for r in records) - min(r["started"] for r in records)
    return {
        "n": len(records),
        "wall": wall,
        "rate": len(records) / span,
        "eval": statistics.mean(evaluation) if evaluation else float("nan"),
        "overhead": statistics.mean(asks),
        "workers": sorted({r.get("worker", 0) for r in records}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=16, help="m, images per evaluation")
    parser.add_argument("--evaluations", type=int, default=12, help="evaluations per mode (4 initial)")
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["COMPRESSBO_CACHE"] = str(root / "cache")
        data = jpeg_folder(root / "imagenet", per_class=max(args.samples, 8))
        n_init = 4
        config = CompressConfig(
            model=two_class_spec(root, args.model), weights="random", data_dir=str(data), device="cpu",
            init=n_init, iterations=args.evaluations - n_init, samples=str(args.samples), batch_size=args.samples,
            num_restarts=2, raw_samples=64, seed=0,
        )  # fmt: skip
        print(f"{args.model}, random weights, m = {args.samples} images per evaluation, "
              f"{args.evaluations} evaluations per mode, {cores} cores")  # fmt: skip
        started = time.perf_counter()
        CompressionJob(CompressConfig(**{**config.to_dict(), "iterations": 1}),
                       RunDirectory.create(root / "warm", {"settings": {}}), progress=False)  # fmt: skip
        print(f"factor cache warmed in {time.perf_counter() - started:.1f} s")

        modes: list[tuple[str, Parallel | None]] = [("in process", None), ("pool x1", Parallel(1))]
        modes.append((f"pool x{args.workers}", Parallel(args.workers)))
        if not args.skip_ray:
            import ray

            ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
            modes += [("ray x1", Parallel(1, "")), (f"ray x{args.workers}", Parallel(args.workers, ""))]
        results = {name: run_mode(config, root / name.replace(" ", "-"), parallel) for name, parallel in modes}

    print(f"\n| mode | evaluations | search wall (s) | evaluations/s | mean evaluation (s) | driver overhead / evaluation (s) | overhead / evaluation | speedup vs x1 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        base = results.get(name.split(" x")[0] + " x1") if " x" in name else None
        speedup = f"{r['rate'] / base['rate']:.2f}x" if base else "-"
        print(f"| {name} | {r['n']} | {r['wall']:.1f} | {r['rate']:.3f} | {r['eval']:.2f} | {r['overhead']:.3f} | "
              f"{r['overhead'] / r['eval']:.1%} | {speedup} |")  # fmt: skip
    pool, ray_n = results.get(f"pool x{args.workers}"), results.get(f"ray x{args.workers}")
    if pool and ray_n:
        print(f"\nray x{args.workers} / pool x{args.workers} evaluations per second: {ray_n['rate'] / pool['rate']:.2f}")
    seq = results["in process"]
    if pool:
        print(f"pool x{args.workers} / in process evaluations per second: {pool['rate'] / seq['rate']:.2f}")


if __name__ == "__main__":
    main()
