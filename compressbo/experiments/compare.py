"""Run several acquisition functions on one problem, over the same seeds, in parallel.

Every (acquisition, seed) run starts from the same initial design: the optimizer's scrambled
Sobol points depend only on the seed, and the problem's noise generator is seeded by the
same seed, so the initial observations are identical across acquisitions (common random
numbers continue through the BO iterations too). A problem family (one function per seed,
e.g. GP samples) gives each seed its own member. Runs go to a process pool; the parent
builds the problem first (so expensive problems fill their disk caches once), each worker
builds it once from those caches (known input scales, ``@spectral`` and ``@activation``, a
pass of calibration data through a network, are computed in the parent only and sent with the
runs, so every worker count gives the same runs), the parent shows one tqdm bar over all BO iterations and
rewrites ``runs.json`` after every finished run, so an interrupted comparison keeps what it
has and ``resume=True`` adds the missing runs (or new acquisitions and seeds) later. On Ctrl-C
the parent saves the runs that finished, prints one line on stderr saying which, and how to
continue, and re-raises ``KeyboardInterrupt``.

``runs.json`` layout (JSON, never pickle)::

    {"format": "compressbo.compare/3", "complete": bool,
     "problem": {"name", "dim", "bounds", "optimal_value", "score_label", "settings",
                 "warp", "surrogate" (problems with a default GP warping and surrogate, e.g. compression)},
     "settings": {"acquisitions", "seeds", "iterations", "n_init", "optimizer_options",
                  "score_every", "known_optimum", "in_flight"},
     "setup_seconds": seconds the parent took to build the problem,
     "runs": [{"acquisition" (the variant, e.g. "cei@log"), "warp" (the GP's input warping), "surrogate", "seed", "n_init", "setup_seconds", "acquisition_options",
               "optimal_value", "observed_gradients",
               "initial_design": [record, ...],       # the initial Sobol points
               "initial_recommendation": {"recommended", "score"},
               "steps": [record, ...],                # the BO iterations
               "best_observed_scores", "best_evaluated_scores" (``compressbo.experiments.scores``),
               "final_metrics": {...} (problems with ``metrics``, e.g. compression)}]}

Every record is :class:`compressbo.bo.loop.Loop`'s, the schema of ``compress``'s
``history.jsonl`` (``iteration``, ``phase``, ``x``, ``y``, ``yvar``, ``acquisition_value``,
``seconds_bo``, ``recommended: {x, mean, std}``, ``warnings``), plus its ``score``: the true
value of the recommendation, ``null`` at steps that are not checkpoints (every
``score_every``-th BO iteration and the last one are; so is the last initial point).
``seconds_bo`` is the loop's own time: ``ask`` + ``tell`` + ``recommend``, i.e. one GP fit
(done by ``recommend`` and reused by the next ``ask``) and one acquisition maximization;
evaluating the problem and scoring are not counted. Warnings a step raises (GP fit
recoveries, L-BFGS-B failures) are recorded in its ``warnings`` list instead of being
printed over the progress bar. ``setup_seconds`` of a run is the time its process took to
build the problem. Comparisons written by older versions (format ``compressbo.compare/2``)
are converted on load (:func:`compressbo.experiments.report.load_comparison`).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import Tensor
from tqdm.auto import tqdm

from compressbo.bo.models.gp import DEFAULT_KERNEL
from compressbo.exceptions import ReportedInterrupt, RunDirError, SettingError, UserInputError
from compressbo._lifecycle import exit_with_parent
from compressbo.files import check_output_directory, lock_directory, unlock_directory, write_json_atomic
from compressbo.experiments.problems import Problem, ProblemFamily
from compressbo.experiments.report import RUNS_FILE, write_report
from compressbo.experiments.scores import extra_scores
from compressbo.experiments.variants import Variant, parse_variant

if TYPE_CHECKING:
    from compressbo.bo.models.warping import KnownScale

FORMAT = "compressbo.compare/3"

ProblemSource = Union[Problem, ProblemFamily, Callable[[], Union[Problem, ProblemFamily]]]

# Per-worker state, set once by ``_init_worker``.
_WORKER_PROBLEM: Problem | ProblemFamily | None = None
_WORKER_SETUP_SECONDS: float | None = None
_WORKER_TICKS: Any = None
# Settings a resumed comparison must share with the one it continues.
_FIXED_SETTINGS = ("iterations", "n_init", "optimizer_options", "score_every", "known_optimum", "in_flight")


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
    score_every: int = 1,
    known_optimum: float | None = None,
    resume: bool = False,
    ray: str | None = None,
    in_flight: int = 1,
) -> dict[str, Any]:
    """Run every acquisition on every seed and write ``runs.json`` and the report.

    Args:
        problem: A :class:`~compressbo.experiments.problems.Problem` or
            :class:`~compressbo.experiments.problems.ProblemFamily`, or a picklable zero-argument
            callable that builds one (called once in the parent and once per worker, so
            expensive problems are built once per process).
        acquisitions: Variants ``NAME[@WARP]`` (:mod:`compressbo.experiments.variants`): names
            from ``compressbo.bo.acquisition.ACQUISITION_NAMES``, optionally with the GP's input
            warping (``cei@log``); without one, the problem's default warping.
        seeds: Seeds to run, or a count ``n`` meaning seeds ``0 .. n-1``.
        iterations: BO iterations per run, after the initial design.
        out_dir: Directory for ``runs.json``, the plots and ``summary.md``: new or empty, or
            holding an earlier comparison's ``runs.json`` if (and only if) ``resume``.
        n_init: Initial design size; the optimizer's default when ``None``.
        workers: Worker processes (default ``os.cpu_count()``); ``1`` runs in this process.
        progress: Show a tqdm bar over all BO iterations.
        optimizer_options: Extra keyword arguments for ``compressbo.bo.optimizer.Optimizer``
            (e.g. ``num_restarts``, ``raw_samples``), the same for every run.
        score_every: Score the recommended point every ``score_every`` BO iterations (and
            after the initial design and the last iteration); ``1`` scores every iteration.
        known_optimum: ``f_star`` for the known-optimum acquisitions (``erm``, ``cbm``);
            default: the problem's own ``optimal_value`` (per seed for a family).
        resume: Continue the comparison in ``out_dir``: keep its finished runs and run the
            missing (acquisition, seed) pairs, including acquisitions and seeds added now.
        ray: Run the runs as Ray tasks (one CPU each, as many at once as the cluster has
            CPUs) instead of on the process pool: ``""`` starts a local Ray, any other value
            is the address ``ray.init`` takes (``auto``: a running cluster); ``workers`` is then
            ignored. Resume and Ctrl-C behave as with the pool.
        in_flight: Evaluations each run keeps in flight: ``k > 1`` runs asynchronous BO as
            ``k`` equally fast workers would (each ask sees the other ``k - 1`` points as
            pending; :class:`~compressbo.bo.asynchronous.InProcessExecutor`), to measure what
            asynchrony costs at the same number of evaluations.

    Returns:
        The comparison as written to ``runs.json``.

    Raises:
        UserInputError: Unknown acquisition, bad seeds/iterations/workers/score_every, a
            known-optimum acquisition without a known optimum, an ``out_dir`` that is empty,
            a file, a directory holding other files, unwritable, or that already holds a
            comparison (without ``resume``) or one with other settings.
        KeyboardInterrupt: Ctrl-C; the finished runs are saved in ``runs.json`` first.
    """
    from compressbo.bo.acquisition import ACQUISITION_NAMES, acquisition_spec

    acquisitions = list(dict.fromkeys(acquisitions))
    if not acquisitions:
        raise SettingError(f"unknown acquisition (none given); choose from {', '.join(ACQUISITION_NAMES)}", setting="acq")
    variants = [parse_variant(name) for name in acquisitions]  # NAME or NAME@WARP
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise SettingError("give at least one seed, each once (e.g. seeds 10)", setting="seeds")
    if iterations < 1:
        raise SettingError(f"iterations must be at least 1, not {iterations}", setting="iterations")
    if n_init is not None and n_init < 1:
        raise SettingError(f"the initial design needs at least 1 point, not {n_init}", setting="init")
    if score_every < 1:
        raise SettingError(f"score_every must be at least 1, not {score_every}", setting="score_every")
    if in_flight < 1:
        raise SettingError(f"in_flight must be at least 1, not {in_flight}", setting="in_flight")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise SettingError(f"workers must be at least 1, not {workers}", setting="workers")
    out_dir = check_output_directory(out_dir, keep=(RUNS_FILE,), kind="comparison")
    if (out_dir / RUNS_FILE).exists() and not resume:
        raise SettingError(
            f"{out_dir} already holds a comparison ({RUNS_FILE}); choose a new out "
            "directory, or resume to add runs to it",
            setting="resume",
        )
    if resume and not (out_dir / RUNS_FILE).exists():
        raise RunDirError(f"{out_dir} holds no {RUNS_FILE}, so there is nothing to resume; drop resume", setting="resume")
    if out_dir.is_dir():  # one writer per comparison folder: a second one is refused at once
        lock_directory(out_dir, what="comparison folder")

    started = time.perf_counter()
    problem_instance = _build(problem)
    setup_seconds = time.perf_counter() - started
    known_scales = _check_variants(variants, problem_instance)  # computed once, here: sent with the runs
    needs_optimum = [v.label for v in variants if acquisition_spec(v.acquisition).known_optimum]
    if needs_optimum and known_optimum is None and not _knows_optimum(problem_instance):
        raise SettingError(
            f"{', '.join(needs_optimum)} need the objective's known optimum value; pass "
            "known_optimum VALUE (a lower bound you believe is attained) or drop them",
            setting="known_optimum",
        )
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
            "settings": problem_instance.settings,
            **({"warp": problem_instance.warp} if hasattr(problem_instance, "warp") else {}),
            **({"surrogate": problem_instance.surrogate} if hasattr(problem_instance, "surrogate") else {}),
        },
        "settings": {
            "acquisitions": acquisitions,
            "seeds": seeds,
            "iterations": iterations,
            "n_init": n_init,
            "optimizer_options": options,
            "score_every": score_every,
            "known_optimum": known_optimum,
            "in_flight": in_flight,
        },
        "setup_seconds": setup_seconds,
        "runs": [],
    }
    if resume:
        comparison = _resumed(out_dir, comparison)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock_directory(out_dir, what="comparison folder")
        write_json_atomic(out_dir / RUNS_FILE, comparison, indent=1)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise RunDirError(f"cannot write out {out_dir} ({reason}); choose a writable directory", setting="out") from None

    settings = comparison["settings"]
    done = {(run["acquisition"], run["seed"]) for run in comparison["runs"]}
    tasks = [
        (name, seed)
        for seed in settings["seeds"]
        for name in settings["acquisitions"]
        if (name, seed) not in done
    ]
    order = {
        task: index
        for index, task in enumerate(
            (a, s) for a in settings["acquisitions"] for s in settings["seeds"]
        )
    }

    def record(run: dict[str, Any]) -> None:
        if any((r["acquisition"], r["seed"]) == (run["acquisition"], run["seed"]) for r in comparison["runs"]):
            return  # already recorded (the pool saves finished runs again on Ctrl-C)
        comparison["runs"].append(run)
        comparison["runs"].sort(key=lambda r: order[(r["acquisition"], r["seed"])])
        write_json_atomic(out_dir / RUNS_FILE, comparison, indent=1)

    kwargs = {
        "iterations": iterations,
        "n_init": n_init,
        "optimizer_options": options,
        "score_every": score_every,
        "known_optimum": known_optimum,
        "in_flight": in_flight,
        "known_scales": known_scales,
    }
    try:
        with tqdm(
            total=len(tasks) * iterations,
            disable=not progress,
            desc=f"compare {problem_instance.name}",
            unit="it",
            dynamic_ncols=True,
        ) as bar:
            if ray is not None:
                _run_ray(problem, tasks, ray, kwargs, record, bar)
            elif min(workers, len(tasks)) <= 1:
                for name, seed in tasks:
                    run = run_one(problem_instance, name, seed, on_step=bar.update, **kwargs)
                    record({**run, "setup_seconds": setup_seconds})
            else:
                _run_pool(problem, tasks, min(workers, len(tasks)), kwargs, record, bar)
            bar.update(bar.total - bar.n)
        comparison["complete"] = True
        write_json_atomic(out_dir / RUNS_FILE, comparison, indent=1)
        write_report(comparison, out_dir)
    except KeyboardInterrupt:
        _save_interrupted(comparison, out_dir)
        raise ReportedInterrupt from None
    finally:
        unlock_directory(out_dir)  # another process may continue the comparison now
    return comparison


def run_one(
    problem: Problem | ProblemFamily,
    acquisition: str,
    seed: int,
    *,
    iterations: int,
    n_init: int | None = None,
    optimizer_options: dict[str, Any] | None = None,
    score_every: int = 1,
    known_optimum: float | None = None,
    on_step: Callable[[], None] | None = None,
    in_flight: int = 1,
    known_scales: Mapping[str, KnownScale] | None = None,
) -> dict[str, Any]:
    """One BO run: initial design, then ``iterations`` ask/evaluate/tell steps.

    Args:
        problem: The problem to minimize, or a family (its member ``for_seed(seed)``).
        acquisition: Acquisition variant ``NAME[@WARP]`` (the run is recorded under it).
        seed: Seeds the optimizer (initial design, Monte Carlo acquisitions), torch's global
            generator and the problem's noise.
        iterations: BO iterations after the initial design.
        n_init: Initial design size (optimizer default when ``None``).
        optimizer_options: Extra ``Optimizer`` keyword arguments.
        score_every: Score every ``score_every``-th iteration (and the last).
        known_optimum: ``f_star`` of known-optimum acquisitions (default: the problem's
            ``optimal_value``).
        on_step: Called after every BO iteration (progress ticks).
        in_flight: Evaluations in flight (asynchronous BO as that many equally fast workers
            would run it; ``1``: sequential).
        known_scales: The problem's known input scales by warp, computed once by the caller
            (the comparison's parent) so that a worker need not; a warp that needs one and is
            missing here is asked of the problem.

    Returns:
        The run's history, JSON-ready (see the module docstring).
    """
    from compressbo.bo.acquisition import acquisition_spec
    from compressbo.bo.asynchronous import InProcessExecutor, run_async
    from compressbo.bo.loop import Evaluation, Loop
    from compressbo.bo.optimizer import Optimizer

    if isinstance(problem, ProblemFamily) and not isinstance(problem, Problem):
        problem = problem.for_seed(seed)
    label, variant = acquisition, parse_variant(acquisition)
    acquisition, warp = variant.acquisition, variant.resolved_warp(getattr(problem, "warp", "none"))
    surrogate_name = variant.resolved_surrogate(getattr(problem, "surrogate", "sum"))
    composite = surrogate_name == "composite"
    surrogate = (
        {"surrogate": "composite", "known_cost": problem.known_cost, "cost_weight": problem.gamma}
        if composite else {}
    )  # fmt: skip

    acquisition_options = {}
    if acquisition_spec(acquisition).known_optimum:
        f_star = problem.optimal_value if known_optimum is None else known_optimum
        acquisition_options["f_star"] = f_star
    # gradient-enhanced acquisitions observe the exact gradient where the problem has one
    observe_gradient = acquisition_spec(acquisition).gradient_enhanced and hasattr(problem, "true_gradient")

    torch.manual_seed(seed)
    noise = torch.Generator().manual_seed(seed)
    optimizer = Optimizer(
        problem.bounds,
        acquisition=acquisition,
        n_init=n_init,
        seed=seed,
        acquisition_options=acquisition_options,
        known_kernel=getattr(problem, "known_kernel", None),
        warp=warp,
        known_scale=given if (given := (known_scales or {}).get(warp)) is not None else _known_scale(problem, warp),
        **surrogate,
        **(optimizer_options or {}),
    )
    n_init = optimizer.n_init

    def evaluate(x: Tensor, index: int) -> Evaluation:
        # the noise stream of the seed, in order; the error part too where the surrogate models it
        y, yvar, modelled = problem.evaluate_parts(x, noise) if composite else (*problem.evaluate(x, noise), None)
        return Evaluation(y, yvar, gradient=problem.true_gradient(x) if observe_gradient else None, modelled=modelled)

    def score(record: dict[str, Any]) -> None:
        iteration = record["iteration"] - n_init + 1  # BO iteration, 1-based; 0: the last initial point
        scored = iteration == 0 or (iteration > 0 and (iteration % score_every == 0 or iteration == iterations))
        x = torch.tensor(record["recommended"]["x"], dtype=torch.float64)
        record["score"] = problem.score(x) if scored else None
        if iteration > 0 and on_step is not None:
            on_step()

    loop = Loop(optimizer, evaluate, budget=n_init + iterations, on_record=score)
    records = loop.run() if in_flight == 1 else run_async(loop, InProcessExecutor(evaluate, size=in_flight))
    initial_design, steps = records[:n_init], records[n_init:]
    last_initial = initial_design[-1]
    run = {
        "acquisition": label,
        "warp": warp,
        "surrogate": surrogate_name,
        "seed": seed,
        "n_init": n_init,
        "acquisition_options": acquisition_options,
        "observed_gradients": observe_gradient,
        "optimal_value": problem.optimal_value,
        "initial_design": initial_design,
        "initial_recommendation": {"recommended": last_initial["recommended"], "score": last_initial["score"]},
        "steps": steps,
    }
    run.update(extra_scores(problem, run))  # the authors' scoring rules, from the evaluations
    if hasattr(problem, "metrics"):
        final = (steps[-1] if steps else last_initial)["recommended"]["x"]
        run["final_metrics"] = problem.metrics(torch.tensor(final, dtype=torch.float64))
    return run


def _check_variants(variants: Sequence[Variant], problem: Problem | ProblemFamily) -> dict[str, KnownScale]:
    """Refuse (one line, before any run) a variant whose warping or surrogate cannot serve ``problem``.

    Returns:
        The problem's known input scale of every warp among ``variants`` that needs one.
    """
    from compressbo.bo.optimizer import check_surrogate, check_warp

    default_warp, default_surrogate = getattr(problem, "warp", "none"), getattr(problem, "surrogate", "sum")
    known_scales: dict[str, KnownScale] = {}
    for variant in variants:
        warp = variant.resolved_warp(default_warp)
        try:
            if warp not in known_scales and (scale := _known_scale(problem, warp)) is not None:
                known_scales[warp] = scale
            check_warp(warp, problem.bounds, variant.acquisition, getattr(problem, "known_kernel", None),
                       known_scales.get(warp))
            check_surrogate(variant.resolved_surrogate(default_surrogate), variant.acquisition, getattr(problem, "known_cost", None),
                            getattr(problem, "gamma", 1.0), getattr(problem, "known_kernel", None))
        except UserInputError as error:
            raise type(error)(f"{variant.label} on {problem.name}: {error}", setting="acq") from None
    return known_scales


def _known_scale(problem: Problem | ProblemFamily, warp: str) -> KnownScale | None:
    """The problem's known input scale for ``warp`` where the warp needs one and the problem has it (else None)."""
    from compressbo.bo.models.warping import needs_known_scale

    return problem.known_scale(warp) if needs_known_scale(warp) and hasattr(problem, "known_scale") else None


def _knows_optimum(problem: Problem | ProblemFamily) -> bool:
    """Whether runs get ``f_star`` from the problem (a family's members know their own)."""
    return problem.optimal_value is not None or isinstance(problem, ProblemFamily)


def _resumed(out_dir: Path, requested: dict[str, Any]) -> dict[str, Any]:
    """The comparison in ``out_dir``, extended by the requested acquisitions and seeds."""
    from compressbo.experiments.report import load_comparison

    existing = load_comparison(out_dir)
    if existing.get("format") != FORMAT:
        raise SettingError(
            f"resume: {out_dir}/{RUNS_FILE} has format {existing.get('format')!r}, not "
            f"{FORMAT!r}; start a new comparison"
        )
    if "warp" in requested["problem"]:  # comparisons from before warping fitted on x itself
        existing["problem"].setdefault("warp", "none")
    if "surrogate" in requested["problem"]:  # and before the composite surrogate modelled the sum
        existing["problem"].setdefault("surrogate", "sum")
    if existing["problem"] != requested["problem"]:
        was, now = existing["problem"], requested["problem"]
        differ = [key for key in dict.fromkeys([*was, *now]) if was.get(key) != now.get(key)]
        recorded = ", ".join(
            f"{key} {was.get(key)!r}" for key in differ if key in ("warp", "surrogate") and key in was
        )
        raise SettingError(
            f"resume: {out_dir} compares on {was['name']} with other problem settings ({', '.join(differ)} "
            f"differ{f'; it was run with {recorded}' if recorded else ''}); give the same problem and "
            "settings, or a new out directory"
        )
    old, new = existing["settings"], requested["settings"]
    for key in _FIXED_SETTINGS:
        if _with_defaults(key, old.get(key)) != _with_defaults(key, new.get(key)):
            raise SettingError(
                f"resume: {out_dir} was run with {key} = {old.get(key)!r}, not "
                f"{new.get(key)!r}; give the same value, or a new out directory"
            )
    old["acquisitions"] = list(dict.fromkeys(old["acquisitions"] + new["acquisitions"]))
    old["seeds"] = list(dict.fromkeys(old["seeds"] + new["seeds"]))
    existing["complete"] = False
    return existing


def _with_defaults(key: str, value: Any) -> Any:
    """A recorded setting with the defaults filled in that older comparisons did not record."""
    if key == "optimizer_options" and isinstance(value, dict):
        return {"kernel": DEFAULT_KERNEL, **value}  # comparisons before kernels ran BoTorch's default
    if key == "in_flight" and value is None:
        return 1  # comparisons before asynchronous runs were sequential
    return value


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
    pending: set[Future] = set()
    try:
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(problem, ticks),
        ) as pool:
            pending = {pool.submit(_run_in_worker, name, seed, kwargs) for name, seed in tasks}
            try:
                while pending:
                    done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    _drain(ticks, bar)
                    for future in done:
                        record(future.result())
                        pending.discard(future)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    finally:
        _record_finished(pending, record)  # on failure: runs that finished meanwhile are kept
    _drain(ticks, bar)


