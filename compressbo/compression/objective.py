"""The compression objective: ``y = ratio + gamma * error`` (or the distillation distance), with its known variance."""

from __future__ import annotations

import math

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from scipy import stats
from torch import Tensor, nn

from compressbo._json import jsonable
from compressbo.exceptions import SettingError
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
        record["ranks"] = jsonable(self.ranks)
        return record


OBJECTIVES = ("error", "distill")
MAX_GAMMA = 1e6  # beyond it gamma^2 * variance overflows long before the ratio matters


def check_objective_settings(objective: str, gamma: float, smallest_m: int | None = None) -> None:
    """Check the objective's settings before anything is loaded.

    Args:
        objective: ``"error"`` or ``"distill"``.
        gamma: Weight of the error (or distance): a finite number >= 0.
        smallest_m: The smallest subsample size the run will use, when known (``distill``
            needs at least 2: its variance is a sample variance).

    Raises:
        SettingError: naming the setting at fault (``objective``, ``gamma``, ``samples``).
    """
    if objective not in OBJECTIVES:
        raise SettingError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}", setting="objective")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not (math.isfinite(gamma) and 0 <= gamma <= MAX_GAMMA):
        raise SettingError(
            f"gamma must be a number from 0 to {MAX_GAMMA:g} (the error is at most 1, the ratio about 1), got {gamma!r}",
            setting="gamma",
        )
    if objective == "distill" and smallest_m is not None and smallest_m < 2:
        raise SettingError(
            f"objective distill needs samples of at least 2 (its variance is a sample variance), "
            f"got {smallest_m}",
            setting="samples",
        )
REFINEMENT_ALPHA = 0.05  # significance level of the paired test that keeps a refined model


def sign_test(before: Tensor, after: Tensor) -> dict[str, Any]:
    """Exact one-sided paired sign test that ``after`` has lower per-example losses than ``before``.

    For 0/1 errors this is the exact McNemar test: only the examples where the two models
    disagree count, and under "no difference" each of them is equally likely to favour either
    model (``scipy.stats.binomtest``, ``p = 0.5``).

    Args:
        before: ``k`` per-example losses of the first model (errors as 0/1, or distances).
        after: ``k`` per-example losses of the second model on the same examples.

    Returns:
        ``improved`` (examples where ``after`` is better), ``worsened`` and ``p_value``
        (1.0 when they never disagree).
    """
    improved = int((after < before).sum())
    worsened = int((after > before).sum())
    discordant = improved + worsened
    p_value = float(stats.binomtest(improved, discordant, 0.5, alternative="greater").pvalue) if discordant else 1.0
    return {"improved": improved, "worsened": worsened, "p_value": p_value}


