"""The deployment sections of a run's ``report.md``: measured latency and fine-tuning.

Pure functions of ``best.json`` (its ``latency`` and ``finetune`` entries), so
``compressbo report`` regenerates them without measuring anything again.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["format_ms", "latency_lines", "finetune_lines", "sections", "threads_label"]


def format_ms(ms: float) -> str:
    """A latency in milliseconds with 3 decimals and at least 4 significant digits.

    Sub-millisecond latencies (a small network at batch 1) keep 4 digits, so a speedup printed
    beside them is their ratio to 0.1%: ``format_ms(412.3456) == "412.346"``,
    ``format_ms(0.10937) == "0.1094"``.
    """
    decimals = 3 if not ms > 0 else max(3, 3 - math.floor(math.log10(ms)))
    return f"{ms:.{decimals}f}"


def threads_label(latency: dict[str, Any]) -> str:
    """``", N threads"`` for a measurement on the CPU (``latency``: its ``device`` and ``threads``), else ``""``."""
    threads = latency.get("threads")
    return "" if latency.get("device", "cpu") != "cpu" or threads is None else f", {threads} thread{'s' * (threads != 1)}"


def latency_lines(latency: dict[str, Any] | None, flops_ratio: float | None = None) -> list[str]:
    """A table of both networks' median latency and throughput per batch size, with the speedup."""
    if not latency:
        return []
    lines = [
        "",
        f"## Measured latency ({latency['device']}{threads_label(latency)})",
        "",
        "Median of repeated timed forward passes after warm-up (`torch.inference_mode`).",
        "",
        "| batch | original (ms) | compressed (ms) | speedup | original (images/s) | compressed (images/s) |",
        "|---|---|---|---|---|---|",
    ]
    for row in latency["batches"]:
        batch = str(row["batch_size"])
        if row.get("requested_batch_size", row["batch_size"]) != row["batch_size"]:
            batch += f" (of {row['requested_batch_size']}: one pass would exceed the time budget)"
        lines.append(
            f"| {batch} | {format_ms(row['original']['median_ms'])} | {format_ms(row['compressed']['median_ms'])} | "
            f"{row['speedup']:.2f}x | {row['original']['images_per_s']:.1f} | {row['compressed']['images_per_s']:.1f} |"
        )
    if flops_ratio:
        lines += ["", f"The FLOPs ratio {flops_ratio:.4f} would predict a {1 / flops_ratio:.2f}x speedup."]
    return lines


def finetune_lines(finetune: dict[str, Any] | None) -> list[str]:
    """The fine-tune's errors (original, after the search, after fine-tuning) and its epochs."""
    if not finetune:
        return []
    s = finetune["settings"]
    loss = f"distillation (T = {s['temperature']:g}, alpha = {s['alpha']:g})" if s["loss"] == "kd" else "cross-entropy"
    lines = [
        "",
        "## Fine-tuning (full validation set)",
        "",
        f"{finetune['epochs_done']} epochs on the {finetune['train_examples']:,} training examples of "
        f"{finetune['dataset']}, {loss}, SGD lr {s['lr']:g} with a cosine schedule, batch {s['batch_size']}"
        f"{', amp' if s['amp'] else ''}, seed {s['seed']}, on {finetune['device']}; model in `{finetune['path']}/`.",
        "",
        "| network | top-1 error |",
        "|---|---|",
        f"| original | {finetune['original_error']:.4f} |",
        f"| compressed, after the search | {finetune['error_before']:.4f} |",
        f"| compressed, fine-tuned | {finetune['error_after']:.4f} |",
        "",
        "| epoch | training loss | validation error | seconds |",
        "|---|---|---|---|",
    ]
    lines += [f"| {h['epoch']} | {h['loss']:.4f} | {h['val_error']:.4f} | {h['seconds']:.1f} |" for h in finetune["history"]]
    return lines


def sections(best: dict[str, Any]) -> list[str]:
    """Every deployment section ``best`` has material for (none for a run without them)."""
    return [*latency_lines(best.get("latency"), best.get("flops_ratio")), *finetune_lines(best.get("finetune"))]