def _run_ray(
    problem: ProblemSource,
    tasks: list[tuple[str, int]],
    address: str,
    kwargs: dict[str, Any],
    record: Callable[[dict[str, Any]], None],
    bar: tqdm,
) -> None:
    """Run ``tasks`` as Ray tasks (one CPU each), recording each run as it finishes.

    The problem goes into Ray's object store once; each Ray worker process builds it once
    (:func:`_ray_problem`). On an error or Ctrl-C the runs still in flight are cancelled and
    the finished ones are kept.
    """
    from compressbo._ray import connect

    ray = connect(address or None)
    remote = ray.remote(num_cpus=1, max_retries=0)(_run_as_ray_task)
    problem_ref = ray.put(problem)
    pending = {remote.remote(problem_ref, name, seed, kwargs): (name, seed) for name, seed in tasks}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            run = ray.get(done[0])
            pending.pop(done[0])
            record(run)
            bar.update(kwargs["iterations"])  # one tick per BO iteration, as the pool's
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


_RAY_PROBLEMS: dict[bytes, tuple[Problem | ProblemFamily, float]] = {}


def _ray_problem(problem: ProblemSource) -> tuple[Problem | ProblemFamily, float]:
    """``problem`` built once per Ray worker process, with the seconds it took."""
    key = pickle.dumps(problem)
    if key not in _RAY_PROBLEMS:
        started = time.perf_counter()
        built = _build(problem)
        _RAY_PROBLEMS[key] = (built, time.perf_counter() - started)
    return _RAY_PROBLEMS[key]


