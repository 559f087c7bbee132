"""The ``compressbo`` command line: ``compress``, ``compare``, ``report``; ``finetune``, ``export``, ``bench``.

Each command is a pair of functions, ``_add_<name>_parser(subparsers)`` and
``_run_<name>(args) -> int``, registered in ``COMMANDS``; a new command adds one pair.
Bad input (a ``UserInputError`` or an argparse error) prints one line
``compressbo: error: ...`` on stderr and exits 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from compressbo import __version__
from compressbo.app import deploy
from compressbo.exceptions import CompressboError, ReportedInterrupt, SettingError, SpecNotFoundError, UserInputError

PROG = "compressbo"
# BoTorch's import triggers this torch deprecation; it is noise to a command-line user.
_IGNORED_WARNING = "ignore:`torch.jit.script` is deprecated:FutureWarning"


class _ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, like ``UserInputError``'s."""

    def error(self, message: str) -> NoReturn:
        _fail(message)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _config_fields() -> dict[str, Any]:
    """Every ``compress`` setting's dataclass field, by name (the one definition of each flag)."""
    from compressbo.app.config import CompressConfig

    return {f.name: f for f in dataclasses.fields(CompressConfig)}


def _add_settings(parser: argparse.ArgumentParser | argparse._ArgumentGroup, names: Sequence[str]) -> None:
    """Add the flags of the config settings ``names``, from their fields' metadata.

    Every default is ``None`` (not given), so a run's own settings or the config's
    defaults apply, and ``--resume`` can tell which flags were given.
    """
    fields = _config_fields()
    for name in names:
        metadata = fields[name].metadata
        kwargs = {"type": str, **metadata["cli"]}
        if kwargs.get("action") == "store_true":
            kwargs.pop("type")
        parser.add_argument(_flag(name), dest=name, default=None, help=metadata["help"], **kwargs)


def _add_compress_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compress",
        help="search per-layer ranks of a network with noise-aware BO (FC3 on digits by default)",
        description="Compress a network by low-rank factorization, choosing each layer's rank "
        "by Bayesian optimization of ratio + gamma * error on random validation subsamples.",
    )
    _add_settings(parser, list(_config_fields()))
    parser.add_argument("--out", help="new run directory (runs/<model>-<acq>-<time>)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its own settings; --iterations extends it, --device and --batch-size may change")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    parser.add_argument("--workers", type=int, metavar="N", help="evaluate on N worker processes at once (asynchronous BO; spread over the visible GPUs with --device cuda); also with --resume")
    parser.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="evaluate on Ray actors (one per GPU, else --workers); ADDRESS as ray.init takes it, auto for a running cluster, none for a local Ray; --data-dir must exist on every node")
    parser.add_argument("--trust-code", action="store_true", help="with --resume: import the spec's builder even if it is not a torchvision model or a compressbo architecture (config.json names it; pass this only for a run you trust)")


def _run_compress(args: argparse.Namespace) -> int:
    import logging

    from compressbo.app.config import CompressConfig
    from compressbo.app.job import RESUME_OVERRIDES, default_out, resume, start

    logging.basicConfig(format=f"{PROG}: %(message)s", level=logging.ERROR if args.quiet else logging.INFO)
    settings = {name: getattr(args, name) for name in _config_fields()}
    given = {name: value for name, value in settings.items() if value is not None}
    if args.resume is not None:
        fixed = [name for name in given if name not in RESUME_OVERRIDES]
        if fixed or args.out is not None:
            flags = ", ".join(_flag(name) for name in [*fixed, *(["out"] if args.out else [])])
            changeable = ", ".join(_flag(name) for name in RESUME_OVERRIDES[:-1]) + f" and {_flag(RESUME_OVERRIDES[-1])}"
            raise SettingError(
                f"--resume continues with the settings in {args.resume}/config.json (only {changeable} "
                f"may change); drop {flags}"
            )
        out = args.resume
    else:
        config = CompressConfig(**given)
        out = args.out if args.out is not None else str(default_out(config))
    parallel = _parallel(args)
    try:
        if args.resume is not None:
            overrides = {name: given[name] for name in RESUME_OVERRIDES if name in given}
            path, best = resume(args.resume, progress=not args.quiet, trust_code=args.trust_code, parallel=parallel, **overrides)
        else:
            path, best = start(config, out, progress=not args.quiet, parallel=parallel)
    except OSError as err:  # a full disk or a lost permission mid-run: every finished evaluation is saved
        then = f"; then continue with: {PROG} compress --resume {out}" if (Path(out) / "config.json").exists() else ""
        raise UserInputError(f"{_write_failure(err)}{then}") from None
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


