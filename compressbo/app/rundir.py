"""The run directory: every evaluation on disk as it happens, and everything needed to resume.

Layout of a run directory::

    config.json            every setting of the run and the package versions
    history.jsonl          one JSON object per evaluation, appended and fsynced as it happens
    optimizer_state.json   the optimizer's JSON state, replaced atomically after each step

Nothing here is pickled. A crash can land between appending to the history and saving the
optimizer state; :meth:`RunDirectory.history` is the source of truth and the caller replays
the evaluations that the saved state does not know yet.

One writer: a run directory is locked (``fcntl.flock`` on the directory itself, released by
the kernel when the process dies) from :meth:`RunDirectory.create` or :meth:`RunDirectory.open`
until the process ends, so a second process on the same directory is refused at once. Files
are replaced atomically or appended with ``O_NOFOLLOW``, and a directory whose files are
symbolic links is refused. The history's lines form a hash chain (:func:`chain_head`); the
optimizer state keeps its head, so ``--resume`` knows whether the history is the one the
state was built from (:mod:`compressbo.app.verify`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from compressbo.bo.loop import normalize_record
from compressbo.exceptions import RunDirError
from compressbo.files import append_line, check_output_directory, lock_directory, refuse_links, unlock_directory, write_json_atomic

__all__ = ["RunDirectory", "chain_head", "package_versions"]

CONFIG = "config.json"
HISTORY = "history.jsonl"
STATE = "optimizer_state.json"
BEST = "best.json"
MODEL = "model"
# every name compressbo writes in a run directory: none may be a symbolic link
RUN_FILES = (CONFIG, HISTORY, STATE, BEST, MODEL, "convergence.png", "pareto.png", "report.md",
             f"{MODEL}/compressed.pth", f"{MODEL}/compressed.json")
GENESIS = hashlib.sha256(b"compressbo-history-1").hexdigest()  # the head of an empty history


def chain_head(lines: Iterable[bytes], head: str = GENESIS) -> str:
    """The hash chain's head after ``lines``: ``h_i = sha256(h_{i-1} || line_i)`` (hex)."""
    for line in lines:
        head = hashlib.sha256(head.encode() + line).hexdigest()
    return head


