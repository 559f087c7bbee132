"""The ``compressbo`` command line: ``compress``, ``compare`` and ``report``.

Each command is a pair of functions, ``_add_<name>_parser(subparsers)`` and
``_run_<name>(args) -> int``, registered in ``COMMANDS``; a new command adds one pair.
Bad input (a ``UserInputError`` or an argparse error) prints one line
``compressbo: error: ...`` on stderr and exits 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from compressbo import __version__
from compressbo.exceptions import ReportedInterrupt, UserInputError

PROG = "compressbo"
# BoTorch's import triggers this torch deprecation; it is noise to a command-line user.
_IGNORED_WARNING = "ignore:`torch.jit.script` is deprecated:FutureWarning"


class _ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, like ``UserInputError``'s."""

    def error(self, message: str) -> NoReturn:
        _fail(message)


_COMPRESS_SETTINGS: dict[str, dict] = {
    # flag: argparse keywords; every default is CompressConfig's (None: not given)
    "model": {"type": str, "help": "spec name in models/ or a spec .toml path (fc3)"},
    "weights": {"type": str, "help": "'random', a torchvision weights name (IMAGENET1K_V1) or a .pth state dict (spec default)"},
    "data": {"type": str, "help": "dataset: digits, mnist or imagenet (spec default)"},
    "data_dir": {"type": str, "help": "directory of the MNIST IDX files or of the ImageNet root (holding val/)"},
    "acq": {"type": str, "help": "acquisition function (cei)"},
    "iterations": {"type": int, "help": "BO iterations after the initial design (30)"},
    "init": {"type": int, "help": "initial Sobol points (max(5, 2d))"},
    "samples": {"type": lambda text: int(text) if text.isdigit() else text, "help": "validation examples per evaluation, m (200); START:END grows m linearly over the run"},
    "gamma": {"type": float, "help": "weight of the error in ratio + gamma * error (1.0)"},
    "objective": {"type": str, "help": "error or distill (error)"},
    "kappa": {"type": float, "help": "stop once the maximized acquisition value is below kappa, in objective units (log acquisitions compare log kappa; never)"},
    "known_optimum": {"type": float, "help": "f*, a lower bound of the objective you believe is attained: needed by erm and cbm"},
    "seed": {"type": int, "help": "seed of the search and of the subsamples (0)"},
    "device": {"type": str, "help": "auto, cpu, cuda or cuda:N (auto)"},
    "batch_size": {"type": int, "help": "evaluation batch size (512 on a CPU, 1024 on a GPU)"},
    "scheme": {"type": str, "help": "rank scheme: params (theta = fraction of parameters kept) or plain (spec default)"},
    "method": {"type": str, "help": "conv factorization for all layers: tucker2 or vh (spec default)"},
    "num_restarts": {"type": int, "help": "L-BFGS-B restarts of the acquisition maximization (10)"},
    "raw_samples": {"type": int, "help": "raw samples seeding the restarts (512)"},
    "cost": {"type": str, "help": "known cost in cost + gamma * error: params (compressed layers' parameter ratio) or flops (their MAC ratio at the spec's input size) (params)"},
    "surrogate": {"type": str, "help": "sum (the GP models cost + gamma * error) or composite (the GP models the error; the known cost is added exactly) (sum)"},
    "warp": {"type": str, "help": "scale the GP sees theta on: none, log (log theta on the box's log bounds) or learned (Kumaraswamy warp fitted with the GP) (log; none for eign)"},
    "bounds": {"nargs": 2, "type": float, "metavar": ("LO", "HI"), "help": "theta box of every layer, 0 < LO < HI <= 1 (spec default)"},
    "amp": {"action": "store_true", "default": None, "help": "evaluate under autocast"},
    "download": {"action": "store_true", "default": None, "help": "allow downloading MNIST into --data-dir"},
}


def _add_settings(parser: argparse.ArgumentParser | argparse._ArgumentGroup, names: Sequence[str]) -> None:
    """Add the ``compress`` setting flags ``names`` (shared with ``compare``)."""
    for name in names:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, **_COMPRESS_SETTINGS[name])


def _add_compress_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compress",
        help="search per-layer ranks of a network with noise-aware BO (FC3 on digits by default)",
        description="Compress a network by low-rank factorization, choosing each layer's rank "
        "by Bayesian optimization of ratio + gamma * error on random validation subsamples.",
    )
    _add_settings(parser, list(_COMPRESS_SETTINGS))
    parser.add_argument("--out", help="new run directory (runs/<model>-<acq>-<time>)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its own settings; --iterations extends it, --device and --batch-size may change")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages")


