"""run_async: the asynchronous loop on in-process workers (real optimizer, real GP)."""

from __future__ import annotations

import pytest
import torch

from compressbo.bo import Optimizer
from compressbo.bo.asynchronous import InProcessExecutor, run_async
from compressbo.bo.loop import Evaluation, Loop
from compressbo.exceptions import EvaluationError

OPTIONS = {"acquisition": "cei", "seed": 0, "n_init": 4, "num_restarts": 2, "raw_samples": 32}


def _quadratic(x: torch.Tensor, index: int) -> Evaluation:
    return Evaluation(float((x - 0.3).pow(2).sum()), 1e-4)


def _loop(objective=_quadratic, budget: int = 8) -> Loop:
    return Loop(Optimizer([(0.0, 1.0)] * 2, **OPTIONS), objective, budget=budget)


def test_one_worker_is_the_sequential_loop():
    sequential = _loop().run()
    asynchronous = run_async(_loop(), InProcessExecutor(_quadratic, size=1))
    assert [(r["x"], r["y"]) for r in sequential] == [(r["x"], r["y"]) for r in asynchronous]


def test_k_in_flight_spends_the_exact_budget_and_never_proposes_a_pending_point():
    loop = _loop(budget=10)
    pending_at_ask: list[int] = []
    original = loop.optimizer.ask

    def ask(*args, **kwargs):
        pending_at_ask.append(len(loop.optimizer.pending))
        return original(*args, **kwargs)

    loop.optimizer.ask = ask
    records = run_async(loop, InProcessExecutor(_quadratic, size=3))
    assert [r["iteration"] for r in records] == list(range(10))  # submission order, each index once
    assert len({tuple(r["x"]) for r in records}) == 10
    assert max(pending_at_ask) == 2 and pending_at_ask[-1] == 2  # every BO ask saw the other two in flight
    assert {r["worker"] for r in records} == {0, 1, 2}


def test_a_failing_point_is_retried_with_its_index_then_stops_the_run_in_one_line():
    calls: dict[int, int] = {}

    def flaky(x, index):
        calls[index] = calls.get(index, 0) + 1
        if index == 2 and calls[index] == 1:
            raise RuntimeError("CUDA error: out of memory\ntraceback ...")
        return _quadratic(x, index)

    records = run_async(_loop(flaky, budget=6), InProcessExecutor(flaky, size=2))
    assert sorted(r["iteration"] for r in records) == list(range(6)) and calls[2] == 2

    def broken(x, index):
        if index == 3:
            raise ValueError("bad weights")
        return _quadratic(x, index)

    with pytest.raises(EvaluationError, match=r"^evaluation 3 at x = \[.*\] failed 3 times; last: ValueError: bad weights$"):
        run_async(_loop(broken, budget=6), InProcessExecutor(broken, size=2))
