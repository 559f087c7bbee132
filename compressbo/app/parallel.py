"""Asynchronous BO: keep every worker of an :class:`~compressbo.app.executors.Executor` busy.

:func:`run_async` drives one :class:`~compressbo.bo.loop.Loop`: whenever a worker is idle it
asks for the next point (the points in flight are the optimizer's pending points, so a
proposal never duplicates one; the initial Sobol design is dealt out the same way), and
whenever one finishes it tells the result and records it, in completion order, with the
worker, its device and host and the start and end times. A point whose worker died goes
back to the queue with the same index (so the same subsample); a point that fails
:data:`MAX_ATTEMPTS` times stops the run with an :class:`~compressbo.exceptions.EvaluationError`.

:class:`CompressionWorker` is the picklable factory of the compression objective that each
worker builds once (spec, weights, factors from the cache, validation data, evaluator).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from compressbo.app.executors import Executor, ProcessPoolExecutor, RayExecutor, worker_devices
from compressbo.bo.loop import Evaluation, Loop, Proposal, Record
from compressbo.exceptions import EvaluationError

__all__ = ["MAX_ATTEMPTS", "CompressionWorker", "Parallel", "evaluate_compression", "run_async"]

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""Evaluations of one point that may fail before the run stops."""


def run_async(
    loop: Loop,
    executor: Executor,
    *,
    on_record: Callable[[Record], None] | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> list[Record]:
    """Run ``loop`` to its end on ``executor``'s workers; returns the new records (completion order).

    Args:
        loop: The loop (its ``on_ask`` / ``on_record`` hooks save the run as usual).
        executor: The workers; closed when the run ends, fails or is interrupted.
        on_record: Called with each record after the loop's own hook (e.g. a progress bar).
        max_attempts: Failures of one point (lost worker or error) that stop the run.

    Raises:
        EvaluationError: A point failed ``max_attempts`` times; everything finished is saved.
    """
    retry: deque[Proposal] = deque()
    failures: Counter[int] = Counter()
    running = 0
    records: list[Record] = []
    try:
        while True:
            while executor.idle() > 0:
                proposal = retry.popleft() if retry else loop.propose()
                if proposal is None:
                    break
                executor.submit(proposal)
                running += 1
            if running == 0:
                return records
            done = executor.next_done()
            running -= 1
            if done.evaluation is not None:
                record = loop.complete(done.proposal, done.evaluation, **done.fields())
                records.append(record)
                if on_record is not None:
                    on_record(record)
                continue
            index = done.proposal.index
            failures[index] += 1
            if failures[index] >= max_attempts:
                raise EvaluationError(
                    f"evaluation {index} at x = {[round(v, 6) for v in done.proposal.x.tolist()]} failed "
                    f"{failures[index]} times; last: {done.error}"
                )
            logger.warning("evaluation %d on worker %d (%s, %s) failed: %s; evaluating it again",
                           index, done.worker, done.device, done.host, done.error)  # fmt: skip
            retry.appendleft(done.proposal)
    finally:
        executor.close()


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
        return _ObjectiveAdapter(objective)


def evaluate_compression(objective: Any, x: torch.Tensor, index: int) -> Evaluation:
    """Evaluation ``index`` of ``theta = x`` by a :class:`CompressionObjective`, as the loop takes it.

    The one conversion of an observation into an :class:`~compressbo.bo.loop.Evaluation` (``y``,
    its variance, the modelled part for a composite surrogate, the rest as record fields), used
    by the job in its own process and by every worker.
    """
    observation = objective(x, index=index)
    info = observation.to_dict()
    return Evaluation(info.pop("y"), info.pop("yvar"), info=info, modelled=observation.modelled())


class _ObjectiveAdapter:
    """``(x, index) -> Evaluation`` of a :class:`CompressionObjective` (as the job's ``evaluate``)."""

    def __init__(self, objective: Any) -> None:
        self.objective = objective

    def __call__(self, x: torch.Tensor, index: int) -> Evaluation:
        return evaluate_compression(self.objective, x, index)


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
        )
        if self.ray is not None:  # the factors and weights go to every node once, in the factory
            factory = dataclasses.replace(factory, prebuilt=job.setup.prebuilt())
            return RayExecutor(factory, self.workers, address=self.ray or None)
        size = self.workers or 1
        return ProcessPoolExecutor(factory, size, devices=worker_devices(job.config.device, size))
