"""Where compressbo keeps what it computes once: trained FC3 weights and layer factors."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["user_cache_dir"]


def user_cache_dir() -> Path:
    """compressbo's cache directory.

    ``$COMPRESSBO_CACHE`` if set, else ``$XDG_CACHE_HOME/compressbo``, else
    ``~/.cache/compressbo``. Trained FC3 weights live at its top, layer factors in ``factors/``.
    """
    if os.environ.get("COMPRESSBO_CACHE"):
        return Path(os.environ["COMPRESSBO_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "compressbo"
