"""From search to deployment: ``compressbo finetune``, ``export`` and ``bench`` on a finished run.

A finished ``compress`` run directory holds ``best.json`` and the recommended network in
``model/``. These commands work on it:

* ``finetune RUN``: trains ``model/`` on the training split of the run's dataset
  (:mod:`compressbo.compression.finetune`), checkpointing every epoch into
  ``finetune_checkpoint/`` (``--resume`` continues), and writes ``finetuned/`` (loadable with
  :func:`~compressbo.compression.export.load_compressed`), a ``finetune`` entry in ``best.json``
  and its section of ``report.md``;
* ``export RUN --format onnx|torchscript|state-dict [--finetuned]``: one file in
  ``export/``, checked against PyTorch (:mod:`compressbo.compression.formats`);
* ``bench RUN``: the latency of the original and the compressed network measured again, here
  (:mod:`compressbo.compression.latency`).

Every finished ``compress`` run also measures that latency on its own device
(:func:`measure_run_latency`, called by the job).

Each command is a pair ``add_<name>_parser`` / ``run_<name>`` registered in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressbo.app.deploy_report import format_ms, threads_label
from compressbo.exceptions import ReportedInterrupt, RunDirError, SettingError

if TYPE_CHECKING:
    from torch import nn

    from compressbo.app.config import CompressConfig
    from compressbo.compression.evaluator import SubsampleEvaluator
    from compressbo.compression.spec import NetworkSpec

__all__ = ["COMMANDS", "FinishedRun", "export_run", "bench_run", "finetune_run", "measure_run_latency"]

PROG = "compressbo"
MODEL, FINETUNED, CHECKPOINT, EXPORT = "model", "finetuned", "finetune_checkpoint", "export"


# ----------------------------------------------------------------------------- latency of a run


def measure_run_latency(
    original: nn.Module, compressed: nn.Module, input_size: Sequence[int], evaluator: SubsampleEvaluator
) -> dict[str, Any]:
    """Latency of both networks on the run's device at batch size 1 and at the run's batch size."""
    from compressbo.compression.latency import compare_latency

    return compare_latency(original, compressed, input_size, batch_sizes=(1, evaluator.batch_size), device=evaluator.device)


# ----------------------------------------------------------------------------- a finished run


@dataclass
class FinishedRun:
    """A finished compress run directory: its settings, spec and ``best.json``.

    Attributes:
        path: The run directory.
        config: Its settings.
        spec: The network spec (with the run's ``method`` override).
        best: ``best.json``.
        trust_code: Import the spec's builder even if it is not on the allowlist.
    """

    path: Path
    config: CompressConfig
    spec: NetworkSpec
    best: dict[str, Any]
    trust_code: bool = False

    @classmethod
    def open(cls, directory: str | Path, *, trust_code: bool = False) -> FinishedRun:
        """Open ``directory``; :class:`RunDirError` if it is not a finished compress run."""
        from compressbo.app.config import CompressConfig
        from compressbo.compression.spec import load_spec

        path = Path(directory)
        needed = [path / "config.json", path / "best.json", path / MODEL / "compressed.json"]
        missing = next((p for p in needed if not p.is_file()), None)
        if missing is not None:
            raise RunDirError(
                f"{path} is not a finished compress run (no {missing.relative_to(path)} there); "
                "pass the --out directory of a compressbo compress run that has finished"
            )
        try:
            config_data = json.loads((path / "config.json").read_text())
            best = json.loads((path / "best.json").read_text())
            settings = {**config_data["settings"], "device": "auto"}  # these commands take their own --device
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RunDirError(f"{path}: its config.json or best.json is damaged ({type(error).__name__}: {error})") from None
        config = CompressConfig.from_dict(settings)
        spec = load_spec(config.model)
        if config.method is not None:
            spec = spec.with_method(config.method)
        return cls(path, config, spec, best, trust_code)

    @property
    def dataset(self) -> str:
        return self.config.data or self.spec.dataset

    def original(self) -> nn.Module:
        """The original network with the run's weights (FC3's come from the cache, trained on first use)."""
        from compressbo.compression.setup import resolve_weights
        from compressbo.compression.build import build_network

        return build_network(self.spec, resolve_weights(self.config, self.spec), trust_code=self.trust_code)

    def compressed(self, finetuned: bool = False) -> nn.Module:
        """The compressed network in ``model/`` (or ``finetuned/``)."""
        from compressbo.compression.export import load_compressed

        folder = self.path / (FINETUNED if finetuned else MODEL)
        if finetuned and not (folder / "compressed.json").is_file():
            raise RunDirError(f"{self.path} has no fine-tuned model; run compressbo finetune {self.path} first")
        return load_compressed(folder, trust_code=self.trust_code)

    def validation(self, data_dir: str | None = None):
        """The validation set the search used."""
        from compressbo.compression.setup import DATA_SEED
        from compressbo.compression.build import preprocessing
        from compressbo.compression.data import load_validation

        return load_validation(self.dataset, data_dir or self.config.data_dir,
                               transform=preprocessing(self.spec, self.config.weights),
                               download=self.config.download, seed=DATA_SEED)

    def training(self, data_dir: str | None = None):
        """The training split of the run's dataset (never the validation images)."""
        from compressbo.compression.setup import DATA_SEED
        from compressbo.compression.build import preprocessing
        from compressbo.compression.data import load_training_set

        return load_training_set(self.dataset, data_dir or self.config.data_dir,
                                 eval_transform=preprocessing(self.spec, self.config.weights),
                                 download=self.config.download, seed=DATA_SEED)

    def write_best(self) -> None:
        """Write ``best.json`` (atomically) and regenerate ``report.md`` and the plots."""
        from compressbo.app.run_report import regenerate
        from compressbo.files import write_json_atomic

        write_json_atomic(self.path / "best.json", self.best)
        regenerate(self.path)


