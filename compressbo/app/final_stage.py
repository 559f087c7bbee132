"""The final stage's helpers: the original network's metrics cached in the run directory.

The original network's error on the final stage's examples depends only on its weights, the
data and which examples are scored, so a run computes it once and keeps it in
``original_metrics.json``; a resumed or extended run (or a rerun of the final stage) reads it
back instead of passing the whole validation set through the original network again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import numpy as np
import torch

from compressbo.app.rundir import RunDirectory
from compressbo.compression.objective import CompressionObjective

__all__ = ["ORIGINAL_METRICS", "cached_original_error", "original_key"]

logger = logging.getLogger(__name__)

ORIGINAL_METRICS = "original_metrics.json"


def original_key(
    *, weights: Any, data: dict[str, Any] | None, indices: torch.Tensor, amp: bool, model: str
) -> dict[str, Any]:
    """What the original network's metrics depend on: weights, data, the examples scored, autocast.

    Args:
        weights: The weights as the run names them, and their recorded fingerprint if any.
        data: The data's fingerprint.
        indices: The examples the final stage scores.
        amp: Whether the forward runs under autocast.
        model: The spec.
    """
    digest = hashlib.sha256(indices.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()
    return {
        "model": model,
        "weights": weights,
        "data": None if data is None else data.get("sha256"),
        "examples": int(indices.numel()),
        "examples_sha256": digest,
        "amp": bool(amp),
    }


def _read(run: RunDirectory) -> dict[str, Any] | None:
    try:
        document = run.read_json(ORIGINAL_METRICS)
    except (OSError, json.JSONDecodeError):
        return None  # absent or damaged: computed again (and rewritten)
    return document if isinstance(document, dict) else None


def cached_original_error(
    run: RunDirectory, objective: CompressionObjective, indices: torch.Tensor, key: dict[str, Any]
) -> float | None:
    """The original network's error on ``indices``: from ``original_metrics.json`` when its key matches, else computed once and stored.

    Returns:
        The error, or ``None`` when the objective has no reference network.
    """
    if objective.reference is None:
        return None
    cached = _read(run)
    if cached is not None and cached.get("key") == key and isinstance(cached.get("error"), float):
        logger.info("original network's error on the %s scored examples: %.4f (cached in %s)",
                    f"{indices.numel():,}", cached["error"], ORIGINAL_METRICS)
        return cached["error"]
    wrong = objective.evaluator.wrong(objective.reference, indices, what="the original network")
    error = float(wrong.double().mean())
    run.write_json(
        ORIGINAL_METRICS,
        {
            "key": key,
            "error": error,
            "wrong": int(wrong.sum()),
            "wrong_mask": np.packbits(wrong.numpy().astype(np.uint8)).tobytes().hex(),  # example order of the key
        },
    )
    return error
