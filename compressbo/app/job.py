"""The main job: search per-layer ranks of a network with noise-aware BO, and report.

``compressbo compress`` is :func:`start` (a new run) or :func:`resume` (continue one); both
build a :class:`CompressionJob` from a :class:`CompressConfig` and run it to the end. The job
joins the two halves of compressbo, which know nothing of each other: the compression side
(spec -> network -> factor cache -> ``theta -> compressed network`` -> subsampled evaluator)
and the optimizer (a box and noisy numbers with known variances).

Every evaluation is appended to ``history.jsonl`` as it happens, and the optimizer state is
saved after every ask and every tell, so a run killed at any moment resumes with no
evaluation lost or repeated (see :meth:`CompressionJob.restore`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from compressbo.app.budget import budget_constraint, budget_summary
from compressbo.app.config import RESUMABLE_SETTINGS, CompressConfig
from compressbo.app.parallel import Parallel, evaluate_compression
from compressbo.app.frontier import FRONTIER, run_frontier
from compressbo.app.rundir import CONFIG, RunDirectory, package_versions
from compressbo.bo.loop import Evaluation, Loop, Proposal
from compressbo.bo.models.warping import KnownScale, needs_known_scale
from compressbo.bo.optimizer import Optimizer
from compressbo.compression.budget import budget_of, check_budget
from compressbo.compression.config import samples_range
from compressbo.compression.export import save_compressed
from compressbo.compression.lowrank import factorization
from compressbo.compression.setup import CompressionSetup, linear_schedule
from compressbo.app import verify
from compressbo.compression.spec import load_spec
from compressbo.exceptions import RunDirError, SettingError

__all__ = ["CompressConfig", "CompressionJob", "CompressionSetup", "start", "resume"]

logger = logging.getLogger(__name__)


def default_out(config: CompressConfig) -> Path:
    """``runs/<model>-<acq>-<timestamp>`` under the working directory."""
    stem = Path(config.model).stem
    return Path("runs") / f"{stem}-{config.acq}-{datetime.now():%Y%m%d-%H%M%S}"


def _verified_job(
    run: RunDirectory, config: dict[str, Any], settings: CompressConfig, *, progress: bool, trust_code: bool
) -> CompressionJob:
    """The job of a resumed run, after :func:`~compressbo.app.verify.verify_resume` (nothing written)."""
    recorded = config.get(verify.FINGERPRINTS)
    if isinstance(recorded, dict):  # the spec file first, before its builder could run
        verify.check_fingerprints(run.path, recorded, {"spec": load_spec(settings.model).sha256}, CONFIG)
    job = CompressionJob(settings, run, progress=progress, trust_code=trust_code)
    history = run.history(repair=False)
    path = run.path / "history.jsonl"
    raw = path.read_bytes() if path.exists() else b""
    lines = [line + b"\n" for line in raw.split(b"\n")[: len(history)]]  # a torn last line is no evaluation
    verify.verify_resume(
        run.path,
        config=config,
        state=run.load_state(),
        history=history,
        lines=lines,
        expected_optimizer=job.optimizer.state_dict(),
        fingerprints=job.setup.fingerprints,
        fixed=FIXED_SETTINGS,
    )
    return job


class CompressionJob:
    """One compression run: the network, its factors, the evaluator, the optimizer and the loop.

    Building it loads everything (spec, weights, data, factors), so bad input fails here,
    before any evaluation. The search is :class:`compressbo.bo.loop.Loop`, the same loop as
    every run of ``compressbo compare``; this class adds the run directory (every record
    appended to ``history.jsonl`` as it happens, the optimizer state saved after every ask
    and every tell) and the final stage.

    Args:
        config: The run's settings (validated here).
        run: Its run directory.
        progress: Show a tqdm progress bar.
        trust_code: Import a spec builder that is not on the allowlist (see
            :meth:`CompressionSetup.load`).
        parallel: Evaluate on several workers (processes or Ray actors); ``None``: in this
            process, one at a time.
    """

    def __init__(
        self, config: CompressConfig, run: RunDirectory, *, progress: bool = True, trust_code: bool = True,
        parallel: Parallel | None = None,
    ) -> None:
        self.config = config
        self.parallel = parallel
        self.trust_code = trust_code
        self.run = run
        self.progress = progress
        self.setup = CompressionSetup.load(
            config.problem(), config.runtime(), seed=config.seed, trust_code=trust_code,
            data_fingerprint=recorded_fingerprint(run, "data"),
        )
        self.spec, self.network, self.compressor = self.setup.spec, self.setup.network, self.setup.compressor
        surrogate, warp = config.resolved_surrogate(), config.resolved_warp()
        composite = surrogate == "composite"
        self.optimizer = Optimizer(
            self.setup.bounds,
            **{**config.search().optimizer_kwargs(), "warp": warp, "surrogate": surrogate},
            known_cost=self.compressor.cost_function(config.cost) if composite else None,
            cost_weight=config.gamma,
            constraint=budget_constraint(config, self.compressor),
            known_scale=KnownScale(*self.setup.scale_knots(warp)) if needs_known_scale(warp) else None,
        )
        start_m, end_m = samples_range(config.samples)
        self.objective = self.setup.objective(linear_schedule(start_m, end_m, self.budget))
        self.history: list[dict[str, Any]] = []
        self.loop = Loop(self.optimizer, self.evaluate, budget=self.budget, on_ask=self._asked, on_record=self._recorded)
        self._warned_known_optimum = False
        self._logged_warnings: set[str] = set()

    @property
    def budget(self) -> int:
        """Total number of evaluations: the initial design plus the BO iterations."""
        return self.optimizer.n_init + self.config.iterations

    def evaluate(self, x: torch.Tensor, index: int) -> Evaluation:
        """The loop's objective: evaluation ``index`` of ``theta = x`` on its own subsample."""
        return evaluate_compression(self.objective, x, index, budget=self.optimizer.constraint is not None)

    # ------------------------------------------------------------------ resume

    def restore(self) -> None:
        """Continue from the run directory: the history is the truth, the state a shortcut.

        The optimizer state is saved after every ask and tell; evaluations that reached the
        history but not the state (a crash between the two writes) are told again, and a
        point asked but never evaluated stays pending and is evaluated next.
        """
        self.history = self.run.history()
        state = self.run.load_state()
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            values = state.get("pending_acquisition_values", [state.get("pending_acquisition_value")])
            self.loop.restored_acquisition_values = list(values)
            if self.optimizer.warp != self.config.resolved_warp():
                raise ValueError(f"the state's warp {self.optimizer.warp!r} is not the config's {self.config.resolved_warp()!r}")
            indices = state.get("pending_indices")
        else:
            indices = None
        self._check_agreement()
        for record in self.history[self.optimizer.n_observed :]:
            self.optimizer.tell(
                torch.tensor(record["x"], dtype=torch.float64), record["y"], record["yvar"], modelled=_modelled(record)
            )
        done = {record["iteration"] for record in self.history}
        if indices is not None and None not in indices:  # the points in flight keep their indices, so their subsamples
            kept = [(i, v) for i, v in zip(indices, self.loop.restored_acquisition_values) if i not in done]
            self.loop.restored_indices = [int(i) for i, _ in kept]
            self.loop.restored_acquisition_values = [v for _, v in kept]
        self.loop.next_index = max([len(self.history), *(i + 1 for i in done), *(i + 1 for i in self.loop.restored_indices)])

    def _check_agreement(self) -> None:
        """The history and the optimizer state must tell one story; ValueError if not.

        The state may lag the history by the evaluations of one crash, never lead it, and
        the points it observed must be the history's first points in order.
        """
        iterations = [r.get("iteration") for r in self.history]
        if len(set(iterations)) != len(iterations) or not all(isinstance(i, int) and i >= 0 for i in iterations):
            raise ValueError("history.jsonl's iterations are not distinct evaluation indices")
        n = self.optimizer.n_observed
        thetas = torch.tensor([r["x"] for r in self.history[:n]], dtype=torch.float64).reshape(-1, self.optimizer.dim)
        if n > len(self.history) or not torch.allclose(self.optimizer.X, thetas, rtol=0, atol=1e-12):
            raise ValueError(
                f"the optimizer state holds {n} evaluations that are not the first ones of "
                f"history.jsonl ({len(self.history)} evaluations); was a file replaced or cut?"
            )

    def _save_state(self) -> None:
        in_flight = list(self.loop.in_flight.values())  # in the order of the optimizer's pending points
        in_flight = [next((p for p in in_flight if torch.equal(p.x, x)), None) for x in self.optimizer.pending]
        self.run.save_state(
            {
                "optimizer": self.optimizer.state_dict(),
                "pending_acquisition_values": [p.acquisition_value if p else None for p in in_flight],
                "pending_indices": [p.index if p else None for p in in_flight],
                "history": self.run.chain_record(),  # the head of the history's hash chain
                "run": verify.run_stamp(self.config.to_dict(), self.setup.fingerprints, FIXED_SETTINGS),
            }
        )

    # ------------------------------------------------------------------ the loop's hooks

    def _asked(self, proposal: Proposal) -> None:
        self._save_state()  # the new point is pending in the state, with its acquisition value

    def _recorded(self, record: dict[str, Any]) -> None:
        self.run.append(record)
        self.history.append(record)
        self._check_known_optimum(record)
        for message in record["warnings"]:
            if message not in self._logged_warnings:
                self._logged_warnings.add(message)
                logger.warning("evaluation %d: %s", record["iteration"], message)
        self._save_state()

    def _check_known_optimum(self, record: dict[str, Any]) -> None:
        """Warn once when an observation lies clearly below the known optimum."""
        f_star = self.config.known_optimum
        if f_star is None or self._warned_known_optimum:
            return
        if record["y"] < f_star - 3 * math.sqrt(record["yvar"]):
            self._warned_known_optimum = True
            logger.warning(
                "--known-optimum %g is above the observed objective %.4g (by more than 3 noise std): "
                "%s assumes f* is the minimum, so its proposals are unreliable; rerun with a lower value",
                f_star, record["y"], self.config.acq,
            )

    def step(self) -> dict[str, Any] | None:
        """Ask, evaluate on a fresh subsample, tell, and record one evaluation.

        Returns:
            The evaluation's record, or ``None`` when the budget is spent or the proposal
            fell below ``kappa``: the paper's rule stops there, without spending the evaluation.
        """
        return self.loop.step()

    def search(self) -> None:
        """Evaluate until the budget is spent or the kappa criterion says stop."""
        bar = tqdm(
            total=self.budget,
            initial=len(self.history),
            desc=f"{self.spec.name} {self.config.acq}",
            unit="eval",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        best = min((r["y"] for r in self.history), default=math.inf)
        def show(record: dict[str, Any]) -> None:
            nonlocal best
            best = min(best, record["y"])
            bar.set_postfix(y=f"{record['y']:.4f}", best=f"{best:.4f}", refresh=False)
            bar.update(1)

        with bar:
            if self.parallel is not None:
                from compressbo.bo.asynchronous import run_async

                run_async(self.loop, self.parallel.executor(self), on_record=show)
            else:
                for record in iter(self.step, None):
                    show(record)
        if self.optimizer.should_stop:
            logger.warning(
                "stopped after %d evaluations: the maximized %s of the next proposal fell below kappa = %g",
                len(self.history),
                self.config.acq,
                self.config.kappa,
            )

    def finish(self) -> dict[str, Any]:
        """Score the recommendation on the final examples and write the artifacts.

        The final examples are the full validation set, or a fixed seeded subset of
        ``config.final_samples``. The original network's error on them is computed once per
        (weights, data, examples) and cached in the run directory (:mod:`.final_stage`). The
        HOOI-refined Tucker-2 model replaces the recommendation only when a paired exact sign
        test (McNemar's, over the scored examples) finds its improvement significant at
        :data:`~compressbo.compression.objective.REFINEMENT_ALPHA`, not by one example.
        """
        from compressbo.app import run_report
        from compressbo.app.deploy import measure_run_latency
        from compressbo.app.final_stage import cached_original_error, original_key
        from compressbo.compression.objective import REFINEMENT_ALPHA, sign_test

        rec = self.loop.recommendation()
        theta = torch.tensor(rec["x"], dtype=torch.float64)
        compressed = self.compressor.compress(theta)
        evaluator = self.setup.evaluator
        indices = evaluator.final_indices(self.config.final_samples)
        key = original_key(
            weights=[self.config.weights or self.spec.weights, self.setup.fingerprints.get("weights")],
            data=evaluator.dataset.fingerprint(),
            indices=indices,
            amp=self.config.amp,
            model=self.spec.name,
        )
        original_error = cached_original_error(self.run, self.objective, indices, key)
        scored = self.objective.score(compressed, indices, what="the recommended network", original_error=original_error)
        metrics = scored.metrics
        refinement = None
        if any(factorization(r.method).refinable and not r.kept for r in compressed.layers):  # HOOI, kept if significant
            logger.info("refining the Tucker-2 layers of the recommendation by HOOI")
            refined = self.compressor.build(compressed.ranks, refine=True)
            refined_scored = self.objective.score(
                refined, indices, what="the HOOI-refined network", original_error=original_error
            )
            test = sign_test(scored.losses, refined_scored.losses)
            kept = refined_scored.metrics["score"] < metrics["score"] and test["p_value"] < REFINEMENT_ALPHA
            refinement = {
                "method": "hooi",
                "score_before": metrics["score"],
                "score_after": refined_scored.metrics["score"],
                "error_before": metrics["error"],
                "error_after": refined_scored.metrics["error"],
                "test": "exact one-sided paired sign test (McNemar's for errors) over the scored examples",
                **test,
                "alpha": REFINEMENT_ALPHA,
                "kept": kept,
            }
            if kept:
                compressed, metrics = refined, refined_scored.metrics
        best = {
            "theta": rec["x"],
            "posterior_mean": rec["mean"],
            "posterior_std": rec["std"],
            "evaluations": len(self.history),
            "stopped_by_kappa": self.optimizer.should_stop,
            **metrics,
            "final_samples": self.config.final_samples,
            "validation_size": len(evaluator),
            "layers": [dataclasses.asdict(layer) for layer in compressed.layers],
            "refinement": refinement,
        }
        if (budget := budget_of(self.config)) is not None:
            best["budget"] = budget_summary(budget, self.compressor, theta, metrics)
        if (frontier := run_frontier(self, rec["x"])) is not None:  # the predicted trade-off curve
            self.run.write_json(FRONTIER, frontier)
        model = save_compressed(self.run.path / "model", self.spec, compressed)  # before best.json, which marks
        best["model_sha256"] = json.loads(model.read_text())["state_dict_sha256"]  # a finished run
        best["latency"] = measure_run_latency(self.network, compressed.module, self.spec.input_size, self.setup.evaluator)
        self.run.write_json("best.json", best)
        run_report.write_artifacts(self.run.path, self.history, best, self.config.to_dict())
        return best

    def execute(self) -> dict[str, Any]:
        """Search, then finish; Ctrl-C leaves a resumable run behind."""
        self.search()
        return self.finish()


def _modelled(record: dict[str, Any]) -> tuple[float, float] | None:
    """``(error or distance, its variance)`` of a history record (None before it was recorded)."""
    if record.get("variance") is None:
        return None
    measure = record["error"] if record.get("distance") is None else record["distance"]
    return measure, record["variance"]


def recorded_fingerprint(run: RunDirectory, key: str) -> dict[str, Any] | None:
    """``config.json``'s ``fingerprints[key]`` (``None`` for a run that recorded none)."""
    fingerprints = run.config.get("fingerprints")
    return fingerprints.get(key) if isinstance(fingerprints, dict) else None


def start(
    config: CompressConfig, out: str | Path | None = None, *, progress: bool = True, parallel: Parallel | None = None
) -> tuple[Path, dict]:
    """Run a new compression job in ``out`` (default :func:`default_out`), on ``parallel``'s workers if given."""
    config.validate()
    check_budget(config)  # an unachievable budget is refused before anything is loaded
    # recorded, so a later default cannot change the run
    config.warp, config.surrogate = config.resolved_warp(), config.resolved_surrogate()
    out = out if out is not None else default_out(config)  # '' reaches the check as given
    document = {"settings": config.to_dict(), "versions": package_versions()}
    run = RunDirectory.create(out, document)
    try:
        job = CompressionJob(config, run, progress=progress, parallel=parallel)
        run.write_json(CONFIG, {**document, verify.FINGERPRINTS: job.setup.fingerprints})
    except BaseException:
        run.discard_if_empty()
        raise
    try:
        return run.path, job.execute()
    finally:
        run.close()


RESUME_OVERRIDES = RESUMABLE_SETTINGS  # how long and where, not what

# the settings that define a run: --resume refuses a config.json whose values are not the run's
FIXED_SETTINGS = tuple(
    field.name for field in dataclasses.fields(CompressConfig)
    if field.name not in (*RESUMABLE_SETTINGS, "data_dir", "download")
)


def resume(
    directory: str | Path, *, progress: bool = True, trust_code: bool = False, parallel: Parallel | None = None,
    **overrides: Any,
) -> tuple[Path, dict]:
    """Continue the run in ``directory`` with its own settings, once it checks out.

    The run directory is verified first (:func:`compressbo.app.verify.verify_resume`): a
    disagreement between config.json, the optimizer state, the history and what the run is
    built from is refused before anything is written.

    Args:
        directory: The run directory.
        progress: Show a tqdm progress bar.
        trust_code: Import the spec's builder even if it is not on the allowlist (config.json
            names the spec, so by default only torchvision and compressbo builders run).
        parallel: Evaluate on several workers (any number, whatever the run used before).
        **overrides: Settings that may change on resume (:data:`RESUME_OVERRIDES`; ``None``
            keeps the run's own): more ``iterations`` extend the run, ``device`` and
            ``batch_size`` say where and how it evaluates (e.g. resuming a GPU run on a CPU).
    """
    unknown = set(overrides) - set(RESUME_OVERRIDES)
    if unknown:
        raise TypeError(f"resume() cannot override {sorted(unknown)}; only {RESUME_OVERRIDES}")
    run = RunDirectory.open(directory)
    try:
        return _resume(run, progress=progress, trust_code=trust_code, overrides=overrides, parallel=parallel)
    finally:
        run.close()


def _resume(
    run: RunDirectory, *, progress: bool, trust_code: bool, overrides: dict[str, Any], parallel: Parallel | None = None
) -> tuple[Path, dict]:
    """:func:`resume` once the run directory is open (and locked)."""
    config = run.config
    saved = config.get("settings")
    if not isinstance(saved, dict):
        raise RunDirError(f"{run.path}: its config.json was not written by compressbo compress; it cannot be resumed")
    changes = {name: value for name, value in overrides.items() if value is not None and value != saved.get(name)}
    iterations, old = changes.get("iterations"), saved.get("iterations")
    if iterations is not None and isinstance(old, int) and iterations < old:
        raise SettingError(
            f"iterations {iterations} on resume: the run already has {saved['iterations']}; "
            "it can only be extended",
            setting="iterations",
        )
    settings = CompressConfig.from_dict({**saved, **changes})
    job = _verified_job(run, config, settings, progress=progress, trust_code=trust_code)
    job.parallel = parallel
    try:
        job.restore()
    except (KeyError, TypeError, ValueError) as err:
        raise RunDirError(f"{run.path}: its history or state is damaged ({type(err).__name__}: {err}); it cannot be resumed") from None
    if changes:  # only once the run checked out: record the new budget or device
        run.write_json(CONFIG, {**run.config, "settings": settings.to_dict()})
    return run.path, job.execute()