def _no_links(*paths: Path) -> None:
    for path in paths:
        if path.is_symlink():
            raise RunDirError(f"{path} is a symbolic link; compressbo does not write through links: remove it")


# ----------------------------------------------------------------------------- finetune


def finetune_run(
    directory: str | Path,
    settings: Any = None,
    *,
    resume: bool = False,
    device: str = "auto",
    data_dir: str | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    trust_code: bool = False,
) -> dict[str, Any]:
    """Fine-tune the run's compressed network; returns ``best.json``'s ``finetune`` entry so far.

    Args:
        directory: A finished compress run.
        settings: :class:`~compressbo.compression.finetune.FinetuneSettings` (defaults if ``None``);
            with ``resume``, ``None`` takes the checkpoint's.
        resume: Continue the fine-tune in ``finetune_checkpoint/``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        data_dir: The dataset's directory (default: the run's).
        stop_after: Return after this many epochs (the rest stays for ``resume``); the
            outputs are written only once every epoch is done.
        progress: A tqdm bar per epoch.
        trust_code: Import the spec's builder even if it is not on the allowlist.

    Raises:
        RunDirError: Not a finished run; a fine-tune already there (or none to resume).
        DataError: The training split is missing (e.g. no ``train/`` folder for ImageNet).
    """

    from compressbo.compression.evaluator import SubsampleEvaluator, resolve_device
    from compressbo.compression.finetune import FinetuneCheckpoint, FinetuneSettings, finetune
    from compressbo.files import file_sha256, torch_save_atomic, write_json_atomic

    run = FinishedRun.open(directory, trust_code=trust_code)
    checkpoint = FinetuneCheckpoint(run.path / CHECKPOINT)
    output = run.path / FINETUNED
    _no_links(checkpoint.directory, output)
    if resume:
        if not checkpoint.exists():
            raise RunDirError(f"{run.path} has no fine-tune checkpoint to resume; start one with compressbo finetune {run.path}")
        saved = FinetuneSettings(**checkpoint.load()[1]["settings"])
        if settings is not None and settings != saved:
            changed = sorted(k for k, v in settings.to_dict().items() if saved.to_dict()[k] != v)
            raise RunDirError(
                f"the fine-tune in {checkpoint.directory} has other settings ({', '.join(changed)}); "
                "resume it with its own settings, or remove that folder to start again"
            )
        settings = saved
    else:
        if (output / "compressed.json").exists():
            raise RunDirError(
                f"{run.path} is fine-tuned already ({output}); remove {output} and {checkpoint.directory} to fine-tune again"
            )
        if checkpoint.exists():
            raise RunDirError(
                f"{run.path} holds an unfinished fine-tune in {checkpoint.directory}; continue it with "
                f"compressbo finetune {run.path} --resume, or remove that folder to start again"
            )
        settings = settings if settings is not None else FinetuneSettings()
    settings.validate()
    resolved = resolve_device(device)
    train = run.training(data_dir)  # a missing train/ fails here, before anything is built
    validation = run.validation(data_dir)
    original = run.original()
    student = run.compressed()
    result = finetune(student, train, validation, settings, teacher=original, device=resolved,
                      checkpoint=checkpoint, resume=resume, stop_after=stop_after,
                      eval_batch_size=run.config.batch_size, progress=progress)
    entry = {
        "path": FINETUNED,
        "dataset": run.dataset,
        "device": str(resolved),
        "settings": settings.to_dict(),
        "epochs_done": result.epochs_done,
        "finished": result.finished,
        "train_examples": result.train_examples,
        "validation_examples": result.validation_examples,
        "error_before": result.error_before,
        "error_after": result.error_after,
        "original_error": None,
        "history": result.history,
    }
    if not result.finished:
        return entry
    entry["original_error"] = SubsampleEvaluator(validation, device=resolved, batch_size=run.config.batch_size).full_error(original)
    student = student.cpu()
    output.mkdir(exist_ok=True)
    document = json.loads((run.path / MODEL / "compressed.json").read_text())
    document["finetune"] = {k: entry[k] for k in ("dataset", "settings", "epochs_done", "error_before", "error_after")}
    state = {name: tensor.detach().clone() for name, tensor in student.state_dict().items()}
    torch_save_atomic(output / document["state_dict"], state)  # first: the .json marks a whole export
    document["state_dict_sha256"] = file_sha256(output / document["state_dict"])
    write_json_atomic(output / "compressed.json", document)
    run.best["finetune"] = entry
    run.write_best()
    return entry


