"""Asynchronous BO: keep every worker of an :class:`Executor` busy.

:func:`run_async` drives one :class:`~compressbo.bo.loop.Loop`: whenever a worker is idle it
asks for the next point (the points in flight are the optimizer's pending points, so a
proposal never duplicates one; the initial Sobol design is dealt out the same way), and
whenever one finishes it tells the result and records it, in completion order, with the
worker, its device and host and the start and end times. A point whose worker died goes
back to the queue with the same index (so the same subsample); a point that fails
:data:`MAX_ATTEMPTS` times stops the run with an :class:`~compressbo.exceptions.EvaluationError`.

The engine knows workers only through the :class:`Executor` protocol. This module has the
one that needs nothing but this process, :class:`InProcessExecutor` (``size`` evaluations in
flight, evaluated in submission order: what ``size`` equally fast workers would see, which
is how ``compare --simulate-workers`` measures what asynchrony costs in sample efficiency);
processes and Ray actors are in :mod:`compressbo.app.executors`.

Example:
    >>> loop = Loop(Optimizer(bounds, n_init=4), objective, budget=20)
    >>> records = run_async(loop, InProcessExecutor(objective, size=4))  # 4 points in flight
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from compressbo.bo.loop import Evaluation, Loop, Objective, Proposal, Record
from compressbo.exceptions import EvaluationError, SettingError

__all__ = ["MAX_ATTEMPTS", "Done", "Executor", "InProcessExecutor", "evaluate_safely", "run_async"]

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""Evaluations of one point that may fail before the run stops."""


@dataclass
class Done:
    """A finished (or lost) evaluation.

    Attributes:
        proposal: The proposal that was submitted.
        evaluation: Its result; ``None`` when the evaluation failed or the worker died.
        worker: The worker's id (0 .. size - 1).
        device: The worker's device (``cpu``, ``cuda:1``).
        host: The worker's host name.
        started: Wall-clock start (``time.time()``).
        finished: Wall-clock end.
        error: The failure, one line (``None`` on success).
        lost: Whether the worker died (its process or actor is gone).
    """

    proposal: Proposal
    evaluation: Evaluation | None
    worker: int
    device: str
    host: str
    started: float
    finished: float
    error: str | None = None
    lost: bool = False

    def fields(self) -> dict[str, Any]:
        """The record's fields for this evaluation: worker, device, host, start and end."""
        return {"worker": self.worker, "device": self.device, "host": self.host,
                "started": self.started, "finished": self.finished}  # fmt: skip


class Executor(Protocol):
    """Workers that evaluate proposals; :meth:`next_done` blocks until one finishes."""

    size: int

    def idle(self) -> int:
        """Number of workers without a proposal."""
        ...

    def submit(self, proposal: Proposal) -> None:
        """Give ``proposal`` to an idle worker."""
        ...

    def next_done(self) -> Done:
        """Wait for the next finished (or lost) proposal; a lost worker is started again."""
        ...

    def close(self) -> None:
        """Stop every worker (an evaluation in flight is abandoned)."""
        ...


def evaluate_safely(objective: Objective, x: list[float], index: int) -> tuple[Evaluation | None, str | None, float, float]:
    """``(evaluation, error, started, finished)``: a Python error becomes one line, not a dead worker."""
    started = time.time()
    try:
        evaluation = objective(torch.tensor(x, dtype=torch.float64), index)
        return evaluation, None, started, time.time()
    except Exception as err:  # noqa: BLE001 - reported to the driver, which decides
        return None, f"{type(err).__name__}: {err}".splitlines()[0], started, time.time()


class InProcessExecutor:
    """``size`` workers in this process: proposals evaluated one at a time, oldest first.

    With ``size = 1`` this is the sequential evaluation. With ``size = k`` the driver keeps
    ``k`` points in flight and every result arrives in submission order, as from ``k``
    equally fast workers: the information the optimizer has at each ask is that of a real
    asynchronous run, without its wall-clock gain.

    Args:
        objective: ``(x, index) -> Evaluation``.
        size: Evaluations in flight.
        device: The device named in the records.
    """

    def __init__(self, objective: Objective, size: int = 1, device: str = "cpu") -> None:
        if size < 1:
            raise SettingError(f"workers must be at least 1, got {size}", setting="workers")
        self.size = size
        self.objective = objective
        self.device = device
        self.host = socket.gethostname()
        self._queued: deque[tuple[int, Proposal]] = deque()

    def idle(self) -> int:
        return self.size - len(self._queued)

    def submit(self, proposal: Proposal) -> None:
        busy = {worker for worker, _ in self._queued}
        self._queued.append((next(i for i in range(self.size) if i not in busy), proposal))

    def next_done(self) -> Done:
        if not self._queued:
            raise RuntimeError("next_done() without a submitted proposal")
        worker, proposal = self._queued.popleft()
        evaluation, error, started, finished = evaluate_safely(self.objective, proposal.x.tolist(), proposal.index)
        return Done(proposal, evaluation, worker, self.device, self.host, started, finished, error)

    def close(self) -> None:
        self._queued.clear()


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
