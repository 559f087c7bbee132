"""The run directory: every evaluation on disk as it happens, and everything needed to resume.

Layout of a run directory::

    config.json            every setting of the run and the package versions
    history.jsonl          one JSON object per evaluation, appended and fsynced as it happens
    optimizer_state.json   the optimizer's JSON state, replaced atomically after each step

Nothing here is pickled. A crash can land between appending to the history and saving the
optimizer state; :meth:`RunDirectory.history` is the source of truth and the caller replays
the evaluations that the saved state does not know yet.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from compressbo.exceptions import RunDirError
from compressbo.bo.loop import normalize_record
from compressbo.files import check_output_directory, write_json_atomic

__all__ = ["RunDirectory", "package_versions"]

CONFIG = "config.json"
HISTORY = "history.jsonl"
STATE = "optimizer_state.json"

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
            probe = run.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise RunDirError(
                f"cannot write the run directory {run.path} ({reason}); choose a writable --out"
            ) from None
        run.write_json(CONFIG, config)
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDirectory:
        """Open an existing run directory for resuming.

        Raises:
            UserInputError: ``path`` is not a run directory written by compressbo.
        """
        run = cls(Path(path))
        if not (run.path / CONFIG).is_file():
            raise RunDirError(
                f"--resume {run.path}: no {CONFIG} there; pass the --out directory of an earlier run"
            )
        try:
            config = run.config
            state = run.load_state()
        except (OSError, json.JSONDecodeError) as err:
            raise RunDirError(f"--resume {run.path}: cannot read its files ({err}); the run directory is damaged") from None
        if not isinstance(config, dict) or not (state is None or isinstance(state, dict)):
            raise RunDirError(f"--resume {run.path}: its {CONFIG} or {STATE} was not written by compressbo")
        return run

    def discard_if_empty(self) -> None:
        """Remove a run that never evaluated anything (its set-up failed), so ``--out`` stays free."""
        if (self.path / HISTORY).exists() or (self.path / STATE).exists():
            return
        (self.path / CONFIG).unlink(missing_ok=True)
        try:
            self.path.rmdir()
        except OSError:
            pass  # the directory holds files of the user's: leave it

    @property
    def config(self) -> dict[str, Any]:
        return self.read_json(CONFIG)

    def read_json(self, name: str) -> Any:
        with open(self.path / name) as f:
            return json.load(f)

    def write_json(self, name: str, obj: Any) -> None:
        """Write ``obj`` to ``name`` atomically (a crash leaves the old file or the new one)."""
        write_json_atomic(self.path / name, obj)

    def append(self, record: dict[str, Any]) -> None:
        """Append one evaluation to ``history.jsonl`` and force it to disk."""
        with open(self.path / HISTORY, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def history(self) -> list[dict[str, Any]]:
        """Every evaluation recorded so far, in order, in today's record schema.

        Records written by older versions (``theta`` for ``x``) are converted on load
        (:func:`compressbo.bo.loop.normalize_record`). A torn last line (no trailing newline: the process died mid-write) is dropped, and
        the file is truncated to its complete lines so later appends stay valid JSON Lines.

        Raises:
            UserInputError: A complete line is not a JSON object; the file is left as it is.
        """
        path = self.path / HISTORY
        if not path.exists():
            return []
        records, good_bytes = [], 0
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.endswith(b"\n"):
                    break  # only the last line can lack its newline
                records.append(normalize_record(_parse_record(raw, path, number)))
                good_bytes += len(raw)
        if good_bytes != path.stat().st_size:
            with open(path, "r+b") as f:
                f.truncate(good_bytes)
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
