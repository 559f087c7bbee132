"""Real forward latency: the median of repeated timed passes, and the measured speedup.

Fewer multiply-accumulates do not always run faster (a Tucker-2 layer is three convolutions
where there was one), so a finished run measures both networks on its own device:

* warm-up first (allocator, cuDNN algorithm choice, caches): a pass at batch size 1 that also
  estimates a pass's time, a pass at the batch size timed, and :data:`WARMUP` passes in all
  for a quick network (a slow one is warm after one);
* then ``repeats`` timed passes under ``torch.inference_mode``, each ended by
  ``torch.cuda.synchronize`` on a GPU (a CUDA launch returns before the work is done);
* ``repeats`` adapts to the network: the repeats fill :data:`DEFAULT_SECONDS` (at least
  :data:`MIN_REPEATS`, at most :data:`MAX_REPEATS`), so FC3 gets up to 200 passes and
  VGG-16 on a CPU three; the whole measurement takes seconds;
* the reported latency is the median (robust to the stray slow pass of a shared machine),
  the throughput ``batch_size / median`` images per second.

A batch too large to run in the time budget on this device (VGG-16 at 512 on a CPU takes
minutes per pass) is measured at the largest batch that fits, and the record says so.

Example:
    >>> from torch import nn
    >>> result = measure_latency(nn.Linear(8, 2), (8,), batch_size=4, seconds=0.05)
    >>> result.batch_size, result.median_ms > 0
    (4, True)
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from compressbo.compression.compressor import parameter_dtype
from compressbo.compression.evaluator import resolve_device
from compressbo.exceptions import SettingError

__all__ = ["LatencyResult", "compare_latency", "measure_latency", "DEFAULT_SECONDS"]

DEFAULT_SECONDS = 0.3  # timed passes of one network at one batch size fill about this long
MAX_PASS_SECONDS = 2.0  # a batch whose one pass takes longer is cut down to fit
MIN_REPEATS = 3
MAX_REPEATS = 200
WARMUP = 2
INPUT_SEED = 0


@dataclass(frozen=True)
class LatencyResult:
    """One network's forward latency at one batch size.

    Attributes:
        batch_size: Inputs per pass actually timed.
        requested_batch_size: The batch size asked for (larger when it did not fit the budget).
        median_ms: Median wall time of one pass, milliseconds.
        min_ms: Fastest pass, milliseconds.
        images_per_s: ``batch_size / median``.
        repeats: Timed passes.
        device: Where it ran (``cpu``, ``cuda:0``).
        threads: ``torch.get_num_threads()`` during the measurement (CPU).
    """

    batch_size: int
    requested_batch_size: int
    median_ms: float
    min_ms: float
    images_per_s: float
    repeats: int
    device: str
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_pass(module: nn.Module, x: torch.Tensor, device: torch.device) -> float:
    """Seconds of one forward pass, the device's queue drained before and after."""
    _synchronize(device)
    started = time.perf_counter()
    module(x)
    _synchronize(device)
    return time.perf_counter() - started