def add_finetune_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a finished run's compressed network on the training split (distillation by default)",
        description="Train RUN/model/ on the training split of the run's dataset, by distillation from the "
        "original network (soft targets at a temperature plus the labels) or cross-entropy; a checkpoint "
        "after every epoch; writes RUN/finetuned/ and a finetune entry in best.json and report.md.",
    )
    parser.add_argument("run", metavar="RUN_DIR", help="a finished compress run directory")
    parser.add_argument("--trust-code", action="store_true",
                        help="import the run's spec builder even if it is not on compressbo's allowlist")
    parser.add_argument("--epochs", type=int, help="passes over the training split (2)")
    parser.add_argument("--lr", type=float, help="initial SGD learning rate, cosine schedule to 0 (0.01)")
    parser.add_argument("--batch-size", type=int, help="training batch size (64)")
    parser.add_argument("--loss", help="kd (distillation from the original, plus labels) or ce (kd)")
    parser.add_argument("--temperature", type=float, help="distillation temperature (4)")
    parser.add_argument("--alpha", type=float, help="weight of the soft targets in kd (0.9)")
    parser.add_argument("--seed", type=int, help="seed of the data order and augmentations (0)")
    parser.add_argument("--workers", type=int, help="DataLoader workers for image folders (4)")
    parser.add_argument("--amp", action="store_true", default=None, help="train under autocast")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto)")
    parser.add_argument("--data-dir", help="dataset directory (the run's); ImageNet needs DIR/train/")
    parser.add_argument("--resume", action="store_true", help="continue the fine-tune in RUN_DIR/finetune_checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or messages")


