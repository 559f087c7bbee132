"""The one BO loop: ask -> evaluate -> tell -> record.

``compressbo compress`` and every run of ``compressbo compare`` go through :class:`Loop`:
it asks the optimizer for a point, hands it to an objective, tells the result and returns
one :data:`Record`, the same schema in ``history.jsonl`` and in ``runs.json``::

    {"iteration": i,                      # evaluation index, 0-based, initial design included
     "phase": "init" | "bo",
     "x": [...],                          # the evaluated point, d floats
     "y": float, "yvar": float,           # the observation and its known noise variance
     "acquisition_value": float | None,   # the maximized acquisition of the proposal
     "seconds_bo": float,                 # ask + tell + recommend: the loop's own time
     "recommended": {"x": [...], "mean": float, "std": float | None},
     "warnings": [str, ...],              # distinct warnings the step raised (GP fit, L-BFGS-B)
     ...}                                 # the objective's own fields (Evaluation.info)

A proposal is split in two halves, :meth:`Loop.propose` and :meth:`Loop.complete`, so a
caller that evaluates elsewhere (another process, a Ray actor) drives the same loop; the
sequential :meth:`Loop.step` is ``propose`` then ``objective`` then ``complete``.

Example:
    >>> import torch
    >>> from compressbo.bo import Optimizer
    >>> from compressbo.bo.loop import Evaluation, Loop
    >>> opt = Optimizer([(0.0, 1.0)] * 2, acquisition="cei", seed=0, n_init=4)
    >>> loop = Loop(opt, lambda x, i: Evaluation(float((x - 0.3).pow(2).sum()), 1e-4), budget=6)
    >>> records = loop.run()
    >>> [r["phase"] for r in records]
    ['init', 'init', 'init', 'init', 'bo', 'bo']
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from compressbo.bo.optimizer import Optimizer

__all__ = ["Evaluation", "Loop", "Objective", "Proposal", "Record", "normalize_record"]

Record = dict[str, Any]
"""One evaluation as recorded (see the module docstring)."""


@dataclass(frozen=True)
class Evaluation:
    """What an objective returns for one point.

    Attributes:
        y: The noisy observation.
        yvar: Its known noise variance.
        gradient: The observed gradient (``d``), for gradient-enhanced acquisitions.
        info: JSON-ready fields recorded with the evaluation (e.g. ranks, ratio, error).
        modelled: ``(e, var_e)``, the modelled part of ``y = cost(x) + gamma * e`` for the
            composite surrogate (``Optimizer(surrogate="composite")``); ``None`` otherwise.
    """

    y: float
    yvar: float
    gradient: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    modelled: tuple[float, float] | None = None


class Objective(Protocol):
    """``(x, index) -> Evaluation``: ``x`` a ``d`` tensor, ``index`` the evaluation's number.

    The index is fixed when the point is asked, so an objective whose noise is drawn from
    ``(seed, index)`` gives the same evaluation wherever and whenever it runs.
    """

    def __call__(self, x: Tensor, index: int) -> Evaluation: ...


@dataclass
class Proposal:
    """A point asked and not yet told.

    Attributes:
        index: The evaluation's number (its record's ``iteration``).
        x: The point, a ``d`` tensor.
        acquisition_value: The maximized acquisition value (``None`` for Sobol points).
        seconds_ask: Time ``ask`` took (0 for a point restored as pending).
        warnings: Distinct warnings raised while asking.
    """

    index: int
    x: Tensor
    acquisition_value: float | None
    seconds_ask: float
    warnings: list[str] = field(default_factory=list)


class Loop:
    """Drive one optimizer against one objective until a budget or ``kappa`` stops it.

    Args:
        optimizer: The optimizer; it may already hold observations and pending points
            (a resumed run): pending points are evaluated first, in order, then new ones asked.
        objective: ``(x, index) -> Evaluation``.
        budget: Total number of evaluations, the initial design included.
        on_ask: Called with each new proposal right after ``ask``, once it is in
            :attr:`in_flight` (e.g. to save the optimizer state, so an interruption leaves
            the point pending).
        on_record: Called with each record before it is returned (e.g. to append it to a
            file, or to add a score).
        start: Index of the next evaluation (the number of records already made).

    Attributes:
        restored_acquisition_values: Acquisition values of the restored pending points, in order.
        restored_indices: Evaluation indices of the restored pending points, in order (an
            asynchronous run leaves several, not necessarily the last ones); empty: the next ones.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        objective: Objective,
        *,
        budget: int,
        on_ask: Callable[[Proposal], None] | None = None,
        on_record: Callable[[Record], None] | None = None,
        start: int = 0,
    ) -> None:
        self.optimizer = optimizer
        self.objective = objective
        self.budget = int(budget)
        self.on_ask = on_ask
        self.on_record = on_record
        self.next_index = int(start)
        self.in_flight: dict[int, Proposal] = {}
        self.restored_acquisition_values: list[float | None] = []
        self.restored_indices: list[int] = []

    @property
    def done(self) -> bool:
        """Whether the budget is spent (in flight included) or ``kappa`` said stop."""
        return self.next_index >= self.budget or self.optimizer.should_stop

    def propose(self) -> Proposal | None:
        """The next point: a pending one left by an interruption, else a new ``ask``.

        Returns:
            The proposal, or ``None`` when the budget is spent or the proposal fell below
            ``kappa`` (the paper's rule stops there without spending the evaluation).
        """
        restored = [x for x in self.optimizer.pending if not self._is_in_flight(x)]
        index = self.restored_indices[0] if restored and self.restored_indices else self.next_index
        if index >= self.budget:
            return None
        if restored:  # asked before an interruption: evaluate it (with its own index), do not ask again
            if self.restored_indices:
                self.restored_indices.pop(0)
            value = self.restored_acquisition_values.pop(0) if self.restored_acquisition_values else None
            proposal = Proposal(index, restored[0].clone(), value, 0.0)
        else:
            with _recorded_warnings() as caught:
                started = time.perf_counter()
                x = self.optimizer.ask()
                seconds = time.perf_counter() - started
            if self.optimizer.should_stop:
                return None
            proposal = Proposal(self.next_index, x, _finite_or_none(self.optimizer.last_acquisition_value), seconds, caught)
        self.in_flight[proposal.index] = proposal
        self.next_index = max(self.next_index, proposal.index + 1)
        if not restored and self.on_ask is not None:
            self.on_ask(proposal)
        return proposal

    def complete(self, proposal: Proposal, evaluation: Evaluation, **extra: Any) -> Record:
        """Tell ``evaluation`` of ``proposal``, recommend, and make its record.

        Args:
            proposal: A proposal returned by :meth:`propose`.
            evaluation: The objective's result at ``proposal.x``.
            **extra: More fields for the record (e.g. the worker that evaluated it).
        """
        with _recorded_warnings() as caught:
            started = time.perf_counter()
            self.optimizer.tell(
                proposal.x, evaluation.y, evaluation.yvar, gradient=evaluation.gradient, modelled=evaluation.modelled
            )
            recommended = self.recommendation()
            seconds = proposal.seconds_ask + time.perf_counter() - started
        self.in_flight.pop(proposal.index, None)
        record: Record = {
            "iteration": proposal.index,
            "phase": "init" if proposal.index < self.optimizer.n_init else "bo",
            "x": proposal.x.tolist(),
            "y": evaluation.y,
            "yvar": evaluation.yvar,
            **evaluation.info,
            "acquisition_value": proposal.acquisition_value,
            "seconds_bo": seconds,
            "recommended": recommended,
            "warnings": list(dict.fromkeys(proposal.warnings + caught)),
            **extra,
        }
        if self.on_record is not None:
            self.on_record(record)
        return record

    def step(self) -> Record | None:
        """Propose, evaluate and complete one point; ``None`` when the loop is done."""
        proposal = self.propose()
        if proposal is None:
            return None
        return self.complete(proposal, self.objective(proposal.x, proposal.index))

    def run(self) -> list[Record]:
        """Step until done; returns the new records."""
        return list(iter(self.step, None))

    def recommendation(self) -> dict[str, Any]:
        """The current recommendation: the lowest posterior mean (the only point at n = 1)."""
        optimizer = self.optimizer
        if optimizer.n_observed < 2:
            return {"x": optimizer.X[0].tolist(), "mean": optimizer.Y[0].item(), "std": None}
        rec = optimizer.recommend()
        return {"x": rec.x.tolist(), "mean": rec.mean, "std": rec.std}

    def _is_in_flight(self, x: Tensor) -> bool:
        return any(torch.equal(x, p.x) for p in self.in_flight.values())


def normalize_record(record: Record) -> Record:
    """A record in today's schema from one written by an older compressbo.

    Older ``history.jsonl`` files keyed the point ``theta`` (and the recommendation's
    point ``recommended.theta``); older ``runs.json`` steps had ``step_time`` and
    ``recommended_x``. Records in today's schema are returned unchanged.
    """
    record = dict(record)
    if "x" not in record and "theta" in record:
        record["x"] = record.pop("theta")
    if "step_time" in record:
        record.setdefault("seconds_bo", record.pop("step_time"))
    if "recommended_x" in record:
        record["recommended"] = {"x": record.pop("recommended_x"), "mean": None, "std": None}
    recommended = record.get("recommended")
    if isinstance(recommended, dict) and "x" not in recommended and "theta" in recommended:
        record["recommended"] = {"x": recommended["theta"], **{k: v for k, v in recommended.items() if k != "theta"}}
    return record


@contextmanager
def _recorded_warnings() -> Iterator[list[str]]:
    """Collect ``Category: first line`` of the distinct warnings raised in the block."""
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield messages
    messages.extend(dict.fromkeys(f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught))


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
