"""Verify a run directory before ``--resume`` writes anything to it.

A run directory is three files that must tell one story: ``config.json`` (the settings and
the ``fingerprints`` of what the run was built from), ``optimizer_state.json`` (the
optimizer, a copy of those settings and fingerprints under ``"run"``, and the head of the
history's hash chain under ``"history"``) and ``history.jsonl``. :func:`verify_resume` checks:

- every history line is a whole evaluation (iteration, theta of the right dimension inside
  the bounds, finite y and yvar, and ``y = ratio + gamma * error`` for the error objective);
- the optimizer state's observations are the history's first ones, in order;
- the history's hash chain ends at the head the state keeps (the history may hold one more
  line, the evaluation of the state's pending point: a crash between the two writes);
- config.json, the state's copy and the run being resumed agree: the settings that define
  the run (model, acquisition, n_init, gamma, samples, seed, bounds, ...), the optimizer's
  settings (bounds, acquisition, n_init, seed, ...), and every fingerprint present in both
  (the spec file's SHA-256, the weights file's SHA-256, and any added later, e.g. data).

Any disagreement raises :class:`~compressbo.exceptions.RunDirError` with one line, and
nothing has been written by then.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from compressbo.app.rundir import CONFIG, HISTORY, STATE, chain_head
from compressbo.exceptions import RunDirError

__all__ = ["FINGERPRINTS", "OPTIMIZER_SETTINGS", "check_fingerprints", "run_stamp", "verify_resume"]

logger = logging.getLogger(__name__)

FINGERPRINTS = "fingerprints"  # the top-level key of config.json, and of the state's "run" copy
# the optimizer state's settings, which must be the ones config.json builds
OPTIMIZER_SETTINGS = ("bounds", "acquisition", "acquisition_options", "n_init", "seed", "kappa",
                      "num_restarts", "raw_samples", "known_kernel", "constraint")


def run_stamp(settings: dict[str, Any], fingerprints: dict[str, Any], fixed: tuple[str, ...]) -> dict[str, Any]:
    """What the optimizer state keeps of a run's identity: its fixed settings and fingerprints.

    Args:
        settings: The run's settings (``CompressConfig.to_dict()``).
        fingerprints: ``{"spec": sha256, "weights": sha256 or None, ...}``.
        fixed: Names of the settings that may not change on resume.
    """
    return {"settings": {name: settings.get(name) for name in fixed}, FINGERPRINTS: dict(fingerprints)}


def _refuse(run: Path, problem: str) -> RunDirError:
    return RunDirError(
        f"--resume {run}: {problem}; nothing was changed (restore the run's files from a backup, "
        "or start a new run with another --out)"
    )


def check_fingerprints(run: Path, recorded: dict[str, Any], current: dict[str, Any], what: str) -> None:
    """Every fingerprint present in both ``recorded`` and ``current`` must be equal.

    Raises:
        RunDirError: One differs (named, with both values abbreviated).
    """
    for key in sorted(set(recorded) & set(current)):
        if recorded[key] != current[key]:
            raise _refuse(
                run,
                f"the {key} fingerprint {_short(current[key])} differs from the {_short(recorded[key])} "
                f"{what} records (the run's {key} changed since it started)",
            )


def _short(value: Any) -> str:
    return f"{value[:12]}..." if isinstance(value, str) and len(value) > 16 else repr(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_records(run: Path, history: list[dict[str, Any]], bounds: list[list[float]]) -> None:
    """Every history line is a whole evaluation inside the run's box."""
    lower, upper = bounds
    seen: set[int] = set()
    for index, record in enumerate(history):
        where = f"{HISTORY} line {index + 1}"
        for key in ("y", "yvar", "ratio", "error", "m"):
            if not _number(record.get(key)):
                raise _refuse(run, f"{where} has no finite {key!r}")
        iteration = record.get("iteration")  # in completion order: with several workers not 0, 1, 2, ...
        if not (isinstance(iteration, int) and not isinstance(iteration, bool) and 0 <= iteration) or iteration in seen:
            raise _refuse(run, f"{where} is iteration {iteration!r}, not a new evaluation index")
        seen.add(iteration)
        theta = record.get("x")
        if not (isinstance(theta, list) and len(theta) == len(lower) and all(map(_number, theta))):
            raise _refuse(run, f"{where}: theta is not a list of {len(lower)} numbers")
        if any(not lo - 1e-9 <= t <= hi + 1e-9 for t, lo, hi in zip(theta, lower, upper)):
            raise _refuse(run, f"{where}: theta lies outside the run's bounds")
        if record["yvar"] < 0:
            raise _refuse(run, f"{where}: yvar is negative")