_FINETUNE_FLAGS = ("epochs", "lr", "batch_size", "loss", "temperature", "alpha", "seed", "workers", "amp")


def run_finetune(args: argparse.Namespace) -> int:
    from compressbo.compression.finetune import FinetuneCheckpoint, FinetuneSettings

    given = {name: getattr(args, name) for name in _FINETUNE_FLAGS if getattr(args, name) is not None}
    settings = None
    if args.resume:
        checkpoint = FinetuneCheckpoint(Path(args.run) / CHECKPOINT)
        if given and checkpoint.exists():
            saved = checkpoint.load()[1]["settings"]
            changed = [name for name, value in given.items() if saved.get(name) != value]
            if changed:
                raise RunDirError(
                    f"--resume continues with the settings in {checkpoint.json_path}; drop "
                    + ", ".join("--" + name.replace("_", "-") for name in changed)
                )
    else:
        settings = FinetuneSettings(**given)
        try:
            settings.validate()
        except SettingError as error:
            flag = "--" + (error.setting or "").replace("_", "-")
            raise SettingError(f"{flag}: {error}", setting=error.setting) from None
    try:
        entry = finetune_run(args.run, settings, resume=args.resume, device=args.device, data_dir=args.data_dir, trust_code=args.trust_code,
                             progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; every finished epoch is checkpointed. Continue with: "
              f"{PROG} finetune {args.run} --resume", file=sys.stderr)
        raise ReportedInterrupt() from None
    if not args.quiet:
        print(f"fine-tuned {entry['epochs_done']} epochs: full-set error {entry['error_before']:.4f} -> "
              f"{entry['error_after']:.4f} (original {entry['original_error']:.4f}); model in {args.run}/{FINETUNED}")
    return 0


# ----------------------------------------------------------------------------- export


def export_run(
    directory: str | Path,
    format: str,
    *,
    finetuned: bool = False,
    out: str | Path | None = None,
    tolerance: float | None = None,
    trust_code: bool = False,
) -> Any:
    """Export the run's compressed (or fine-tuned) network; returns the :class:`ExportResult`.

    The file goes to ``out`` or ``RUN/export/<model|finetuned><suffix>``.

    Raises:
        RunDirError: Not a finished run (or not fine-tuned, with ``finetuned``).
        SettingError: Unknown format, or the ``export`` extra missing.
        ExportCheckError: The file does not reproduce PyTorch's outputs within the tolerance.
    """
    from compressbo.compression.formats import DEFAULT_TOLERANCE, FORMATS, export_network

    if format not in FORMATS:
        raise SettingError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}", setting="format")
    run = FinishedRun.open(directory, trust_code=trust_code)
    module = run.compressed(finetuned)
    if out is None:
        folder = run.path / EXPORT
        _no_links(folder)
        folder.mkdir(exist_ok=True)
        out = folder / ((FINETUNED if finetuned else MODEL) + FORMATS[format].suffix)
    return export_network(module, run.spec.input_size, format, out,
                          tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance)


def add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a finished run's compressed network to ONNX, TorchScript or a state dict, checked against PyTorch",
    )
    parser.add_argument("run", metavar="RUN_DIR", help="a finished compress run directory")
    parser.add_argument("--trust-code", action="store_true",
                        help="import the run's spec builder even if it is not on compressbo's allowlist")
    parser.add_argument("--format", required=True, help="onnx, torchscript or state-dict")
    parser.add_argument("--finetuned", action="store_true", help="export RUN_DIR/finetuned/ instead of model/")
    parser.add_argument("--out", help="the file to write (RUN_DIR/export/<model|finetuned>.<format>)")
    parser.add_argument("--tolerance", type=float, help="bound on max |exported - PyTorch| relative to the outputs' scale (1e-4)")


