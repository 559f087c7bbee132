"""Progress bars that follow the log level (shared by the compression side and the app).

A bar is shown when ``compressbo``'s logger is enabled for INFO (the command line's default;
``--quiet`` sets ERROR) and stderr is a terminal (tqdm's own rule), so library callers who
configure no logging, and the tests, see no bars.
"""

from __future__ import annotations

import logging
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar", "progress_enabled"]


def progress_enabled() -> bool:
    """Whether compressbo logs at INFO (then bars may be shown)."""
    return logging.getLogger("compressbo").isEnabledFor(logging.INFO)


def progress_bar(iterable: Any = None, *, enabled: bool | None = None, **options: Any) -> tqdm:
    """A tqdm bar, disabled unless ``enabled`` (default :func:`progress_enabled`) and on a terminal.

    Args:
        iterable: What to iterate over, if anything.
        enabled: ``False`` hides the bar; ``None`` follows the log level.
        **options: tqdm keywords (``total``, ``desc``, ``unit``, ...).
    """
    enabled = progress_enabled() if enabled is None else enabled
    return tqdm(iterable, disable=None if enabled else True, dynamic_ncols=True, **options)