def _check_objective(run: Path, history: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """Every history line is an evaluation of this run's objective (gamma, samples)."""
    for index, record in enumerate(history):
        where = f"{HISTORY} line {index + 1}"
        budgeted = settings.get("target_ratio") is not None or settings.get("target_flops") is not None
        if settings.get("objective") == "error" and budgeted:  # a budget: the error alone
            if not math.isclose(record["y"], record["error"], rel_tol=1e-9, abs_tol=1e-12):
                raise _refuse(run, f"{where}: y is not the error (the run has a budget)")
        elif settings.get("objective") == "error" and _number(settings.get("gamma")):
            cost = record["ratio"] if record.get("cost") is None else record["cost"]  # the flops cost's own
            expected = cost + settings["gamma"] * record["error"]
            if not math.isclose(record["y"], expected, rel_tol=1e-9, abs_tol=1e-12):
                raise _refuse(run, f"{where}: y is not cost + gamma * error (gamma = {settings['gamma']})")
        if isinstance(settings.get("samples"), int) and record["m"] != settings["samples"]:
            raise _refuse(run, f"{where}: m = {record['m']}, but the run's samples are {settings['samples']}")


def _check_prefix(run: Path, history: list[dict[str, Any]], optimizer: dict[str, Any]) -> None:
    """The state's observations are the history's first ones, in order."""
    X = optimizer.get("X")
    if not isinstance(X, list):
        raise _refuse(run, f"{STATE} holds no observations")
    n = len(X)
    if n > len(history) or any(
        not isinstance(x, list) or len(x) != len(r["x"]) or any(abs(a - b) > 1e-12 for a, b in zip(x, r["x"]))
        for x, r in zip(X, history)
    ):
        raise _refuse(
            run,
            f"the optimizer state holds {n} evaluations that are not the first ones of "
            f"{HISTORY} ({len(history)} evaluations); was a file replaced or cut?",
        )


def _check_chain(run: Path, lines: list[bytes], history: list[dict[str, Any]], state: dict[str, Any]) -> None:
    """The history's hash chain ends at the state's head (or one crash-window line later)."""
    recorded = state.get("history")
    if not (isinstance(recorded, dict) and isinstance(recorded.get("lines"), int) and isinstance(recorded.get("sha256"), str)):
        raise _refuse(run, f"{STATE} holds no head of the history's hash chain")
    n = recorded["lines"]
    if not 0 <= n <= len(lines) or chain_head(lines[:n]) != recorded["sha256"]:
        raise _refuse(run, f"{HISTORY} is not the history {STATE} was built from (its hash chain differs)")
    extra = len(lines) - n
    if extra == 0:
        return
    pending = state.get("optimizer", {}).get("pending") or []
    if extra == 1 and history[-1]["x"] in pending:
        return  # the evaluation of the pending point, appended before the state was saved
    raise _refuse(run, f"{HISTORY} holds {extra} line(s) the optimizer state never saw (appended by hand?)")


def verify_resume(
    run: Path,
    *,
    config: dict[str, Any],
    state: dict[str, Any] | None,
    history: list[dict[str, Any]],
    lines: list[bytes],
    expected_optimizer: dict[str, Any],
    fingerprints: dict[str, Any],
    fixed: tuple[str, ...],
) -> None:
    """Check that a run directory's files agree with each other and with the run being resumed.

    Args:
        run: The run directory (for messages).
        config: ``config.json`` as read.
        state: ``optimizer_state.json`` as read (``None`` if absent).
        history: ``history.jsonl``'s complete records.
        lines: Their raw lines (bytes, newline included), for the hash chain.
        expected_optimizer: ``state_dict()`` of a fresh optimizer built from config.json's
            settings and the loaded network (its settings, not its observations, matter).
        fingerprints: The fingerprints of what this resume loaded (spec, weights, ...).
        fixed: The settings that may not change on resume.

    Raises:
        RunDirError: Any disagreement, in one line; nothing is written.
    """
    settings = config["settings"]
    recorded = config.get(FINGERPRINTS)
    stamp = state.get("run") if isinstance(state, dict) else None
    if recorded is None and stamp is None and (state is None or "history" not in state):
        logger.warning("--resume %s: written by an older compressbo without fingerprints; not verified", run)
        return
    if not isinstance(recorded, dict):
        raise _refuse(run, f"{CONFIG} has no {FINGERPRINTS!r} object")
    if state is None:
        if history:
            raise _refuse(run, f"{HISTORY} holds evaluations but there is no {STATE}")
        check_fingerprints(run, recorded, fingerprints, CONFIG)
        return
    optimizer = state.get("optimizer")
    if not isinstance(optimizer, dict):
        raise _refuse(run, f"{STATE} holds no optimizer state")
    bounds = expected_optimizer["bounds"]
    if optimizer.get("bounds") != bounds:
        raise _refuse(run, f"{STATE}'s bounds {_abbreviated(optimizer.get('bounds'))} are not the run's {_abbreviated(bounds)}")
    _check_records(run, history, bounds)
    _check_prefix(run, history, optimizer)
    _check_chain(run, lines, history, state)
    for key in OPTIMIZER_SETTINGS:
        if optimizer.get(key) != expected_optimizer.get(key):
            raise _refuse(
                run,
                f"{STATE} has {key} = {_abbreviated(optimizer.get(key))}, but {CONFIG} gives "
                f"{_abbreviated(expected_optimizer.get(key))}",
            )
    if not isinstance(stamp, dict) or not isinstance(stamp.get("settings"), dict):
        raise _refuse(run, f"{STATE} does not record the run's settings")
    for name in fixed:
        if name in stamp["settings"] and stamp["settings"][name] != settings.get(name):
            raise _refuse(
                run,
                f"{CONFIG} has {name} = {settings.get(name)!r}, but the run was made with "
                f"{stamp['settings'][name]!r} (config.json was edited)",
            )
    check_fingerprints(run, stamp.get(FINGERPRINTS) or {}, recorded, STATE)
    check_fingerprints(run, recorded, fingerprints, CONFIG)
    _check_objective(run, history, settings)


def _abbreviated(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