def _parallel(args: argparse.Namespace):
    """``--workers`` / ``--ray`` as a :class:`~compressbo.app.parallel.Parallel`, or ``None`` (in process)."""
    from compressbo.app.parallel import Parallel

    if args.workers is not None and args.workers < 1:
        raise SettingError(f"--workers must be at least 1, not {args.workers}")
    if args.ray is not None:
        return Parallel(args.workers, _ray_address(args.ray))
    return None if args.workers is None else Parallel(args.workers)


def _ray_address(address: str | None) -> str | None:
    """``--ray [ADDRESS]`` as given (``""``: a local Ray), after checking that Ray is installed."""
    if address is None:
        return None
    from compressbo._ray import import_ray

    import_ray()  # a missing Ray is one line, before anything is loaded
    return address


def _compression_problem_settings() -> tuple[str, ...]:
    """``compress``'s problem and runtime settings, which ``compare`` takes for compression problems."""
    from compressbo.compression.config import ProblemConfig, RuntimeConfig

    return tuple(f.name for cls in (ProblemConfig, RuntimeConfig) for f in dataclasses.fields(cls) if f.name not in ("model", "final_samples", "target_ratio", "target_flops"))  # budgets: compress only


_OPTIMIZER_SETTINGS = ("num_restarts", "raw_samples", "kernel")  # the search settings compare passes on


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
    parser.add_argument("--noise", help="noise of a synthetic problem: hetero[:FRACTION] (a ramp up to FRACTION of the range, 0.1) or homo[:FRACTION] (std FRACTION of the range everywhere, 0.05) (hetero)")
    parser.add_argument(
        "--acq", nargs="+", default=["ei", "cei"], metavar="NAME",
        help="acquisitions, each NAME[@WARP][+SURROGATE] to set the GP's input warping and surrogate of that run "
        "(e.g. cei@none cei@log+sum; defaults: --warp and --surrogate for compression problems, none and sum otherwise) (ei cei)",
    )
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (10); gpsample: functions")
    parser.add_argument("--iterations", type=int, default=30, help="BO iterations per run (30)")
    parser.add_argument("--init", type=int, help="initial Sobol points (optimizer default)")
    parser.add_argument("--workers", type=int, help="worker processes (CPU count)")
    parser.add_argument("--in-flight", type=int, default=1, metavar="K", help="asynchronous BO in every run: K evaluations in flight, as K equally fast workers would run it (1: sequential)")
    parser.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="run the runs as Ray tasks, many at once across the cluster; ADDRESS as ray.init takes it (auto: a running cluster), none for a local Ray")
    parser.add_argument("--score-every", type=int, default=1, metavar="N", help="score the recommendation every N iterations and after the last (1)")
    _add_settings(parser, ["known_optimum"])  # synthetic problems and GP samples know their own
    _add_settings(
        parser.add_argument_group("compression problems (as for compress)"),
        [*_compression_problem_settings(), "warp", "surrogate", *_OPTIMIZER_SETTINGS],
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

    compression_flags = [
        name for name in (*_compression_problem_settings(), "warp", "surrogate") if getattr(args, name) is not None
    ]
    if is_synthetic(args.problem) or args.problem == "gpsample":
        if compression_flags:
            flags = ", ".join(_flag(name) for name in compression_flags)
            raise SettingError(f"{flags} apply only to compression problems, not {args.problem!r}; drop them")
        if args.noise is not None and args.problem == "gpsample":
            raise SettingError("--noise applies to synthetic functions; gpsample takes --noise-std; drop --noise")
        if args.problem == "gpsample":
            return GPSampleFamily(2 if args.dim is None else args.dim, args.lengthscale, args.outputscale, args.noise_std)
        return make_problem(args.problem, args.dim, **({} if args.noise is None else {"noise": args.noise}))
    from compressbo.compression.config import ProblemConfig, RuntimeConfig
    from compressbo.compression.spec import load_spec
    from compressbo.experiments.compression_problem import CompressionProblem

    if args.noise is not None:
        raise SettingError(f"--noise applies to synthetic functions, not the compression problem {args.problem!r} (its noise is the subsampling); drop it")
    if args.dim is not None:
        raise SettingError(f"--dim does not apply to the compression problem {args.problem!r} (one theta per layer); drop it")
    try:
        load_spec(args.problem)  # an unknown name fails here, before anything is loaded
    except SpecNotFoundError:
        from compressbo.compression.spec import available_specs
        from compressbo.experiments.problems import PROBLEM_NAMES

        raise SettingError(
            f"unknown problem {args.problem!r}; choose one of {', '.join(PROBLEM_NAMES)} "
            f"(optionally with a dimension, e.g. hartmann3), gpsample, or a compression "
            f"spec ({', '.join(available_specs())}) or spec .toml path"
        ) from None
    given = {name: getattr(args, name) for name in compression_flags}
    problem = ProblemConfig(model=args.problem, **{k: v for k, v in given.items() if k in _field_names(ProblemConfig)})
    runtime = RuntimeConfig(**{k: v for k, v in given.items() if k in _field_names(RuntimeConfig)})
    problem.validate()
    runtime.validate()
    if args.warp is not None:
        from compressbo.bo.models.warping import WARP_NAMES

        if args.warp not in WARP_NAMES:
            raise SettingError(f"unknown warp {args.warp!r}; choose one of {', '.join(WARP_NAMES)}", setting="warp")
    if args.surrogate is not None:
        from compressbo.bo.optimizer import SURROGATES

        if args.surrogate not in SURROGATES:
            raise SettingError(
                f"unknown surrogate {args.surrogate!r}; choose one of {', '.join(SURROGATES)}", setting="surrogate"
            )
    return functools.partial(CompressionProblem, problem, runtime, warp=args.warp, surrogate=args.surrogate)


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _run_compare(args: argparse.Namespace) -> int:
    from compressbo.experiments.compare import run_comparison

    if args.score_every < 1:
        raise SettingError(f"--score-every must be at least 1, not {args.score_every}")
    options = {name: getattr(args, name) for name in _OPTIMIZER_SETTINGS if getattr(args, name) is not None}
    from compressbo.bo.models.gp import DEFAULT_KERNEL, check_kernel

    options.setdefault("kernel", DEFAULT_KERNEL)  # recorded, so --resume checks it

    check_kernel(options["kernel"])
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
        ray=_ray_address(args.ray),
        in_flight=args.in_flight,
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
        raise SettingError(f"cannot write the report into {args.directory} ({err.strerror or err}); check its permissions") from None
    except (KeyError, TypeError, ValueError) as err:
        damaged = "history.jsonl or best.json" if is_run else "runs.json"
        raise SettingError(f"{args.directory}: its {damaged} is incomplete or damaged ({type(err).__name__}: {err})") from None
    print(f"wrote {', '.join(f'{args.directory}/{name}' for name in written)}")
    return 0


COMMANDS: dict[str, deploy.Command] = {  # (add the subparser, run it), as deploy's
    "compress": (_add_compress_parser, _run_compress),
    "compare": (_add_compare_parser, _run_compare),
    "report": (_add_report_parser, _run_report),
    **deploy.COMMANDS,  # finetune, export, bench (compressbo.app.deploy)
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
    except CompressboError as error:
        _fail(_message(error))
    except OSError as error:  # the environment, not a bug: a full disk, a read-only folder
        _fail(_write_failure(error))
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


def _message(error: CompressboError) -> str:
    """The error's message, with the setting at fault (if it names one) spelled as its flag.

    Library messages speak of settings by name (``samples 0 must be ...``); on the command
    line the name becomes the flag (``--samples 0 must be ...``), or, where the message does
    not use the name, the flag is added at the end.
    """
    message = str(error)
    name = error.setting
    if name is None or (name not in _config_fields() and name not in _EXTRA_FLAGS):
        return message
    flag = _flag(name)
    if flag in message:
        return message
    named = re.sub(rf"(?<![\w-])(?<!unknown ){re.escape(name)}(?![\w-])", flag, message)
    return named if named != message else f"{message} (set by {flag})"


# settings that are flags of a command but not fields of CompressConfig
_EXTRA_FLAGS = {"in_flight", "workers", "score_every", "seeds", "out", "resume", "dim", "lengthscale", "outputscale", "noise_std"}
def _write_failure(err: OSError) -> str:
    """One line for a failed write or read: which file, why, and what to do."""
    where = f" {err.filename}" if err.filename else ""
    return f"cannot write or read{where} ({err.strerror or err}); free disk space or fix the folder's permissions"


def _fail(message: str) -> NoReturn:
    first_line = " ".join(message.split())
    print(f"{PROG}: error: {first_line}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    sys.exit(main())
