"""Run several acquisition functions on one problem, over the same seeds, in parallel.

Every (acquisition, seed) run starts from the same initial design: the optimizer's scrambled
Sobol points depend only on the seed, and the problem's noise generator is seeded by the
same seed, so the initial observations are identical across acquisitions (common random
numbers continue through the BO iterations too). Runs go to a process pool; the parent
shows one tqdm bar over all BO iterations and rewrites ``runs.json`` after every finished
run, so an interrupted comparison keeps what it has.

``runs.json`` layout (JSON, never pickle)::

    {"format": "compressbo.compare/1", "complete": bool,
     "problem": {"name", "dim", "bounds", "optimal_value", "score_label"},
     "settings": {"acquisitions", "seeds", "iterations", "n_init", "optimizer_options"},
     "runs": [{"acquisition", "seed", "n_init", "initial_design": [{"x", "y", "yvar"}],
               "initial_recommendation": {"recommended_x", "score", "warnings"},
               "steps": [{"x", "y", "yvar", "acquisition_value", "step_time",
                          "recommended_x", "score", "warnings"}]}]}

``step_time`` is the wall time of one BO step: ``ask`` + ``tell`` + ``recommend``, i.e. one GP
fit (done by ``recommend`` and reused by the next ``ask``) and one acquisition maximization;
evaluating the problem and scoring the recommendation are not counted. Warnings a step
raises (GP fit recoveries, L-BFGS-B failures) are recorded in its ``warnings`` list instead
of being printed over the progress bar.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Union

import torch
from tqdm.auto import tqdm

from compressbo.errors import UserInputError
from compressbo.problems import Problem
from compressbo.report import RUNS_FILE, write_report

FORMAT = "compressbo.compare/1"

ProblemSource = Union[Problem, Callable[[], Problem]]

# Per-worker state, set once by ``_init_worker``.
_WORKER_PROBLEM: Problem | None = None
_WORKER_TICKS: Any = None


def run_comparison(
    problem: ProblemSource,
    acquisitions: Sequence[str],
    seeds: Sequence[int] | int,
    iterations: int,
    out_dir: str | os.PathLike,
    *,
    n_init: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    optimizer_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every acquisition on every seed and write ``runs.json`` and the report.

    Args:
        problem: A :class:`~compressbo.problems.Problem`, or a picklable zero-argument
            callable that builds one (called once in the parent and once per worker, so
            expensive problems are built once per process).
        acquisitions: Names from ``compressbo.acquisition.ACQUISITION_NAMES``.
        seeds: Seeds to run, or a count ``n`` meaning seeds ``0 .. n-1``.
        iterations: BO iterations per run, after the initial design.
        out_dir: Directory for ``runs.json``, ``convergence.png`` and ``summary.md``; it
            must not already hold a ``runs.json``.
        n_init: Initial design size; the optimizer's default when ``None``.
        workers: Worker processes (default ``os.cpu_count()``); ``1`` runs in this process.
        progress: Show a tqdm bar over all BO iterations.
        optimizer_options: Extra keyword arguments for ``compressbo.optimizer.Optimizer``
            (e.g. ``num_restarts``, ``raw_samples``), the same for every run.

    Returns:
        The comparison as written to ``runs.json``.

    Raises:
        UserInputError: Unknown acquisition, bad seeds/iterations/workers, or an ``out_dir``
            that already holds a comparison.
    """
    from compressbo.acquisition import ACQUISITION_NAMES

    acquisitions = list(dict.fromkeys(acquisitions))
    unknown = [name for name in acquisitions if name not in ACQUISITION_NAMES]
    if unknown or not acquisitions:
        raise UserInputError(
            f"unknown acquisition {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(ACQUISITION_NAMES)}"
        )
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserInputError("give at least one seed, each once (e.g. --seeds 10)")
    if iterations < 1:
        raise UserInputError(f"iterations must be at least 1, not {iterations}")
    if n_init is not None and n_init < 1:
        raise UserInputError(f"the initial design needs at least 1 point, not {n_init}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise UserInputError(f"workers must be at least 1, not {workers}")
    out_dir = Path(out_dir)
    if (out_dir / RUNS_FILE).exists():
        raise UserInputError(
            f"{out_dir} already holds a comparison ({RUNS_FILE}); choose a new --out directory"
        )
    out_dir.mkdir(parents=True, exist_ok=True)

    problem_instance = _build(problem)
    options = dict(optimizer_options or {})
    comparison = {
        "format": FORMAT,
        "complete": False,
        "problem": {
            "name": problem_instance.name,
            "dim": problem_instance.dim,
            "bounds": problem_instance.bounds.tolist(),
            "optimal_value": problem_instance.optimal_value,
            "score_label": problem_instance.score_label,
        },
        "settings": {
            "acquisitions": acquisitions,
            "seeds": seeds,
            "iterations": iterations,
            "n_init": n_init,
            "optimizer_options": options,
        },
        "runs": [],
    }
    _write_json(comparison, out_dir / RUNS_FILE)

    tasks = [(name, seed) for seed in seeds for name in acquisitions]
    order = {task: index for index, task in enumerate((a, s) for a in acquisitions for s in seeds)}

    def record(run: dict[str, Any]) -> None:
        comparison["runs"].append(run)
        comparison["runs"].sort(key=lambda r: order[(r["acquisition"], r["seed"])])
        _write_json(comparison, out_dir / RUNS_FILE)

    with tqdm(
        total=len(tasks) * iterations,
        disable=not progress,
        desc=f"compare {problem_instance.name}",
        unit="it",
        dynamic_ncols=True,
    ) as bar:
        kwargs = {"iterations": iterations, "n_init": n_init, "optimizer_options": options}
        if min(workers, len(tasks)) == 1:
            for name, seed in tasks:
                record(run_one(problem_instance, name, seed, on_step=bar.update, **kwargs))
        else:
            _run_pool(problem, tasks, min(workers, len(tasks)), kwargs, record, bar)
        bar.update(bar.total - bar.n)

    comparison["complete"] = True
    _write_json(comparison, out_dir / RUNS_FILE)
    write_report(comparison, out_dir)
    return comparison


def run_one(
    problem: Problem,
    acquisition: str,
    seed: int,
    *,
    iterations: int,
    n_init: int | None = None,
    optimizer_options: dict[str, Any] | None = None,
    on_step: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """One BO run: initial design, then ``iterations`` ask/evaluate/tell steps.

    Args:
        problem: The problem to minimize.
        acquisition: Acquisition name.
        seed: Seeds the optimizer (initial design, Monte Carlo acquisitions), torch's global
            generator and the problem's noise.
        iterations: BO iterations after the initial design.
        n_init: Initial design size (optimizer default when ``None``).
        optimizer_options: Extra ``Optimizer`` keyword arguments.
        on_step: Called after every BO iteration (progress ticks).

    Returns:
        The run's history, JSON-ready (see the module docstring).
    """
    from compressbo.optimizer import Optimizer

    torch.manual_seed(seed)
    noise = torch.Generator().manual_seed(seed)
    optimizer = Optimizer(
        problem.bounds,
        acquisition=acquisition,
        n_init=n_init,
        seed=seed,
        **(optimizer_options or {}),
    )
    n_init = optimizer.n_init

    initial_design = []
    for _ in range(n_init):
        x = optimizer.ask()
        y, yvar = problem.evaluate(x, noise)
        optimizer.tell(x, y, yvar)
        initial_design.append({"x": x.tolist(), "y": y, "yvar": yvar})

    steps = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        initial_recommendation = _recommendation(optimizer.recommend(), problem)
    initial_recommendation["warnings"] = _distinct(caught)
    for _ in range(iterations):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            x = optimizer.ask()
            acquisition_value = optimizer.last_acquisition_value
            ask_time = time.perf_counter() - start
            y, yvar = problem.evaluate(x, noise)
            start = time.perf_counter()
            optimizer.tell(x, y, yvar)
            recommendation = optimizer.recommend()  # fits the GP the next ask() reuses
            step_time = ask_time + time.perf_counter() - start
        steps.append(
            {
                "x": x.tolist(),
                "y": y,
                "yvar": yvar,
                "acquisition_value": _finite_or_none(acquisition_value),
                "step_time": step_time,
                **_recommendation(recommendation, problem),
                "warnings": _distinct(caught),
            }
        )
        if on_step is not None:
            on_step()
    return {
        "acquisition": acquisition,
        "seed": seed,
        "n_init": n_init,
        "initial_design": initial_design,
        "initial_recommendation": initial_recommendation,
        "steps": steps,
    }


def _run_pool(
    problem: ProblemSource,
    tasks: list[tuple[str, int]],
    workers: int,
    kwargs: dict[str, Any],
    record: Callable[[dict[str, Any]], None],
    bar: tqdm,
) -> None:
    """Run ``tasks`` on a spawn-context process pool, ticking ``bar`` per BO iteration."""
    context = multiprocessing.get_context("spawn")
    ticks = context.Queue()
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(problem, ticks),
    ) as pool:
        pending: set[Future] = {
            pool.submit(_run_in_worker, name, seed, kwargs) for name, seed in tasks
        }
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(ticks, bar)
                for future in done:
                    record(future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        _drain(ticks, bar)


def _init_worker(problem: ProblemSource, ticks: Any) -> None:
    global _WORKER_PROBLEM, _WORKER_TICKS
    torch.set_num_threads(1)
    _WORKER_PROBLEM = _build(problem)
    _WORKER_TICKS = ticks


def _run_in_worker(acquisition: str, seed: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    return run_one(
        _WORKER_PROBLEM, acquisition, seed, on_step=lambda: _WORKER_TICKS.put(1), **kwargs
    )


def _drain(ticks: Any, bar: tqdm) -> None:
    count = 0
    while True:
        try:
            count += ticks.get_nowait()
        except queue.Empty:
            break
    if count:
        bar.update(count)


def _build(problem: ProblemSource) -> Problem:
    return problem if isinstance(problem, Problem) else problem()


def _recommendation(recommendation: Any, problem: Problem) -> dict[str, Any]:
    x = recommendation.x
    return {"recommended_x": x.tolist(), "score": problem.score(x)}


def _distinct(caught: list[warnings.WarningMessage]) -> list[str]:
    """Distinct ``Category: first line`` of the warnings a step raised (GP fit, L-BFGS-B)."""
    messages = (f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught)
    return list(dict.fromkeys(messages))


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def _write_json(data: dict[str, Any], path: Path) -> None:
    """Write atomically: a crash mid-write never leaves a truncated ``runs.json``."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(partial, path)