def _run_compress(args: argparse.Namespace) -> int:
    import logging

    from compressbo.app.job import RESUME_OVERRIDES, CompressConfig, default_out, resume, start

    logging.basicConfig(format=f"{PROG}: %(message)s", level=logging.ERROR if args.quiet else logging.INFO)
    settings = {name: getattr(args, name) for name in _COMPRESS_SETTINGS}
    given = {name: value for name, value in settings.items() if value is not None}
    if args.resume is not None:
        fixed = [name for name in given if name not in RESUME_OVERRIDES]
        if fixed or args.out is not None:
            flags = ", ".join("--" + name.replace("_", "-") for name in [*fixed, *(["out"] if args.out else [])])
            raise UserInputError(
                f"--resume continues with the settings in {args.resume}/config.json (only --iterations, "
                f"--device and --batch-size may change); drop {flags}"
            )
        out = args.resume
    else:
        config = CompressConfig(**given)
        out = args.out if args.out is not None else str(default_out(config))
    try:
        if args.resume is not None:
            overrides = {name: given[name] for name in RESUME_OVERRIDES if name in given}
            path, best = resume(args.resume, progress=not args.quiet, **overrides)
        else:
            path, best = start(config, out, progress=not args.quiet)
    except KeyboardInterrupt:
        if (Path(out) / "config.json").exists():
            print(f"{PROG}: interrupted; every finished evaluation is saved. Continue with: "
                  f"{PROG} compress --resume {out}", file=sys.stderr)
        else:
            print(f"{PROG}: interrupted before the first evaluation; nothing was saved", file=sys.stderr)
        return 130
    if not args.quiet:
        print(
            f"recommended: ratio {best['ratio']:.4f} (whole model {best['model_ratio']:.4f}, "
            f"FLOPs {best['flops_ratio']:.4f}), full-set error {best['error']:.4f} "
            f"(original {best['original_error']:.4f}); report in {path}/report.md"
        )
    return 0


# ``compress`` flags that define a compression problem for ``compare`` (the same definitions).
_PROBLEM_SETTINGS = ("weights", "data", "data_dir", "samples", "gamma", "objective", "device",
                     "batch_size", "scheme", "method", "warp", "cost")
_OPTIMIZER_SETTINGS = ("num_restarts", "raw_samples")


