"""Files compressbo writes: where its caches live, and how a file is replaced safely.

Every file compressbo writes goes through :func:`atomic_write` (a temporary file in the same
folder, then ``os.replace``, which replaces a symbolic link instead of writing through it) or
:func:`append_line` (``O_NOFOLLOW``); :func:`inside` keeps a file name inside its folder;
:func:`lock_directory` and :class:`FileLock` (``fcntl.flock``, released by the kernel when
the process dies) make one writer per run directory, comparison folder or cache entry.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

from compressbo.exceptions import RunDirError, UserInputError

__all__ = [
    "FileLock",
    "append_line",
    "atomic_write",
    "check_output_directory",
    "lock_directory",
    "unlock_directory",
    "file_sha256",
    "inside",
    "one_line",
    "refuse_links",
    "torch_save_atomic",
    "user_cache_dir",
    "write_json_atomic",
    "write_text_atomic",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


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
    write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write` (a link at ``path`` is replaced)."""
    atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def torch_save_atomic(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` with :func:`atomic_write`; a failed write is an ``OSError``.

    ``torch.save`` reports a full disk or a file-size limit as a ``RuntimeError`` from its
    C++ writer; it is raised here as ``OSError`` so that callers handle it like any other
    failed write (a cache warns, an export stops with one line), and no torn file is left.
    """
    import torch

    def save(temporary: Path) -> None:
        try:
            torch.save(obj, temporary)
        except RuntimeError as error:
            raise OSError(errno.EIO, f"write failed, is the disk full? ({one_line(str(error))})", str(path)) from None

    atomic_write(path, save)


def append_line(path: str | os.PathLike, line: bytes) -> None:
    """Append ``line`` to ``path`` and force it to disk, never through a symbolic link.

    Raises:
        OSError: The write failed (``ELOOP`` if ``path`` is a link). A failed write leaves
            the file as it was: the partial line is cut off again.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def one_line(text: str) -> str:
    """``text`` on one line: terminal colour codes removed, whitespace runs collapsed."""
    return " ".join(_ANSI.sub("", text).split())


def inside(directory: str | os.PathLike, name: str) -> Path:
    """``directory / name``, refused unless it stays inside ``directory``.

    Raises:
        UserInputError: ``name`` is absolute, has ``..`` or a separator leading out of
            ``directory``, or resolves (through links) outside it.
    """
    directory = Path(directory)
    candidate = directory / name
    base = directory.resolve()
    resolved = candidate.resolve()
    if Path(name).is_absolute() or (resolved != base and base not in resolved.parents):
        raise UserInputError(f"{name!r} would be written outside {directory}; use a plain file name")
    return candidate


def refuse_links(directory: str | os.PathLike, names: Iterable[str], *, what: str = "run directory") -> None:
    """Refuse a ``directory`` that is, or holds at any of ``names``, a symbolic link.

    compressbo replaces its files atomically, but a link planted in its folder could still
    point a reader or a later tool elsewhere; such a folder is not compressbo's own.

    Raises:
        RunDirError: One of them is a link.
    """
    directory = Path(directory)
    links = [directory] if directory.is_symlink() else []
    links += [directory / name for name in names if (directory / name).is_symlink()]
    if links:
        raise RunDirError(
            f"{links[0]} is a symbolic link; compressbo never writes through links: replace it "
            f"with a real file or folder, or use another {what}"
        )


class FileLock:
    """An exclusive ``fcntl.flock`` on a lock file, released on :meth:`release` or process death.

    Args:
        path: The lock file (created if missing; a link there is refused).
        blocking: Wait for the holder (``True``) or raise at once (``False``).

    Raises:
        BlockingIOError: ``blocking=False`` and another process holds the lock.
        OSError: The lock file cannot be created (an unwritable folder, a link).
    """

    def __init__(self, path: str | os.PathLike, *, blocking: bool = False) -> None:
        self.path = Path(path)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Release the lock (the file stays: removing it would race with the next writer)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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


# directories this process has locked: (device, inode) -> open descriptor. One process may
# open its own run twice (e.g. a report after the run); other processes are refused.
_LOCKED: dict[tuple[int, int], int] = {}


def lock_directory(directory: str | os.PathLike, *, what: str = "run directory", flag: str = "--out") -> None:
    """Lock ``directory`` for this process until it exits (``fcntl.flock`` on the directory).

    Raises:
        RunDirError: Another process holds the lock (one line, at once), or the directory
            cannot be opened.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        reason = "it is a symbolic link" if error.errno in (errno.ELOOP, errno.ENOTDIR) else (error.strerror or str(error))
        raise RunDirError(f"cannot open the {what} {directory} ({reason}); choose another {flag}") from None
    key = (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
    if key in _LOCKED:
        os.close(fd)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirError(
            f"{directory} is in use by another compressbo process; wait for it to finish (or stop "
            f"it) before writing to this {what}"
        ) from None
    _LOCKED[key] = fd


def unlock_directory(directory: str | os.PathLike) -> None:
    """Release this process's lock of ``directory`` (if it holds one)."""
    try:
        info = os.stat(directory, follow_symlinks=False)
    except OSError:
        return
    fd = _LOCKED.pop((info.st_dev, info.st_ino), None)
    if fd is not None:
        os.close(fd)