def _run_as_ray_task(problem: ProblemSource, acquisition: str, seed: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    built, setup_seconds = _ray_problem(problem)
    return {**run_one(built, acquisition, seed, **kwargs), "setup_seconds": setup_seconds}


def _record_finished(futures: set[Future], record: Callable[[dict[str, Any]], None]) -> None:
    """Record the runs among ``futures`` that finished but were not recorded yet."""
    for future in futures:
        if future.done() and not future.cancelled() and future.exception() is None:
            record(future.result())


def _save_interrupted(comparison: dict[str, Any], out_dir: Path) -> None:
    """Save the finished runs once more and say on stderr which they are and how to go on."""
    write_json_atomic(out_dir / RUNS_FILE, comparison, indent=1)
    print(_interrupted_message(comparison, out_dir), file=sys.stderr, flush=True)


def _interrupted_message(comparison: dict[str, Any], out_dir: Path) -> str:
    """One line: which runs of ``comparison`` are saved in ``out_dir`` and how to continue."""
    settings, runs = comparison["settings"], comparison["runs"]
    per_acquisition = ", ".join(
        f"{name} {sum(run['acquisition'] == name for run in runs)}/{len(settings['seeds'])}"
        for name in settings["acquisitions"]
    )
    total = len(settings["acquisitions"]) * len(settings["seeds"])
    return (
        f"compressbo: {len(runs)} of {total} runs finished and are saved in {out_dir / RUNS_FILE} "
        f"(seeds per acquisition: {per_acquisition}); continue with the same flags: "
        f"compressbo compare ... --out {shlex.quote(str(out_dir))} --resume"
    )


def _init_worker(problem: ProblemSource, ticks: Any) -> None:
    global _WORKER_PROBLEM, _WORKER_SETUP_SECONDS, _WORKER_TICKS
    exit_with_parent()  # no orphans: the worker ends when the parent dies, however it dies
    torch.set_num_threads(1)
    started = time.perf_counter()
    _WORKER_PROBLEM = _build(problem)
    _WORKER_SETUP_SECONDS = time.perf_counter() - started
    _WORKER_TICKS = ticks


def _run_in_worker(acquisition: str, seed: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    run = run_one(
        _WORKER_PROBLEM, acquisition, seed, on_step=lambda: _WORKER_TICKS.put(1), **kwargs
    )
    return {**run, "setup_seconds": _WORKER_SETUP_SECONDS}


def _drain(ticks: Any, bar: tqdm) -> None:
    count = 0
    while True:
        try:
            count += ticks.get_nowait()
        except queue.Empty:
            break
    if count:
        bar.update(count)


def _build(problem: ProblemSource) -> Problem | ProblemFamily:
    if isinstance(problem, (Problem, ProblemFamily)):
        return problem
    return problem()