def _add_compare_parser(subparsers: argparse._SubParsersAction) -> None:
    from compressbo.experiments.problems import PROBLEM_NAMES

    parser = subparsers.add_parser(
        "compare",
        help="compare acquisition functions on a compression, GP-sample or synthetic problem",
        description="Run each acquisition on the same seeds and initial designs, in parallel, "
        "and write runs.json, summary.md and the plots to --out.",
    )
    parser.add_argument(
        "--problem",
        required=True,
        help=f"a compression spec (fc3) or spec .toml path, gpsample, or one of "
        f"{', '.join(PROBLEM_NAMES)} optionally with its dimension (hartmann3)",
    )
    parser.add_argument("--dim", type=int, help="dimension of a synthetic or gpsample problem")
    parser.add_argument(
        "--acq", nargs="+", default=["ei", "cei"], metavar="NAME",
        help="acquisitions, each NAME or NAME@WARP to set the GP's input warping of that run "
        "(e.g. cei@none cei@log; default warping: --warp for compression problems, none otherwise) (ei cei)",
    )
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (10); gpsample: functions")
    parser.add_argument("--iterations", type=int, default=30, help="BO iterations per run (30)")
    parser.add_argument("--init", type=int, help="initial Sobol points (optimizer default)")
    parser.add_argument("--workers", type=int, help="worker processes (CPU count)")
    parser.add_argument("--score-every", type=int, default=1, metavar="N", help="score the recommendation every N iterations and after the last (1)")
    _add_settings(parser, ["known_optimum"])  # synthetic problems and GP samples know their own
    _add_settings(
        parser.add_argument_group("compression problems (as for compress)"),
        [*_PROBLEM_SETTINGS, *_OPTIMIZER_SETTINGS, "bounds", "amp"],
    )
    gp_group = parser.add_argument_group("gpsample")
    gp_group.add_argument("--lengthscale", type=float, default=0.2, help="prior lengthscale on [0, 1]^d (0.2)")
    gp_group.add_argument("--outputscale", type=float, default=1.0, help="prior variance (1.0)")
    gp_group.add_argument("--noise-std", type=float, default=0.1, help="observation noise standard deviation (0.1)")
    parser.add_argument("--out", required=True, help="output directory (new, or existing with --resume)")
    parser.add_argument("--resume", action="store_true", help="add the missing runs (and new --acq / --seeds) to the comparison in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _compare_problem(args: argparse.Namespace):
    """The problem source named by ``--problem``: synthetic, gpsample or compression."""
    import functools

    from compressbo.experiments.problems import GPSampleFamily, is_synthetic, make_problem

    compression_flags = [name for name in (*_PROBLEM_SETTINGS, "bounds", "amp") if getattr(args, name) is not None]
    if is_synthetic(args.problem) or args.problem == "gpsample":
        if compression_flags:
            flags = ", ".join("--" + name.replace("_", "-") for name in compression_flags)
            raise UserInputError(f"{flags} apply only to compression problems, not {args.problem!r}; drop them")
        if args.problem == "gpsample":
            return GPSampleFamily(2 if args.dim is None else args.dim, args.lengthscale, args.outputscale, args.noise_std)
        return make_problem(args.problem, args.dim)
    from compressbo.app.job import CompressConfig
    from compressbo.experiments.compression_problem import CompressionProblem
    from compressbo.compression.spec import load_spec

    if args.dim is not None:
        raise UserInputError(f"--dim does not apply to the compression problem {args.problem!r} (one theta per layer); drop it")
    try:
        load_spec(args.problem)  # an unknown name fails here, before anything is loaded
    except UserInputError as error:
        if str(error).startswith("no network spec named"):
            from compressbo.compression.spec import available_specs
            from compressbo.experiments.problems import PROBLEM_NAMES

            raise UserInputError(
                f"unknown problem {args.problem!r}; choose one of {', '.join(PROBLEM_NAMES)} "
                f"(optionally with a dimension, e.g. hartmann3), gpsample, or a compression "
                f"spec ({', '.join(available_specs())}) or spec .toml path"
            ) from None
        raise
    config = CompressConfig(model=args.problem, **{name: getattr(args, name) for name in compression_flags})
    config.validate()
    return functools.partial(CompressionProblem, config)


def _run_compare(args: argparse.Namespace) -> int:
    from compressbo.experiments.compare import run_comparison

    if args.score_every < 1:
        raise UserInputError(f"--score-every must be at least 1, not {args.score_every}")
    options = {name: getattr(args, name) for name in _OPTIMIZER_SETTINGS if getattr(args, name) is not None}
    run_comparison(
        _compare_problem(args),
        args.acq,
        args.seeds,
        args.iterations,
        args.out,
        n_init=args.init,
        workers=args.workers,
        progress=not args.quiet,
        optimizer_options=options,
        score_every=args.score_every,
        known_optimum=args.known_optimum,
        resume=args.resume,
    )
    if not args.quiet:
        print(f"wrote {args.out}/runs.json, summary.md and the plots")
    return 0


def _add_report_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="regenerate the plots and the Markdown report of a comparison or a compress run (no recomputation)",
    )
    parser.add_argument("directory", metavar="DIR", help="a directory written by compare or compress")


def _run_report(args: argparse.Namespace) -> int:
    from compressbo.experiments.report import load_comparison, write_report
    from compressbo.app.run_report import regenerate

    is_run = not (Path(args.directory) / "runs.json").exists() and (Path(args.directory) / "config.json").exists()
    try:
        if is_run:
            written = regenerate(args.directory)
        else:
            written = write_report(load_comparison(args.directory), args.directory)
    except UserInputError:
        raise
    except OSError as err:
        raise UserInputError(f"cannot write the report into {args.directory} ({err.strerror or err}); check its permissions") from None
    except (KeyError, TypeError, ValueError) as err:
        damaged = "history.jsonl or best.json" if is_run else "runs.json"
        raise UserInputError(f"{args.directory}: its {damaged} is incomplete or damaged ({type(err).__name__}: {err})") from None
    print(f"wrote {', '.join(f'{args.directory}/{name}' for name in written)}")
    return 0


Command = tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]
COMMANDS: dict[str, Command] = {
    "compress": (_add_compress_parser, _run_compress),
    "compare": (_add_compare_parser, _run_compare),
    "report": (_add_report_parser, _run_report),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per entry of ``COMMANDS``."""
    parser = _ArgumentParser(
        prog=PROG,
        description="Low-rank network compression tuned by noise-aware Bayesian optimization.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_parser, _ in COMMANDS.values():
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``compressbo`` console script; returns the exit code."""
    _ignore_third_party_warnings()
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command][1](args)
    except UserInputError as error:
        _fail(str(error))
    except ReportedInterrupt:
        return 130
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _ignore_third_party_warnings() -> None:
    """Silence the known torch deprecation here and in spawned worker processes."""
    _, message, _ = _IGNORED_WARNING.split(":")
    warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    inherited = os.environ.get("PYTHONWARNINGS")
    if _IGNORED_WARNING not in (inherited or ""):
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [inherited, _IGNORED_WARNING]))


def _fail(message: str) -> NoReturn:
    first_line = " ".join(message.split())
    print(f"{PROG}: error: {first_line}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    sys.exit(main())
