"""Files compressbo writes: where its caches live, and how a file is replaced safely."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "user_cache_dir", "write_json_atomic"]


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
    never a stray temporary file.
    """
    path = Path(path)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``path`` with :func:`atomic_write`."""
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(obj, indent=indent) + "\n"))
