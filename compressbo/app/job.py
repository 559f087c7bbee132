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
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from compressbo.bo.acquisition import acquisition_spec
from compressbo.bo.models.warping import WARP_NAMES
from compressbo.compression.data import DATASET_NAMES, load_validation
from compressbo.exceptions import SettingError, UserInputError
from compressbo.compression.objective import OBJECTIVES, CompressionObjective
from compressbo.compression.evaluator import SubsampleEvaluator, resolve_device
from compressbo.compression.compressor import Compressor
from compressbo.compression.cost import COSTS
from compressbo.compression.spec import NetworkSpec, load_spec
from compressbo.compression.build import build_network, preprocessing
from compressbo.compression.export import save_compressed
from compressbo.bo.optimizer import SURROGATES, Optimizer, applicable_warp
from compressbo.app.rundir import CONFIG, RunDirectory, package_versions

__all__ = ["CompressConfig", "CompressionJob", "CompressionSetup", "start", "resume"]

logger = logging.getLogger(__name__)

# GP input warping of compression runs that name none: measured best on FC3's wide box
# (docs/RESULTS.md, "Input warping"); synthetic problems keep "none"
DEFAULT_WARP = "log"
DATA_SEED = 0  # seed of the digits split and of FC3's first-use training: one network per spec


@dataclass
class CompressConfig:
    """Every setting of a compression run (written to ``config.json``).

    Attributes:
        model: Spec name in ``models/`` or a path to a spec file.
        weights: ``None`` (the spec's default), ``"random"``, a torchvision weights name
            (e.g. ``IMAGENET1K_V1``) or a ``.pth`` state dict.
        data: Dataset name (``digits``, ``mnist``, ``imagenet``); default: the spec's.
        data_dir: Directory of the MNIST or ImageNet files.
        download: Allow downloading MNIST into ``data_dir`` (never done otherwise).
        acq: Acquisition function name.
        iterations: BO iterations after the initial design.
        init: Initial Sobol points (default: the optimizer's ``max(5, 2d)``).
        samples: Validation examples per evaluation (``m``), or ``"START:END"`` for ``m``
            growing linearly from START at the first evaluation to END at the last.
        gamma: Weight of the error against the compression ratio.
        objective: ``error`` (top-1 error) or ``distill`` (logit distance to the original).
        kappa: Stop when the maximized acquisition value falls below it.
        known_optimum: The optimal objective value ``f*`` the known-optimum acquisitions
            (``erm``, ``cbm``) need.
        seed: Seed of the optimizer and of the subsample sequence.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: Evaluation batch size (default: chosen for the device).
        amp: Evaluate under autocast.
        bounds: ``(lo, hi)`` for every layer, overriding the spec's bounds.
        scheme: Rank scheme (``params`` or ``plain``), overriding the spec's.
        method: Conv factorization (``tucker2`` or ``vh``), overriding the spec's.
        num_restarts: L-BFGS-B restarts of the acquisition maximization.
        raw_samples: Raw Sobol samples seeding the restarts.
        warp: The GP's input warping (``none``, ``log``, ``learned``; see
            ``compressbo.bo.models.warping``); ``None`` is :data:`DEFAULT_WARP` where the
            acquisition takes one (``none`` for eign). A started run records the one it uses.
        cost: The known cost term of the objective: ``params`` (the compressed layers'
            parameter ratio) or ``flops`` (their multiply-accumulate ratio at the spec's
            ``input_size``); see ``compressbo.compression.cost``.
        surrogate: ``sum`` (the GP models ``cost + gamma * error``) or ``composite`` (the
            GP models the error alone; the objective's posterior adds the known cost).
    """

    model: str = "fc3"
    weights: str | None = None
    data: str | None = None
    data_dir: str | None = None
    download: bool = False
    acq: str = "cei"
    iterations: int = 30
    init: int | None = None
    samples: int | str = 200
    gamma: float = 1.0
    objective: str = "error"
    kappa: float | None = None
    known_optimum: float | None = None
    seed: int = 0
    device: str = "auto"
    batch_size: int | None = None
    amp: bool = False
    bounds: tuple[float, float] | None = None
    scheme: str | None = None
    method: str | None = None
    num_restarts: int = 10
    raw_samples: int = 512
    warp: str | None = None
    cost: str = "params"
    surrogate: str = "sum"

    def validate(self) -> None:
        """Check what can be checked without loading anything; raise :class:`UserInputError`."""
        spec = acquisition_spec(self.acq)  # names the valid acquisitions when unknown
        if self.kappa is not None and not spec.vanishes_when_done:
            raise UserInputError(
                f"--kappa does not apply to {self.acq} (its maximized value does not fall to 0 as "
                "the search converges); drop --kappa or use an improvement acquisition such as cei"
            )
        if self.known_optimum is not None and not spec.known_optimum:
            raise UserInputError(f"--known-optimum applies to erm and cbm, not to {self.acq}; drop it or choose one of those")
        if spec.known_optimum and self.known_optimum is None:
            raise UserInputError(
                f"--acq {self.acq} needs --known-optimum VALUE, the objective's optimum (a lower "
                "bound you believe is attained)"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise UserInputError(f"--seed must be an integer in 0..2^63-1, got {self.seed}")
        if self.objective not in OBJECTIVES:
            raise UserInputError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.data is not None and self.data not in DATASET_NAMES:
            raise UserInputError(f"unknown dataset {self.data!r}; choose one of {', '.join(DATASET_NAMES)}")
        if self.iterations < 0:
            raise UserInputError(f"--iterations must be >= 0, got {self.iterations}")
        if self.init is not None and self.init < 1:
            raise UserInputError(f"--init must be >= 1, got {self.init}")
        first, last = samples_range(self.samples)
        if self.objective == "distill" and min(first, last) < 2:
            raise UserInputError(
                f"--objective distill needs --samples of at least 2 (its variance is a sample "
                f"variance), got {self.samples}"
            )
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise UserInputError(f"--gamma must be a non-negative number, got {self.gamma}")
        if self.kappa is not None and not (math.isfinite(self.kappa) and self.kappa > 0):
            raise UserInputError(f"--kappa must be a positive number, got {self.kappa}")
        resolve_device(self.device)
        if self.batch_size is not None and self.batch_size < 1:
            raise UserInputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.num_restarts < 1 or self.raw_samples < self.num_restarts:
            raise UserInputError(
                f"--num-restarts {self.num_restarts} and --raw-samples {self.raw_samples}: need "
                "num_restarts >= 1 and raw_samples >= num_restarts"
            )
        if self.surrogate not in SURROGATES:
            raise SettingError(f"unknown --surrogate {self.surrogate!r}; choose one of {', '.join(SURROGATES)}", setting="surrogate")
        if self.surrogate == "composite" and not spec.composite:
            raise SettingError(f"--acq {self.acq} needs --surrogate sum (it works on a GP of the objective itself)", setting="surrogate")
        if self.cost not in COSTS:
            raise SettingError(f"unknown --cost {self.cost!r}; choose one of {', '.join(COSTS)}", setting="cost")
        if self.warp is not None:
            if self.warp not in WARP_NAMES:
                raise SettingError(f"unknown --warp {self.warp!r}; choose one of {', '.join(WARP_NAMES)}", setting="warp")
            if self.warp != applicable_warp(self.acq, self.warp):
                raise SettingError(f"--acq {self.acq} takes --warp none, not {self.warp}", setting="warp")
        if self.bounds is not None:
            lo, hi = self.bounds
            if not 0 < lo < hi <= 1:
                raise UserInputError(
                    f"--bounds {lo} {hi} must satisfy 0 < lo < hi <= 1 (theta is the fraction of a layer's parameters kept)"
                )

    def resolved_warp(self) -> str:
        """The GP input warping this run uses (``warp``, or the default for ``acq``)."""
        return applicable_warp(self.acq, DEFAULT_WARP) if self.warp is None else self.warp

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> CompressConfig:
        """The config saved by :meth:`to_dict`, validated (a damaged one raises UserInputError)."""
        names = {field.name for field in dataclasses.fields(cls)}
        try:
            config = cls(**{k: v for k, v in settings.items() if k in names})
            if config.bounds is not None:
                config.bounds = tuple(config.bounds)
            config.validate()
        except UserInputError:
            raise  # e.g. the saved device is not here: the message names the flag to pass
        except (TypeError, ValueError) as err:
            raise UserInputError(f"the saved settings are damaged ({err}); start a new run") from None
        return config


def samples_range(samples: int | str) -> tuple[int, int]:
    """``(m at the first evaluation, m at the last)`` from ``--samples M`` or ``START:END``."""
    match = re.fullmatch(r"([0-9]+)(?::([0-9]+))?", str(samples))
    first, last = (int(match[1]), int(match[2] or match[1])) if match else (0, 0)
    if first < 1 or last < 1:
        raise UserInputError(f"--samples {samples} must be a positive integer M or a range START:END of them")
    return first, last


def linear_schedule(first: int, last: int, evaluations: int) -> Callable[[int], int]:
    """``m`` of evaluation ``i``: ``first`` at ``i = 0``, ``last`` at ``i = evaluations - 1``, linear between.

    Every observation carries its own variance ``~ p(1-p)/m``, so the GP weighs late, larger
    subsamples more.
    """
    span = max(evaluations - 1, 1)
    return lambda i: round(first + (last - first) * min(i, span) / span)


def default_out(config: CompressConfig) -> Path:
    """``runs/<model>-<acq>-<timestamp>`` under the working directory."""
    stem = Path(config.model).stem
    return Path("runs") / f"{stem}-{config.acq}-{datetime.now():%Y%m%d-%H%M%S}"


@dataclass
class CompressionSetup:
    """What a compression objective needs, loaded once from a :class:`CompressConfig`.

    Shared by the compress job and by comparisons on compression problems.

    Attributes:
        config: The settings it was loaded from.
        spec: The network spec.
        network: The original network (weights loaded, eval mode).
        compressor: Its cached factors: ``theta -> compressed network``.
        evaluator: The subsampled evaluator on the validation set.
        bounds: ``2 x d`` box of ``theta`` (the spec's, or ``config.bounds`` for every layer).
    """

    config: CompressConfig
    spec: NetworkSpec
    network: nn.Module
    compressor: Compressor
    evaluator: SubsampleEvaluator
    bounds: torch.Tensor

    @classmethod
    def load(cls, config: CompressConfig) -> CompressionSetup:
        """Load spec, data, weights and factors (bad input raises :class:`UserInputError`)."""
        config.validate()
        spec = load_spec(config.model)
        dataset = load_validation(
            config.data or spec.dataset,
            config.data_dir,
            transform=preprocessing(spec, config.weights),
            download=config.download,
            seed=DATA_SEED,
        )
        evaluator = SubsampleEvaluator(
            dataset, device=config.device, batch_size=config.batch_size, amp=config.amp, seed=config.seed
        )
        if max(samples_range(config.samples)) > len(dataset):
            raise UserInputError(
                f"--samples {config.samples} asks for more than the {len(dataset)} validation examples; "
                "choose a smaller m"
            )
        network = build_network(spec, _resolve_weights(config, spec))
        compressor = Compressor(network, spec, scheme=config.scheme, method=config.method)
        # once, so the layers every compressed network shares with it are already there
        network.to(evaluator.device)
        bounds = compressor.bounds
        if config.bounds is not None:
            bounds = torch.tensor(config.bounds, dtype=torch.float64).reshape(2, 1).expand(2, compressor.dim).clone()
        return cls(config, spec, network, compressor, evaluator, bounds)

    def objective(self, samples: int | Callable[[int], int] | None = None) -> CompressionObjective:
        """The objective ``ratio + gamma * error`` (or distill) with ``m`` from ``samples``.

        Args:
            samples: ``m``, or a schedule ``evaluation index -> m``; default ``config.samples``
                (its first value for a ``START:END`` range).
        """
        return CompressionObjective(
            self.compressor,
            self.evaluator,
            gamma=self.config.gamma,
            objective=self.config.objective,
            samples=samples if samples is not None else samples_range(self.config.samples)[0],
            reference=self.network,
            cost=self.config.cost,
        )


def _modelled(record: dict[str, Any]) -> tuple[float, float] | None:
    """``(error or distance, its variance)`` of a history record (None before it was recorded)."""
    if record.get("variance") is None:
        return None
    measure = record["error"] if record.get("distance") is None else record["distance"]
    return measure, record["variance"]


def _resolve_weights(config: CompressConfig, spec: NetworkSpec) -> str | None:
    """``config.weights`` or the spec's; ``"train"`` becomes FC3 trained on first use and cached."""
    weights = config.weights or spec.weights
    if weights == "train":
        from compressbo.compression.training import pretrained_fc3_weights

        # logs its validation error, and whether it trained or came from the cache
        return str(pretrained_fc3_weights(spec.name, config.data or spec.dataset, DATA_SEED).path)
    if weights == "random":
        logger.warning("--weights random: the network is untrained, so its accuracy is meaningless")
    return weights


class CompressionJob:
    """One compression run: the network, its factors, the evaluator and the optimizer.

    Building it loads everything (spec, weights, data, factors), so bad input fails here,
    before any evaluation.

    Args:
        config: The run's settings (validated here).
        run: Its run directory.
        progress: Show a tqdm progress bar.
    """

    def __init__(self, config: CompressConfig, run: RunDirectory, *, progress: bool = True) -> None:
        self.config = config
        self.run = run
        self.progress = progress
        self.setup = CompressionSetup.load(config)
        self.spec, self.network, self.compressor = self.setup.spec, self.setup.network, self.setup.compressor
        self.optimizer = Optimizer(
            self.setup.bounds,
            acquisition=config.acq,
            n_init=config.init,
            seed=config.seed,
            kappa=config.kappa,
            acquisition_options=None if config.known_optimum is None else {"f_star": config.known_optimum},
            num_restarts=config.num_restarts,
            raw_samples=config.raw_samples,
            warp=config.resolved_warp(),
            surrogate=config.surrogate,
            known_cost=self.compressor.cost_function(config.cost) if config.surrogate == "composite" else None,
            cost_weight=config.gamma,
        )
        start_m, end_m = samples_range(config.samples)
        self.objective = self.setup.objective(linear_schedule(start_m, end_m, self.budget))
        self.history: list[dict[str, Any]] = []
        self.pending_acquisition_value: float | None = None
        self._warned_known_optimum = False

    @property
    def budget(self) -> int:
        """Total number of evaluations: the initial design plus the BO iterations."""
        return self.optimizer.n_init + self.config.iterations

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
            if self.optimizer.warp != self.config.resolved_warp():
                raise ValueError(f"the state's warp {self.optimizer.warp!r} is not the config's {self.config.resolved_warp()!r}")
            self.pending_acquisition_value = state.get("pending_acquisition_value")
        self._check_agreement()
        for record in self.history[self.optimizer.n_observed :]:
            self.optimizer.tell(
                torch.tensor(record["theta"], dtype=torch.float64), record["y"], record["yvar"],
                modelled=_modelled(record),
            )
        evaluations = len(self.history)
        self.objective.load_state_dict(
            {"evaluations": evaluations, "evaluator": {"seed": self.config.seed, "draws": evaluations}}
        )

    def _check_agreement(self) -> None:
        """The history and the optimizer state must tell one story; ValueError if not.

        The state may lag the history by the evaluations of one crash, never lead it, and
        the points it observed must be the history's first points in order.
        """
        if [r.get("iteration") for r in self.history] != list(range(len(self.history))):
            raise ValueError("history.jsonl's iterations are not 0, 1, 2, ...")
        n = self.optimizer.n_observed
        thetas = torch.tensor([r["theta"] for r in self.history[:n]], dtype=torch.float64).reshape(-1, self.optimizer.dim)
        if n > len(self.history) or not torch.allclose(self.optimizer.X, thetas, rtol=0, atol=1e-12):
            raise ValueError(
                f"the optimizer state holds {n} evaluations that are not the first ones of "
                f"history.jsonl ({len(self.history)} evaluations); was a file replaced or cut?"
            )

    def _save_state(self) -> None:
        self.run.save_state(
            {
                "optimizer": self.optimizer.state_dict(),
                "pending_acquisition_value": self.pending_acquisition_value,
            }
        )

    # ------------------------------------------------------------------ the loop

    def _next_point(self) -> tuple[torch.Tensor, float | None, float]:
        """The pending point left by an interruption, or a new proposal."""
        started = time.perf_counter()
        if len(self.optimizer.pending):
            return self.optimizer.pending[0].clone(), self.pending_acquisition_value, 0.0
        x = self.optimizer.ask()
        self.pending_acquisition_value = self.optimizer.last_acquisition_value
        self._save_state()
        return x, self.pending_acquisition_value, time.perf_counter() - started

    def step(self) -> dict[str, Any] | None:
        """Ask, evaluate on a fresh subsample, tell, and record one evaluation.

        Returns:
            The evaluation's record, or ``None`` when the proposal fell below ``kappa``:
            the paper's rule stops there, without spending the evaluation.
        """
        x, acquisition_value, seconds_ask = self._next_point()
        if self.optimizer.should_stop:
            return None
        observation = self.objective(x)
        started = time.perf_counter()
        self.optimizer.tell(x, observation.y, observation.yvar, modelled=observation.modelled())
        recommended = self._recommended()
        seconds_bo = seconds_ask + time.perf_counter() - started
        iteration = len(self.history)
        record = {
            "iteration": iteration,
            "phase": "init" if iteration < self.optimizer.n_init else "bo",
            "theta": x.tolist(),
            **observation.to_dict(),
            "acquisition_value": acquisition_value,
            "seconds_bo": seconds_bo,
            "recommended": recommended,
        }
        self.run.append(record)
        self.history.append(record)
        self._check_known_optimum(record)
        self.pending_acquisition_value = None
        self._save_state()
        return record

    def _check_known_optimum(self, record: dict[str, Any]) -> None:
        """Warn once when an observation lies clearly below ``--known-optimum``."""
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

    def _recommended(self) -> dict[str, Any]:
        """The current recommendation (the lowest posterior mean; the only point at n = 1)."""
        if self.optimizer.n_observed < 2:
            return {"theta": self.optimizer.X[0].tolist(), "mean": self.optimizer.Y[0].item(), "std": None}
        rec = self.optimizer.recommend()
        return {"theta": rec.x.tolist(), "mean": rec.mean, "std": rec.std}

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
        with bar:
            while len(self.history) < self.budget and not self.optimizer.should_stop:
                record = self.step()
                if record is None:
                    break
                best = min(best, record["y"])
                bar.set_postfix(y=f"{record['y']:.4f}", best=f"{best:.4f}", refresh=False)
                bar.update(1)
        if self.optimizer.should_stop:
            logger.warning(
                "stopped after %d evaluations: the maximized %s of the next proposal fell below kappa = %g",
                len(self.history),
                self.config.acq,
                self.config.kappa,
            )

    def finish(self) -> dict[str, Any]:
        """Evaluate the recommendation on the full validation set and write the artifacts."""
        from compressbo.app import run_report

        rec = self._recommended()
        theta = torch.tensor(rec["theta"], dtype=torch.float64)
        compressed = self.compressor.compress(theta)
        metrics = self.objective.full_metrics(theta, compressed)
        refinement = None
        if self.compressor.refinable:  # HOOI for the Tucker-2 layers, kept if the full set agrees
            refined = self.compressor.build(compressed.ranks, refine=True)
            refined_metrics = self.objective.full_metrics(theta, refined)
            kept = refined_metrics["score"] < metrics["score"]
            refinement = {
                "method": "hooi",
                "score_before": metrics["score"],
                "score_after": refined_metrics["score"],
                "error_before": metrics["error"],
                "error_after": refined_metrics["error"],
                "kept": kept,
            }
            if kept:
                compressed, metrics = refined, refined_metrics
        best = {
            "theta": rec["theta"],
            "posterior_mean": rec["mean"],
            "posterior_std": rec["std"],
            "evaluations": len(self.history),
            "stopped_by_kappa": self.optimizer.should_stop,
            **metrics,
            "layers": [dataclasses.asdict(layer) for layer in compressed.layers],
            "refinement": refinement,
        }
        self.run.write_json("best.json", best)
        save_compressed(self.run.path / "model", self.spec, compressed)
        run_report.write_artifacts(self.run.path, self.history, best, self.config.to_dict())
        return best

    def execute(self) -> dict[str, Any]:
        """Search, then finish; Ctrl-C leaves a resumable run behind."""
        self.search()
        return self.finish()


def start(config: CompressConfig, out: str | Path | None = None, *, progress: bool = True) -> tuple[Path, dict]:
    """Run a new compression job in ``out`` (default :func:`default_out`)."""
    config.validate()
    config.warp = config.resolved_warp()  # recorded, so a later default cannot change the run
    out = out if out is not None else default_out(config)  # '' reaches the check as given
    run = RunDirectory.create(out, {"settings": config.to_dict(), "versions": package_versions()})
    try:
        job = CompressionJob(config, run, progress=progress)
    except BaseException:
        run.discard_if_empty()
        raise
    return run.path, job.execute()


RESUME_OVERRIDES = ("iterations", "device", "batch_size")  # how long and where, not what


def resume(directory: str | Path, *, progress: bool = True, **overrides: Any) -> tuple[Path, dict]:
    """Continue the run in ``directory`` with its own settings.

    Args:
        directory: The run directory.
        progress: Show a tqdm progress bar.
        **overrides: Settings that may change on resume (:data:`RESUME_OVERRIDES`; ``None``
            keeps the run's own): more ``iterations`` extend the run, ``device`` and
            ``batch_size`` say where and how it evaluates (e.g. resuming a GPU run on a CPU).
    """
    unknown = set(overrides) - set(RESUME_OVERRIDES)
    if unknown:
        raise TypeError(f"resume() cannot override {sorted(unknown)}; only {RESUME_OVERRIDES}")
    run = RunDirectory.open(directory)
    config = run.config
    saved = config.get("settings")
    if not isinstance(saved, dict):
        raise UserInputError(f"--resume {run.path}: its config.json was not written by compressbo compress")
    changes = {name: value for name, value in overrides.items() if value is not None and value != saved.get(name)}
    iterations, old = changes.get("iterations"), saved.get("iterations")
    if iterations is not None and isinstance(old, int) and iterations < old:
        raise UserInputError(
            f"--iterations {iterations} with --resume: the run already has {saved['iterations']}; "
            "it can only be extended"
        )
    # runs from before warping have no "warp": they fitted the GP on theta itself
    settings = CompressConfig.from_dict({"warp": "none", **saved, **changes})
    job = CompressionJob(settings, run, progress=progress)
    try:
        job.restore()
    except (KeyError, TypeError, ValueError) as err:
        raise UserInputError(f"--resume {run.path}: its history or state is damaged ({type(err).__name__}: {err})") from None
    if changes:  # only once the run checked out: record the new budget or device
        run.write_json(CONFIG, {**config, "settings": settings.to_dict()})
    return run.path, job.execute()
