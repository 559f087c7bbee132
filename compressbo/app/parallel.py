"""A compress job's evaluations on several workers (the asynchronous loop is :mod:`compressbo.bo.asynchronous`).

:class:`Parallel` says where (``--workers N``: processes on this machine; ``--ray``: Ray
actors) and builds the executor; :class:`CompressionWorker` is the picklable factory of the
compression objective that each worker builds once (spec, weights, factors, validation data,
evaluator); :func:`evaluate_compression` is the one conversion of an observation into the
loop's :class:`~compressbo.bo.loop.Evaluation`, shared by the job and its workers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from compressbo.app.executors import ProcessPoolExecutor, RayExecutor, worker_devices
from compressbo.bo.asynchronous import Executor
from compressbo.bo.loop import Evaluation

__all__ = ["CompressionWorker", "Parallel", "evaluate_compression"]


@dataclass
class CompressionWorker:
    """``(worker id, device) -> objective``: a compression objective built inside a worker.

    Picklable (plain settings), so it travels to spawned processes and Ray actors; each worker
    loads the spec, the weights, the validation data and the factors (from the factor cache,
    which the driver filled) once.

    Attributes:
        problem: The :class:`~compressbo.compression.config.ProblemConfig` as a dict.
        runtime: The :class:`~compressbo.compression.config.RuntimeConfig` as a dict.
        seed: The run's seed (the subsample of evaluation ``i`` is drawn from ``(seed, i)``).
        first_m: ``m`` of the first evaluation.
        last_m: ``m`` of the last one.
        budget: The run's number of evaluations (the schedule's length).
        trust_code: Import a spec builder that is not on the allowlist.
        error_only: The run has a budget: workers return the error alone as ``y``.
        prebuilt: The driver's weights and factors
            (:class:`~compressbo.compression.setup.Prebuilt`): workers on other machines neither
            read the weights nor decompose (Ray ships them through its object store);
            ``None``: each worker reads them, the factors from the cache the driver filled.
    """

    problem: dict[str, Any]
    runtime: dict[str, Any]
    seed: int
    first_m: int
    last_m: int
    budget: int
    trust_code: bool = False
    prebuilt: Any = None
    error_only: bool = False

    def __call__(self, worker: int, device: str) -> Callable[[torch.Tensor, int], Evaluation]:
        from compressbo.compression.config import ProblemConfig, RuntimeConfig
        from compressbo.compression.setup import CompressionSetup, linear_schedule

        problem = ProblemConfig(**self.problem)
        if problem.bounds is not None:
            problem.bounds = tuple(problem.bounds)
        runtime = RuntimeConfig(**{**self.runtime, "device": device})
        setup = CompressionSetup.load(
            problem, runtime, seed=self.seed, trust_code=self.trust_code, prebuilt=self.prebuilt
        )
        objective = setup.objective(linear_schedule(self.first_m, self.last_m, self.budget))
        return _ObjectiveAdapter(objective, self.error_only)


def evaluate_compression(objective: Any, x: torch.Tensor, index: int, *, budget: bool = False) -> Evaluation:
    """Evaluation ``index`` of ``theta = x`` by a :class:`CompressionObjective`, as the loop takes it.

    The one conversion of an observation into an :class:`~compressbo.bo.loop.Evaluation` (``y``,
    its variance, the modelled part for a composite surrogate, the rest as record fields), used
    by the job in its own process and by every worker.
    """
    observation = objective(x, index=index)
    if budget:  # a budget: minimize the error alone (the cost is the constraint)
        from compressbo.app.budget import budget_evaluation

        return budget_evaluation(observation)
    info = observation.to_dict()
    return Evaluation(info.pop("y"), info.pop("yvar"), info=info, modelled=observation.modelled())


class _ObjectiveAdapter:
    """``(x, index) -> Evaluation`` of a :class:`CompressionObjective` (as the job's ``evaluate``)."""

    def __init__(self, objective: Any, budget: bool = False) -> None:
        self.objective = objective
        self.budget = budget

    def __call__(self, x: torch.Tensor, index: int) -> Evaluation:
        return evaluate_compression(self.objective, x, index, budget=self.budget)


@dataclass(frozen=True)
class Parallel:
    """Where a compress job's evaluations run when not in its own process.

    Attributes:
        workers: Number of workers (``None``: 1 process, or one Ray actor per GPU of the cluster).
        ray: ``None``: a process pool on this machine; ``""``: a local Ray; else the address
            ``ray.init`` takes (``auto`` for a running cluster).
    """

    workers: int | None = None
    ray: str | None = None

    def executor(self, job: Any) -> Executor:
        """The workers of ``job`` (a :class:`~compressbo.app.job.CompressionJob`), started."""
        from compressbo.compression.config import samples_range

        first_m, last_m = samples_range(job.config.samples)
        factory = CompressionWorker(
            problem=dataclasses.asdict(job.config.problem()),
            runtime=dataclasses.asdict(job.config.runtime()),
            seed=job.config.seed,
            first_m=first_m,
            last_m=last_m,
            budget=job.budget,
            trust_code=job.trust_code,
            error_only=job.optimizer.constraint is not None,
        )
        if self.ray is not None:  # the factors and weights go to every node once, in the factory
            factory = dataclasses.replace(factory, prebuilt=job.setup.prebuilt())
            return RayExecutor(factory, self.workers, address=self.ray or None)
        size = self.workers or 1
        return ProcessPoolExecutor(factory, size, devices=worker_devices(job.config.device, size))
