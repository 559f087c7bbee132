"""Worker processes that exit when their parent dies, however it dies.

A worker of a process pool blocks on its task queue; if the parent is killed (SIGKILL, an
out-of-memory kill, a crash) nobody closes that queue and the worker waits forever, holding
its memory. :func:`exit_with_parent`, called first thing in a worker (a pool's
``initializer``), makes sure it does not outlive the parent:

- on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` asks the kernel to kill the worker when the
  thread that started it exits (pools start their workers from the parent's main thread or
  its long-lived manager thread; the watchdog below covers the rest);
- everywhere, a daemon watchdog thread waits on the parent's sentinel
  (``multiprocessing.parent_process()``, a pipe the kernel closes when the parent dies) and
  polls ``os.getppid()``; when the parent is gone it ends the worker with ``os._exit``.

Shared by ``compressbo compare``'s pool and any later pool (Ray, processes) of compressbo.

Example:
    >>> from concurrent.futures import ProcessPoolExecutor
    >>> pool = ProcessPoolExecutor(2, initializer=exit_with_parent)  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading

__all__ = ["EXIT_CODE", "exit_with_parent"]

EXIT_CODE = 70  # a worker ended because its parent died (os._exit: no clean-up, no output)
_PR_SET_PDEATHSIG = 1
_POLL_SECONDS = 0.5


def exit_with_parent(parent_pid: int | None = None) -> None:
    """Make this process exit when its parent process dies (see the module docstring).

    Args:
        parent_pid: The parent's pid; default ``os.getppid()`` now. If the parent is already
            gone (the worker started as it died), the process exits at once.
    """
    parent_pid = os.getppid() if parent_pid is None else parent_pid
    _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(EXIT_CODE)
    watchdog = threading.Thread(target=_watch, args=(parent_pid,), name="compressbo-parent-watchdog", daemon=True)
    watchdog.start()


def _set_parent_death_signal() -> bool:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on Linux; ``False`` where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int) -> None:
    """Wait until the parent is gone, then end this process at once."""
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None) if parent is not None and parent.pid == parent_pid else None
    while True:
        if sentinel is not None:
            try:
                if multiprocessing.connection.wait([sentinel], timeout=_POLL_SECONDS):
                    break
            except (OSError, ValueError):
                sentinel = None
        else:
            threading.Event().wait(_POLL_SECONDS)
        if os.getppid() != parent_pid:
            break
    os._exit(EXIT_CODE)