def _inputs(input_size: Sequence[int], batch_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A seeded ``batch_size x *input_size`` standard normal batch (the values do not matter, only the shapes)."""
    generator = torch.Generator().manual_seed(INPUT_SEED)
    return torch.randn((batch_size, *input_size), generator=generator, dtype=torch.float32).to(device, dtype)


def measure_latency(
    module: nn.Module,
    input_size: Sequence[int],
    *,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    seconds: float = DEFAULT_SECONDS,
    warmup: int = WARMUP,
    max_pass_seconds: float = MAX_PASS_SECONDS,
) -> LatencyResult:
    """Median forward latency of ``module`` on ``batch_size x *input_size`` inputs.

    The module is moved to ``device`` and put in eval mode (in place).

    Args:
        module: The network.
        input_size: One input's shape without the batch dimension, e.g. ``(3, 224, 224)``.
        batch_size: Inputs per pass.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        seconds: Time budget of the timed passes (their number adapts to it).
        warmup: Untimed passes before timing.
        max_pass_seconds: A batch whose estimated pass exceeds this is cut to the largest that fits.

    Raises:
        SettingError: ``batch_size`` below 1 or a non-positive budget.
    """
    if batch_size < 1:
        raise SettingError(f"batch_size must be at least 1, got {batch_size}", setting="batch_size")
    if not seconds > 0:
        raise SettingError(f"the latency budget must be positive, got {seconds} s", setting="seconds")
    device = resolve_device(device)
    module = module.to(device).eval()
    dtype = parameter_dtype(module)
    with torch.inference_mode():
        probe = _timed_pass(module, _inputs(input_size, 1, dtype, device), device)  # also the first warm-up
        if batch_size > 1 and probe * batch_size > max_pass_seconds and probe < max_pass_seconds / 10:
            # a quick network's first pass may be mostly start-up: look again before cutting the batch
            probe = min(probe, _timed_pass(module, _inputs(input_size, 1, dtype, device), device))
        used = batch_size
        if batch_size > 1 and probe * batch_size > max_pass_seconds:
            used = max(1, min(batch_size, int(max_pass_seconds / max(probe, 1e-9))))
        x = _inputs(input_size, used, dtype, device)
        estimate = probe
        if used > 1:  # a warm-up at the batch size timed
            estimate = _timed_pass(module, x, device)
        if estimate < seconds / 10:  # cheap: more warm-up passes; a slow network is warm after one
            for _ in range(max(warmup - 1, 0)):
                estimate = min(estimate, _timed_pass(module, x, device))
        repeats = int(min(MAX_REPEATS, max(MIN_REPEATS, math.floor(seconds / max(estimate, 1e-9)))))
        times = [_timed_pass(module, x, device) for _ in range(repeats)]
    median = statistics.median(times)
    return LatencyResult(
        batch_size=used,
        requested_batch_size=batch_size,
        median_ms=median * 1e3,
        min_ms=min(times) * 1e3,
        images_per_s=used / median,
        repeats=repeats,
        device=str(device),
        threads=torch.get_num_threads(),
    )


def compare_latency(
    original: nn.Module,
    compressed: nn.Module,
    input_size: Sequence[int],
    *,
    batch_sizes: Sequence[int] = (1,),
    device: str | torch.device = "cpu",
    seconds: float = DEFAULT_SECONDS,
    max_pass_seconds: float = MAX_PASS_SECONDS,
) -> dict[str, Any]:
    """Latency of both networks at each batch size, and the measured speedup.

    ``seconds`` and ``max_pass_seconds`` are :func:`measure_latency`'s. The two are measured
    one after the other at each batch size, at the same batch (the compressed
    network's batch is the one the original fitted in its budget), so the speedup compares
    like with like.

    Returns:
        ``{"device", "threads", "batches": [{"batch_size", "requested_batch_size",
        "original": LatencyResult dict, "compressed": ..., "speedup"}]}``, ``speedup`` being
        ``original median / compressed median``.
    """
    rows: list[dict[str, Any]] = []
    for requested in dict.fromkeys(batch_sizes):  # unique, in order
        before = measure_latency(original, input_size, batch_size=requested, device=device, seconds=seconds,
                                 max_pass_seconds=max_pass_seconds)
        done = next((row for row in rows if row["batch_size"] == before.batch_size), None)
        if done is not None:  # cut down to a batch size already measured: the same figures
            rows.append({**done, "requested_batch_size": requested})
            continue
        after = measure_latency(compressed, input_size, batch_size=before.batch_size, device=device, seconds=seconds,
                                max_pass_seconds=max_pass_seconds)
        rows.append(
            {
                "batch_size": before.batch_size,
                "requested_batch_size": requested,
                "original": before.to_dict(),
                "compressed": after.to_dict(),
                "speedup": before.median_ms / after.median_ms,
            }
        )
    return {"device": rows[0]["original"]["device"], "threads": torch.get_num_threads(), "batches": rows}
