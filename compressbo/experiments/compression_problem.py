"""Compression objectives as comparison problems: noisy subsample evaluations, full-set scores.

:class:`CompressionProblem` wraps the pieces of ``compressbo compress`` (spec, weights, data,
:class:`~compressbo.compression.compressor.Compressor`, :class:`~compressbo.compression.objective.CompressionObjective`)
as a :class:`~compressbo.experiments.problems.Problem`:

- ``evaluate(theta, generator)`` is one objective evaluation on a fresh random subsample of
  ``m`` validation examples; the subsample is drawn from ``generator`` (seeded by the run's
  seed), so every acquisition run with a seed sees the same sequence of subsamples.
- ``score(theta)`` is the objective on the *whole* validation set (``ratio + gamma * error``,
  or ``ratio + gamma * distance`` for ``objective="distill"``), so subsample noise never
  flatters a method. It is deterministic and memoized per rank vector: a recommendation that
  does not change costs nothing to score again.

Building the problem loads everything once per process: FC3's first-use training and the
per-layer factors go to the disk caches (:func:`compressbo.compression.training.pretrained_fc3_weights`,
:class:`compressbo.compression.lowrank.FactorCache`), so the parent of a comparison builds it first and
its worker processes then only read the caches.
"""

from __future__ import annotations

import json
import time

import torch
from torch import Tensor

from compressbo._settings import fields_where
from compressbo.bo.models.warping import KnownScale
from compressbo.compression.config import ProblemConfig, RuntimeConfig, samples_range
from compressbo.compression.setup import CompressionSetup
from compressbo.exceptions import SettingError

__all__ = ["DEFAULT_SURROGATE", "DEFAULT_WARP", "CompressionProblem"]


# the settings that define the objective; where the data lives, the device and the batch
# size may change between the runs of one comparison
PROBLEM_SETTINGS = fields_where(ProblemConfig, "defines_problem") + fields_where(RuntimeConfig, "defines_problem")
_UNRECORDED = ("cost", "target_ratio", "target_flops")  # cost: recorded when not the default; budgets: compress only
# GP input warping and surrogate of compression runs that name none: measured best on FC3's
# two boxes over 20 seeds (docs/RESULTS.md, "Structure-aware search on FC3"); synthetic problems
# keep "none" and "sum"
DEFAULT_WARP = "learned"
DEFAULT_SURROGATE = "composite"


