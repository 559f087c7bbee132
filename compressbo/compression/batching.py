"""The evaluation batch size by network, device and memory.

A batch's memory is mostly activations, so the default batch size comes from a probe of one
example's activation memory at the spec's input size:

- on a GPU, a forward pass of :data:`PROBE_BATCH` examples measures the peak memory it
  allocates (``torch.cuda.max_memory_allocated``); the batch is the largest power of two whose
  activations fit :data:`GPU_MEMORY_FRACTION` of the free device memory (at most
  :data:`MAX_BATCH`);
- on a CPU, the network runs once on the ``meta`` device (shapes only, no arithmetic) and the
  peak is estimated as the largest input plus output of any layer; the batch is the largest
  power of two whose activations fit :data:`CPU_ACTIVATION_BYTES`, a budget of the order of
  a CPU's last-level caches where larger batches only add memory traffic
  (``scripts/bench_batch.py`` measures throughput per batch size; on the project's 2-core CPU
  at one thread ResNet-50 ran fastest at 4 to 8 images per batch and at 0.45 to 0.64 of that
  at 128, while VGG-16 was within noise from 1 to 128: docs/PERFORMANCE.md). The budget of
  32 MiB gives ResNet-50 16 images at 112 x 112 and 4 at 224 x 224, VGG-16 4 and 1.

``--batch-size`` always overrides the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = [
    "CPU_ACTIVATION_BYTES",
    "GPU_MEMORY_FRACTION",
    "MAX_BATCH",
    "BatchChoice",
    "default_batch_size",
    "estimated_activation_bytes",
    "measured_activation_bytes",
]

CPU_ACTIVATION_BYTES = 32 * 2**20  # activations of one batch on a CPU (of the order of its caches; measured)
GPU_MEMORY_FRACTION = 0.5  # of the free device memory, for one batch's activations
MAX_BATCH = 512  # beyond this no device gains throughput, and one batch's latency only grows
PROBE_BATCH = 2


@dataclass(frozen=True)
class BatchChoice:
    """A default batch size and why.

    Attributes:
        batch_size: Examples per forward pass.
        bytes_per_example: Activation memory of one example (estimated or measured).
        budget: Memory allowed for one batch's activations.
        measured: Whether ``bytes_per_example`` was measured (GPU) or estimated from shapes (CPU).
    """

    batch_size: int
    bytes_per_example: int
    budget: int
    measured: bool

    def describe(self, device: torch.device) -> str:
        how = "measured" if self.measured else "estimated"
        return (
            f"batch size {self.batch_size} on {device.type} ({self.bytes_per_example / 2**20:.1f} MiB of activations "
            f"per example, {how}; budget {self.budget / 2**20:,.0f} MiB); --batch-size overrides it"
        )


def _floor_power_of_two(value: float) -> int:
    return 1 if value < 2 else 2 ** int(math.floor(math.log2(value)))


def estimated_activation_bytes(module: nn.Module, input_size: tuple[int, ...], dtype: torch.dtype) -> int:
    """Peak activation bytes of one example in inference, from shapes on the ``meta`` device.

    The estimate is the largest ``input + output`` of any leaf module (what inference must
    hold at once when each activation is freed after its consumer), plus the input itself.

    Args:
        module: The network.
        input_size: One example's shape, e.g. ``(3, 224, 224)``.
        dtype: The activations' dtype.
    """
    peak = 0
    element = torch.empty((), dtype=dtype).element_size()

    def record(layer: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal peak
        held = sum(t.numel() for t in inputs if isinstance(t, Tensor))
        held += output.numel() if isinstance(output, Tensor) else 0
        peak = max(peak, held)

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    state = {n: torch.empty_like(t, device="meta") for n, t in [*module.named_parameters(), *module.named_buffers()]}
    try:
        with torch.no_grad():
            functional_call(module, state, (torch.empty(1, *input_size, device="meta", dtype=dtype),))
    finally:
        for handle in handles:
            handle.remove()
    return (peak + math.prod(input_size)) * element


def measured_activation_bytes(
    module: nn.Module, input_size: tuple[int, ...], dtype: torch.dtype, device: torch.device, amp: bool = False
) -> int:
    """Peak bytes one example's forward pass allocates on a CUDA ``device`` (a probe of :data:`PROBE_BATCH`)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    x = torch.zeros(PROBE_BATCH, *input_size, device=device, dtype=dtype)
    context = torch.autocast(device.type) if amp else torch.autocast(device.type, enabled=False)
    with torch.inference_mode(), context:
        module(x)
    torch.cuda.synchronize(device)
    return max(1, (torch.cuda.max_memory_allocated(device) - baseline) // PROBE_BATCH)


def default_batch_size(
    module: nn.Module, input_size: tuple[int, ...], device: torch.device, *, amp: bool = False
) -> BatchChoice:
    """The default evaluation batch size of ``module`` on ``device`` (see the module docstring).

    Args:
        module: The network, on ``device`` (a GPU probe runs it there).
        input_size: One example's shape (the spec's ``input_size``).
        device: The evaluation device.
        amp: The forward runs under autocast (half-size activations on a GPU).
    """
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    if device.type == "cuda":
        per_example = measured_activation_bytes(module, input_size, dtype, device, amp)
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(GPU_MEMORY_FRACTION * free)
        measured = True
    else:
        per_example = estimated_activation_bytes(module, input_size, dtype)
        budget = CPU_ACTIVATION_BYTES
        measured = False
    batch = min(MAX_BATCH, _floor_power_of_two(budget / per_example))
    return BatchChoice(batch, int(per_example), budget, measured)
