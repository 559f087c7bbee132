"""Files compressbo writes: where its caches live, and how a file is replaced safely."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from compressbo.exceptions import RunDirError

__all__ = ["atomic_write", "check_output_directory", "user_cache_dir", "write_json_atomic"]


def user_cache_dir() -> Path:
    """compressbo's cache directory.

    ``$COMPRESSBO_CACHE`` if set, else ``$XDG_CACHE_HOME/compressbo``, else
    ``~/.cache/compressbo``. Trained FC3 weights live at its top, layer factors in ``factors/``.
    """
    if os.environ.get("COMPRESSBO_CACHE"):
        return Path(os.environ["COMPRESSBO_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "compressbo"


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Replace ``path`` with what ``write(temporary_path)`` writes, all at once.

    The content goes to a temporary file in the same folder, is forced to disk, and then
    renamed over ``path``: a crash leaves the old file or the new one, never a torn one, and
    never a stray temporary file. The new file gets the mode ``open(path, "w")`` would give
    it (``0o666`` less the umask).
    """
    path = Path(path)
    temporary = _create_temporary(path)
    try:
        write(temporary)
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _create_temporary(path: Path) -> Path:
    """Create a new empty file beside ``path`` with ``open()``'s permissions and return its path.

    ``tempfile.mkstemp`` would create it with mode ``0o600``; ``os.open`` with ``0o666`` lets
    the umask decide, as for every other file compressbo writes.
    """
    while True:
        temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue  # another writer drew the same name: draw again
        return temporary


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``path`` with :func:`atomic_write`."""
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(obj, indent=indent) + "\n"))


def check_output_directory(
    path: str | os.PathLike, *, flag: str = "--out", keep: Collection[str] = (), kind: str = "output"
) -> Path:
    """Check a directory a command is about to fill, before anything is written.

    ``path`` may be new, an empty directory, or a directory holding one of the files in
    ``keep`` (earlier output of the same command, which the caller refuses or resumes).
    Anything else would mix the command's files with the user's, or overwrite them.

    Args:
        path: The directory, as the user gave it.
        flag: The command-line flag that named it, for the message.
        keep: Names of files that mark the command's own earlier output.
        kind: What that earlier output is called in the message (e.g. ``"run"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        UserInputError: ``path`` is empty, names something that is not a directory, or a
            non-empty directory holding none of ``keep``.
    """
    if not str(path).strip():
        raise RunDirError(f"{flag} must name a directory; give a path such as {flag} results")
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise RunDirError(f"{flag} {directory} is a file, not a directory; choose a new or empty directory")
    if directory.is_dir() and not any((directory / name).exists() for name in keep):
        try:
            holds_files = any(directory.iterdir())
        except OSError as err:
            raise RunDirError(
                f"cannot read {flag} {directory} ({err.strerror or type(err).__name__}); choose a readable directory"
            ) from None
        if holds_files:
            raise RunDirError(
                f"{flag} {directory} exists and holds other files, not a compressbo {kind}; "
                "choose a new or empty directory"
            )
    return directory