class CompressionProblem:
    """Minimize ``ratio + gamma * error`` of a network's low-rank compression.

    Example:
        >>> problem = CompressionProblem(ProblemConfig(model="fc3", samples=100))
        >>> y, yvar = problem.evaluate(problem.bounds.mean(0), torch.Generator().manual_seed(0))
        >>> problem.metrics(problem.bounds[1])["ratio"] <= 1.0
        True

    Args:
        config: What is minimized (``compressbo compress``'s problem settings); ``samples``
            must be one size ``m`` (no ``START:END`` schedule).
        runtime: Where it is evaluated (device, batch size, amp); default the CPU or GPU.
        warp: The GP input warping of the comparison's variants that name none.
        surrogate: The surrogate of the comparison's variants that name none.

    Attributes:
        setup: The loaded :class:`~compressbo.compression.setup.CompressionSetup`.
        setup_seconds: Wall time the constructor took (loading, training or reading caches).
        gamma: The weight of the error; ``known_cost``: the relaxed cost callable
            (:meth:`compressbo.compression.compressor.Compressor.cost_function`), so variants
            ``NAME+composite`` can add it to a GP of the error; :meth:`known_scale`: each
            layer's log retained weight (or output) energy at its rank knots
            (:meth:`~compressbo.compression.setup.CompressionSetup.scale_knots`), which
            variants ``NAME@spectral`` (``NAME@activation``) warp the GP's inputs by.
        warp: The GP input warping of the comparison's variants that name none
            (``warp``, default :data:`DEFAULT_WARP`).
        surrogate: The surrogate of the comparison's variants that name none (``surrogate``,
            default :data:`DEFAULT_SURROGATE`; ``sum`` for acquisitions that need a GP of the
            objective itself).
    """

    def __init__(
        self,
        config: ProblemConfig,
        runtime: RuntimeConfig | None = None,
        *,
        warp: str | None = None,
        surrogate: str | None = None,
    ) -> None:
        started = time.perf_counter()
        runtime = runtime if runtime is not None else RuntimeConfig()
        first, last = samples_range(config.samples)
        if first != last:
            raise SettingError(
                f"compare needs one subsample size, not samples {config.samples}; give samples M",
                setting="samples",
            )
        self.config = config
        self.runtime = runtime
        self.setup = CompressionSetup.load(config, runtime)
        self.objective = self.setup.objective(first)
        self.name = self.setup.spec.name
        self.dim = self.setup.compressor.dim
        self.bounds = self.setup.bounds.to(torch.float64)
        self.optimal_value: float | None = None
        measure = "distance" if config.objective == "distill" else "error"
        cost = "ratio" if config.cost == "params" else f"{config.cost} ratio"
        self.score_label = f"full-set {cost} + {config.gamma:g} * {measure}"
        values = {**vars(config), **vars(runtime)}
        self.settings = json.loads(json.dumps({name: values[name] for name in PROBLEM_SETTINGS if name not in _UNRECORDED}))
        self.warp = DEFAULT_WARP if warp is None else warp  # defaults of its variants
        self.surrogate = DEFAULT_SURROGATE if surrogate is None else surrogate
        if config.cost != "params":  # recorded when not the default, so earlier comparisons resume
            self.settings["cost"] = config.cost
        self.gamma = config.gamma
        self.known_cost = self.setup.compressor.cost_function(config.cost)  # relaxed, differentiable
        self._scales: dict[str, KnownScale] = {}
        self._metrics: dict[str, dict[str, float]] = {}
        self.setup_seconds = time.perf_counter() - started

    def known_scale(self, warp: str) -> KnownScale:
        """The GP's known input scale for ``warp`` (``spectral`` or ``activation``), computed once per warp."""
        if warp not in self._scales:
            self._scales[warp] = KnownScale(*self.setup.scale_knots(warp))
        return self._scales[warp]

    def __repr__(self) -> str:
        return f"CompressionProblem({self.config.model!r}, samples={self.config.samples})"

    def evaluate(self, x: Tensor, generator: torch.Generator) -> tuple[float, float]:
        """One evaluation of ``theta = x`` (shape ``d``) on a fresh subsample.

        Args:
            x: ``d`` per-layer parameters inside ``bounds``.
            generator: Draws the subsample's seed (one ``randint`` per call).

        Returns:
            ``(ratio + gamma * error, gamma^2 * var(error))`` on the subsample.
        """
        y, yvar, _ = self.evaluate_parts(x, generator)
        return y, yvar

    def evaluate_parts(self, x: Tensor, generator: torch.Generator) -> tuple[float, float, tuple[float, float]]:
        """:meth:`evaluate`, with the noisy part too: ``(y, yvar, (error or distance, its variance))``."""
        seed = int(torch.randint(2**62, (), generator=generator))
        self.setup.evaluator.load_state_dict({"seed": seed, "draws": 0})
        observation = self.objective(x)
        return observation.y, observation.yvar, observation.modelled()

    def metrics(self, x: Tensor) -> dict[str, float]:
        """Whole-validation-set ``ratio``, ``cost``, ``error`` (and ``distance``) and ``score`` of ``x``."""
        key = json.dumps(self.setup.compressor.ranks(x))
        if key not in self._metrics:
            full = self.objective.full_metrics(x)
            names = ("ratio", "cost", "error", "distance", "score")
            self._metrics[key] = {name: full[name] for name in names if name in full}
        return dict(self._metrics[key])

    def score(self, x: Tensor) -> float:
        """The objective of ``x`` (shape ``d``) on the whole validation set."""
        return self.metrics(x)["score"]