_PACKAGES = ("compressbo", "torch", "torchvision", "botorch", "gpytorch", "tensorly", "numpy", "scipy")


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages a run's result depends on."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class RunDirectory:
    """A run directory on disk (see the module docstring for its layout).

    Use :meth:`create` for a new run and :meth:`open` to resume one.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._chain: tuple[int, str] | None = None  # (lines, head) of the history on disk

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any]) -> RunDirectory:
        """Make a new run directory and write its ``config.json``.

        ``path`` must be new or an empty directory, so no file of the user's is overwritten.

        Raises:
            UserInputError: ``path`` is empty, a file, a directory holding a run or other
                files, or cannot be written.
        """
        run = cls(check_output_directory(path, keep=(CONFIG, HISTORY), kind="run"))
        if (run.path / HISTORY).exists() or (run.path / CONFIG).exists():
            raise RunDirError(
                f"--out {run.path} already holds a run; continue it with "
                f"--resume {run.path} or choose another --out"
            )
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise RunDirError(f"cannot write the run directory {run.path} ({reason}); choose a writable --out") from None
        refuse_links(run.path, RUN_FILES)
        lock_directory(run.path)
        try:
            fd = os.open(run.path / ".write-test", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
            os.close(fd)
            (run.path / ".write-test").unlink()
            run.write_json(CONFIG, config)
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise RunDirError(
                f"cannot write the run directory {run.path} ({reason}); choose a writable --out"
            ) from None
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDirectory:
        """Open an existing run directory for resuming.

        Raises:
            UserInputError: ``path`` is not a run directory written by compressbo.
        """
        run = cls(Path(path))
        refuse_links(run.path, RUN_FILES)
        if not (run.path / CONFIG).is_file():
            raise RunDirError(
                f"--resume {run.path}: no {CONFIG} there; pass the --out directory of an earlier run"
            )
        lock_directory(run.path, flag="--resume")
        try:
            config = run.config
            state = run.load_state()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunDirError(f"--resume {run.path}: cannot read its files ({err}); the run directory is damaged") from None
        if not isinstance(config, dict) or not (state is None or isinstance(state, dict)):
            raise RunDirError(f"--resume {run.path}: its {CONFIG} or {STATE} was not written by compressbo")
        return run

    def close(self) -> None:
        """Release this process's lock of the run directory (another process may then write)."""
        unlock_directory(self.path)

    def discard_if_empty(self) -> None:
        """Remove a run that never evaluated anything (its set-up failed), so ``--out`` stays free."""
        if (self.path / HISTORY).exists() or (self.path / STATE).exists():
            return
        (self.path / CONFIG).unlink(missing_ok=True)
        unlock_directory(self.path)
        try:
            self.path.rmdir()
        except OSError:
            pass  # the directory holds files of the user's: leave it

    @property
    def config(self) -> dict[str, Any]:
        return self.read_json(CONFIG)

    def read_json(self, name: str) -> Any:
        with open(self.path / name, encoding="utf-8") as f:
            return json.load(f)

    def write_json(self, name: str, obj: Any) -> None:
        """Write ``obj`` to ``name`` atomically (a crash leaves the old file or the new one)."""
        write_json_atomic(self.path / name, obj)

    def append(self, record: dict[str, Any]) -> None:
        """Append one evaluation to ``history.jsonl`` (never through a link), force it to disk,
        and extend the hash chain."""
        lines, head = self.chain
        line = (json.dumps(record) + "\n").encode()
        append_line(self.path / HISTORY, line)
        self._chain = (lines + 1, chain_head([line], head))

    @property
    def chain(self) -> tuple[int, str]:
        """``(lines, head)``: the number of complete history lines and their hash chain's head."""
        if self._chain is None:
            self.history(repair=False)
        return self._chain

    def chain_record(self) -> dict[str, Any]:
        """The chain's head as the optimizer state keeps it: ``{"lines", "sha256"}``."""
        lines, head = self.chain
        return {"lines": lines, "sha256": head}

    def history(self, *, repair: bool = True) -> list[dict[str, Any]]:
        """Every evaluation recorded so far, in order, in today's record schema.

        Records written by older versions (``theta`` for ``x``) are converted on load
        (:func:`compressbo.bo.loop.normalize_record`). A torn last line (no trailing newline: the process died mid-write) is dropped, and
        with ``repair`` the file is truncated to its complete lines so later appends stay
        valid JSON Lines (``--resume`` verifies the run with ``repair=False`` first).

        Raises:
            UserInputError: A complete line is not a JSON object; the file is left as it is.
        """
        path = self.path / HISTORY
        if not path.exists():
            self._chain = (0, GENESIS)
            return []
        records, good_bytes, head = [], 0, GENESIS
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.endswith(b"\n"):
                    break  # only the last line can lack its newline
                records.append(normalize_record(_parse_record(raw, path, number)))
                good_bytes += len(raw)
                head = chain_head([raw], head)
        self._chain = (len(records), head)
        if repair and good_bytes != path.stat().st_size:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
            try:
                os.ftruncate(fd, good_bytes)
            finally:
                os.close(fd)
        return records

    def save_state(self, state: dict[str, Any]) -> None:
        self.write_json(STATE, state)

    def load_state(self) -> dict[str, Any] | None:
        return self.read_json(STATE) if (self.path / STATE).exists() else None


def _parse_record(raw: bytes, path: Path, number: int) -> dict[str, Any]:
    """The JSON object on line ``number`` of ``path``; UserInputError if it is not one."""
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict):
        raise RunDirError(
            f"{path} line {number} is not a JSON object: the run directory is damaged; nothing "
            "was changed (repair that line from a backup, or start a new run with another --out)"
        )
    return record