@dataclass(frozen=True)
class FinalScore:
    """A network scored on the final stage's examples.

    Attributes:
        metrics: As :meth:`CompressionObjective.full_metrics` returns them.
        losses: ``k`` float64 per-example losses (0/1 errors, or squared logit distances for
            ``objective="distill"``), for a paired comparison of two networks.
    """

    metrics: dict[str, Any]
    losses: Tensor


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
        check_objective_settings(objective, gamma)
        check_cost(cost)
        if objective == "distill" and reference is None:
            raise SettingError("the distill objective needs the original network as reference", setting="objective")
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

    def __call__(self, theta: Any, m: int | None = None, *, index: int | None = None) -> Observation:
        """Evaluate ``theta`` on a fresh subsample of ``m`` examples (default: ``samples``).

        Args:
            theta: The per-layer parameters.
            m: Subsample size; default the schedule's at this evaluation.
            index: The evaluation's number; it fixes the schedule's ``m`` and the subsample
                (the evaluator's draw ``index``), so an evaluation is the same wherever and
                whenever it runs. Default: the next one.
        """
        if index is not None:
            self.evaluations = self.evaluator.draws = int(index)
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

    def original_error(self, indices: Tensor | None = None) -> float | None:
        """Error of ``reference`` on ``indices`` (default: the full set), computed once; ``None`` without one."""
        if self.reference is None:
            return None
        indices = torch.arange(len(self.evaluator)) if indices is None else indices
        key = (indices.numel(), hash(indices.numpy().tobytes()))
        if self._original_error is None or self._original_error[0] != key:
            wrong = self.evaluator.wrong(self.reference, indices, what="the original network")
            self._original_error = (key, float(wrong.double().mean()))
        return self._original_error[1]

    def _cost(self, compressed: CompressedLike) -> float:
        """The exact cost of ``compressed`` under this objective's cost metric."""
        return float(compressed.ratio) if self.cost == "params" else float(compressed.cost(self.cost))

    def score(
        self,
        compressed: CompressedLike,
        indices: Tensor | None = None,
        *,
        what: str = "the compressed network",
        original_error: float | None = None,
    ) -> FinalScore:
        """``compressed``'s metrics and per-example losses on ``indices`` (default: the full set).

        Args:
            compressed: The compressed network (``compressor.compress(theta)`` or a refined build).
            indices: The examples scored (:meth:`SubsampleEvaluator.final_indices`).
            what: How the pass's log line and progress bar name the network.
            original_error: ``reference``'s error on the same examples when the caller has it
                (e.g. from a run's cache); else computed once (:meth:`original_error`).
        """
        indices = torch.arange(len(self.evaluator)) if indices is None else indices
        model_ratio = getattr(compressed, "model_ratio", None)
        flops_ratio = getattr(compressed, "flops_ratio", None)
        metrics = {
            "ratio": float(compressed.ratio),
            "model_ratio": None if model_ratio is None else float(model_ratio),
            "flops_ratio": None if flops_ratio is None else float(flops_ratio),
            "ranks": jsonable(compressed.ranks),
        }
        if self.objective == "distill":
            losses, wrong = self.evaluator.distances(compressed.module, self.reference, indices, what=what)
            metrics["error"] = float(wrong.double().mean())
            metrics["distance"] = measure = float(losses.mean())
        else:
            losses = self.evaluator.wrong(compressed.module, indices, what=what).double()
            metrics["error"] = measure = float(losses.mean())
        metrics["cost_metric"], metrics["cost"] = self.cost, self._cost(compressed)
        metrics["score"] = metrics["cost"] + self.gamma * measure
        metrics["original_error"] = original_error if original_error is not None else self.original_error(indices)
        metrics["samples"] = indices.numel()
        return FinalScore(metrics, losses)

    def full_metrics(
        self, theta: Any, compressed: CompressedLike | None = None, *, indices: Tensor | None = None
    ) -> dict[str, Any]:
        """Whole-validation-set metrics of ``theta`` (for the recommended point).

        Args:
            theta: The per-layer parameters.
            compressed: ``compressor.compress(theta)``, when the caller already has it.
            indices: Score only these examples (a fixed subset); default the full set.

        Returns:
            ``ratio``, ``model_ratio``, ``flops_ratio`` (``None`` where the compressor does
            not report them), ``ranks``, ``error`` (full set), ``distance`` (full-set logit
            distance, ``objective="distill"`` only), ``score`` (the objective on the full set:
            ``cost + gamma * error``, or ``cost + gamma * distance`` for distill; ``cost`` is
            ``ratio`` or the compressed layers' FLOPs ratio, also returned, with ``cost_metric``),
            ``original_error`` (``reference``'s full-set error, ``None`` without a reference)
            and ``samples`` (the number of examples scored).
        """
        compressed = compressed if compressed is not None else self.compressor.compress(theta)
        return self.score(compressed, indices).metrics

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for resuming: evaluations done and the evaluator's subsample sequence."""
        return {"evaluations": self.evaluations, "evaluator": self.evaluator.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` so a resumed run draws the subsamples it would have drawn."""
        self.evaluations = int(state["evaluations"])
        self.evaluator.load_state_dict(state["evaluator"])