def run_export(args: argparse.Namespace) -> int:
    from compressbo.compression.formats import ExportCheckError

    if args.tolerance is not None and not args.tolerance > 0:
        raise SettingError(f"--tolerance must be positive, got {args.tolerance}", setting="tolerance")
    try:
        result = export_run(args.run, args.format, finetuned=args.finetuned, out=args.out, tolerance=args.tolerance,
                            trust_code=args.trust_code)
    except ExportCheckError as error:
        print(f"{PROG}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    against = {"onnx": "ONNX Runtime", "torchscript": "TorchScript", "state-dict": "reloaded state dict"}[result.format]
    print(f"wrote {result.path} ({result.bytes:,} bytes); {against} vs PyTorch at batch sizes "
          f"{', '.join(map(str, result.batch_sizes))}: max abs diff {result.max_abs_diff:.3g} (tolerance {result.tolerance:.3g})")
    return 0


# ----------------------------------------------------------------------------- bench


def bench_run(directory: str | Path, *, device: str = "auto", batch_size: int | None = None,
              finetuned: bool = False, seconds: float | None = None, trust_code: bool = False) -> dict[str, Any]:
    """Measure the latency of the run's original and compressed network again, on ``device``.

    Batch sizes 1 and ``batch_size`` (default: the run's, else 512 on a CPU and 1024 on a GPU).
    """
    from compressbo.compression.evaluator import resolve_device
    from compressbo.compression.latency import DEFAULT_SECONDS, compare_latency

    if batch_size is not None and batch_size < 1:
        raise SettingError(f"--batch-size must be at least 1, got {batch_size}", setting="batch_size")
    run = FinishedRun.open(directory, trust_code=trust_code)
    resolved = resolve_device(device)
    compressed = run.compressed(finetuned)
    batch = batch_size or run.config.batch_size or (1024 if resolved.type == "cuda" else 512)
    latency = compare_latency(run.original(), compressed, run.spec.input_size, batch_sizes=(1, batch),
                              device=resolved, seconds=seconds or DEFAULT_SECONDS)
    return {**latency, "flops_ratio": run.best.get("flops_ratio"), "run_latency": run.best.get("latency")}


def add_bench_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure the forward latency of a finished run's original and compressed network again, here"
    )
    parser.add_argument("run", metavar="RUN_DIR", help="a finished compress run directory")
    parser.add_argument("--trust-code", action="store_true",
                        help="import the run's spec builder even if it is not on compressbo's allowlist")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto)")
    parser.add_argument("--batch-size", type=int, help="the second batch size measured (the run's)")
    parser.add_argument("--finetuned", action="store_true", help="measure RUN_DIR/finetuned/ instead of model/")


def run_bench(args: argparse.Namespace) -> int:
    result = bench_run(args.run, device=args.device, batch_size=args.batch_size, finetuned=args.finetuned,
                         trust_code=args.trust_code)
    which = FINETUNED if args.finetuned else MODEL
    print(f"{args.run}: original vs {which}/ on {result['device']}{threads_label(result)} (median of timed forward passes)")
    print(f"{'batch':>6} {'original ms':>12} {'compressed ms':>14} {'speedup':>8} {'original img/s':>15} {'compressed img/s':>17}")
    for row in result["batches"]:
        print(f"{row['batch_size']:>6} {format_ms(row['original']['median_ms']):>12} {format_ms(row['compressed']['median_ms']):>14} "
              f"{row['speedup']:>7.2f}x {row['original']['images_per_s']:>15.1f} {row['compressed']['images_per_s']:>17.1f}")
    if result["flops_ratio"]:
        print(f"FLOPs ratio {result['flops_ratio']:.4f}: {1 / result['flops_ratio']:.2f}x if latency followed FLOPs")
    run_latency = result["run_latency"]
    if run_latency:
        measured = ", ".join(f"{row['speedup']:.2f}x at batch {row['batch_size']}" for row in run_latency["batches"])
        print(f"the run measured on {run_latency['device']}: {measured}")
    return 0


Command = tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]
COMMANDS: dict[str, Command] = {
    "finetune": (add_finetune_parser, run_finetune),
    "export": (add_export_parser, run_export),
    "bench": (add_bench_parser, run_bench),
}
