"""The compression objective: ``y = ratio + gamma * error`` (or the distillation distance), with its known variance."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
from torch import Tensor, nn

from compressbo.exceptions import UserInputError
from compressbo.compression.cost import check_cost
from compressbo.compression.evaluator import SubsampleEvaluator


# ---------------------------------------------------------------------- objective


class CompressedLike(Protocol):
    """What :class:`CompressionObjective` needs from ``compressor.compress(theta)``."""

    module: nn.Module
    ranks: Any
    ratio: float


class CompressorLike(Protocol):
    def compress(self, theta: Any) -> CompressedLike: ...


@dataclass(frozen=True)
class Observation:
    """One evaluation of the compression objective.

    Attributes:
        y: ``cost + gamma * error`` (or ``cost + gamma * distance`` for distillation); the
            cost is ``ratio`` unless the objective's cost is ``flops``.
        yvar: ``gamma^2`` times the variance of the error (or of the distance).
        ratio: Compression ratio of the compressed layers (compressed / original parameters).
        error: Top-1 error on the subsample.
        m: Subsample size.
        ranks: The ranks ``compress(theta)`` chose.
        seconds_compress: Time to build the compressed network.
        seconds_evaluate: Time to evaluate it (device transfer included).
        distance: Mean squared logit distance (``objective="distill"`` only, else ``None``).
        cost: The exact cost in ``y`` (``ratio`` for the ``params`` cost, the compressed
            layers' FLOPs ratio for ``flops``; see :mod:`compressbo.compression.cost`).
        variance: The variance of the error (or distance) estimate (``yvar / gamma^2``).
    """

    y: float
    yvar: float
    ratio: float
    error: float
    m: int
    ranks: Any
    seconds_compress: float
    seconds_evaluate: float
    distance: float | None = None
    cost: float | None = None
    variance: float | None = None

    def modelled(self) -> tuple[float, float] | None:
        """``(measure, variance)``: the noisy part of ``y = cost + gamma * measure`` (the error,
        or the distance for distillation) and its variance; None for records without it."""
        if self.variance is None:
            return None
        return (self.error if self.distance is None else self.distance), self.variance

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tensors and tuples of ranks become lists)."""
        record = asdict(self)
        record["ranks"] = _jsonable(self.ranks)
        return record


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


OBJECTIVES = ("error", "distill")


class CompressionObjective:
    """``theta -> Observation``: compress, evaluate on a subsample, combine.

    Args:
        compressor: Anything with ``compress(theta)`` returning an object with ``module``,
            ``ranks`` and ``ratio`` (and ``model_ratio``, ``flops_ratio`` for
            :meth:`full_metrics`).
        evaluator: The :class:`SubsampleEvaluator`.
        gamma: Weight of the error (or distance) against the compression ratio.
        objective: ``"error"`` (top-1 error) or ``"distill"`` (logit distance to ``reference``).
        samples: Subsample size ``m``, or a schedule ``evaluation index -> m``.
        reference: The original network: required for ``"distill"``; gives the original
            full-set error in :meth:`full_metrics`.
        cost: The known cost term: ``"params"`` (``ratio``) or ``"flops"`` (the compressed
            layers' multiply-accumulates ratio, ``compressed.cost("flops")``).

    Attributes:
        evaluations: Number of evaluations so far (the schedule's argument; restored by
            :meth:`load_state_dict`).
    """

    def __init__(
        self,
        compressor: CompressorLike,
        evaluator: SubsampleEvaluator,
        *,
        gamma: float = 1.0,
        objective: str = "error",
        samples: int | Callable[[int], int],
        reference: nn.Module | None = None,
        cost: str = "params",
    ) -> None:
        check_cost(cost)
        if objective not in OBJECTIVES:
            raise UserInputError(f"unknown objective {objective!r}; use 'error' or 'distill'")
        if objective == "distill" and reference is None:
            raise UserInputError("the distill objective needs the original network as reference")
        if not gamma >= 0:
            raise UserInputError(f"gamma must be non-negative, got {gamma}")
        if not callable(samples):
            evaluator.check_samples(int(samples))
        self.compressor = compressor
        self.evaluator = evaluator
        self.gamma = float(gamma)
        self.objective = objective
        self.samples = samples
        self.reference = reference
        self.cost = cost
        self.evaluations = 0
        self._original_error: float | None = None

    def samples_at(self, evaluation: int) -> int:
        """``m`` for the given evaluation index."""
        return int(self.samples(evaluation)) if callable(self.samples) else int(self.samples)

    def __call__(self, theta: Any, m: int | None = None) -> Observation:
        """Evaluate ``theta`` on a fresh subsample of ``m`` examples (default: ``samples``)."""
        m = self.samples_at(self.evaluations) if m is None else int(m)
        started = time.perf_counter()
        compressed = self.compressor.compress(theta)
        compressed_at = time.perf_counter()
        ratio = float(compressed.ratio)
        cost = self._cost(compressed)
        if self.objective == "distill":
            estimate = self.evaluator.distill(compressed.module, self.reference, m)
            error, value, variance, distance = estimate.error, estimate.distance, estimate.variance, estimate.distance
        else:
            estimate = self.evaluator.error(compressed.module, m)
            error, value, variance, distance = estimate.error, estimate.error, estimate.variance, None
        finished = time.perf_counter()
        self.evaluations += 1
        return Observation(
            y=cost + self.gamma * value,
            yvar=self.gamma**2 * variance,
            ratio=ratio,
            error=error,
            m=m,
            ranks=compressed.ranks,
            seconds_compress=compressed_at - started,
            seconds_evaluate=finished - compressed_at,
            distance=distance,
            cost=cost,
            variance=variance,
        )

    def _cost(self, compressed: CompressedLike) -> float:
        """The exact cost of ``compressed`` under this objective's cost metric."""
        return float(compressed.ratio) if self.cost == "params" else float(compressed.cost(self.cost))

    def original_error(self) -> float | None:
        """Full-set error of ``reference`` (computed once), or ``None`` without one."""
        if self.reference is not None and self._original_error is None:
            self._original_error = self.evaluator.full_error(self.reference)
        return self._original_error

    def full_metrics(self, theta: Any, compressed: CompressedLike | None = None) -> dict[str, Any]:
        """Whole-validation-set metrics of ``theta`` (for the recommended point).

        Args:
            theta: The per-layer parameters.
            compressed: ``compressor.compress(theta)``, when the caller already has it.

        Returns:
            ``ratio``, ``model_ratio``, ``flops_ratio`` (``None`` where the compressor does
            not report them), ``ranks``, ``error`` (full set), ``distance`` (full-set logit
            distance, ``objective="distill"`` only), ``score`` (the objective on the full set:
            ``cost + gamma * error``, or ``cost + gamma * distance`` for distill; ``cost`` is
            ``ratio`` or the compressed layers' FLOPs ratio, also returned, with ``cost_metric``),
            ``original_error`` (``reference``'s full-set error, ``None`` without a reference)
            and ``samples`` (the set's size).
        """
        compressed = compressed if compressed is not None else self.compressor.compress(theta)
        model_ratio = getattr(compressed, "model_ratio", None)
        flops_ratio = getattr(compressed, "flops_ratio", None)
        metrics = {
            "ratio": float(compressed.ratio),
            "model_ratio": None if model_ratio is None else float(model_ratio),
            "flops_ratio": None if flops_ratio is None else float(flops_ratio),
            "ranks": _jsonable(compressed.ranks),
            "error": self.evaluator.full_error(compressed.module),
        }
        measure = metrics["error"]
        if self.objective == "distill":
            metrics["distance"] = measure = self.evaluator.distill(compressed.module, self.reference).distance
        metrics["cost_metric"], metrics["cost"] = self.cost, self._cost(compressed)
        metrics["score"] = metrics["cost"] + self.gamma * measure
        metrics["original_error"] = self.original_error()
        metrics["samples"] = len(self.evaluator)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for resuming: evaluations done and the evaluator's subsample sequence."""
        return {"evaluations": self.evaluations, "evaluator": self.evaluator.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` so a resumed run draws the subsamples it would have drawn."""
        self.evaluations = int(state["evaluations"])
        self.evaluator.load_state_dict(state["evaluator"])
