"""Config fields that document themselves: the one definition of every setting.

A field made by :func:`setting` carries, in its ``metadata``, the line ``--help`` shows, the
argparse keywords of its flag, and its role:

- ``defines_problem``: results of two runs that differ in it are never pooled
  (``compare --resume`` checks it);
- ``resumable``: ``compress --resume`` may change it (how long, where: not what).

The command line, ``compare``'s problem settings and ``resume``'s fixed settings are all
derived from these fields (:func:`fields_where`), so each is written once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["fields_where", "setting"]


def setting(default: Any, help: str, *, defines_problem: bool = False, resumable: bool = False, **cli: Any) -> Any:
    """A dataclass field with its documentation (``cli``: argparse keywords beyond the name)."""
    metadata = {"help": help, "defines_problem": defines_problem, "resumable": resumable, "cli": cli}
    return dataclasses.field(default=default, metadata=metadata)


def fields_where(config: Any, key: str) -> tuple[str, ...]:
    """Names of the fields of ``config`` (a dataclass or its instance) whose metadata ``key`` is true."""
    return tuple(f.name for f in dataclasses.fields(config) if f.metadata.get(key))
