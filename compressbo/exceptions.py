"""compressbo's exceptions: one root, one type per kind of bad input.

Library code raises the type that says *what* is wrong, in the library's own terms (a
setting's name, a file's path), never a command-line flag. The command line turns every
:class:`CompressboError` into one line ``compressbo: error: <message>`` and exit code 2;
where the error names the setting at fault (``setting``), the line also names the flag that
changes it.

Hierarchy::

    CompressboError
     +-- UserInputError (also a ValueError: bad input from the user or the caller)
          +-- SettingError     a setting out of range or inconsistent with another
          +-- SpecError        a network spec (TOML) that cannot be used
          |    +-- SpecNotFoundError  no spec of that name or path
          +-- WeightsError     a weights or checkpoint file, or a weights name
          +-- DataError        a dataset: missing files, a wrong layout, unreadable images
          +-- RunDirError      a run or comparison directory: missing, damaged, locked
          +-- CacheError       a cache that cannot be used (most are warnings instead)
          +-- UntrustedCodeError  a file names code to run that is not on the allowlist
          +-- OptimizerInputError  bad input to the BO engine (bounds, observations, options)

Example:
    >>> from compressbo.exceptions import SettingError, UserInputError
    >>> error = SettingError("gamma must be a non-negative number, got -1", setting="gamma")
    >>> isinstance(error, UserInputError) and isinstance(error, ValueError)
    True
    >>> error.setting
    'gamma'
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "CompressboError",
    "DataError",
    "OptimizerInputError",
    "ReportedInterrupt",
    "EvaluationError",
    "RunDirError",
    "SettingError",
    "SpecError",
    "SpecNotFoundError",
    "UntrustedCodeError",
    "UserInputError",
    "WeightsError",
]


class CompressboError(Exception):
    """Root of every error compressbo raises on purpose.

    Args:
        message: What is wrong and how to fix it, in the library's terms.
        setting: The name of the setting at fault (a config field such as ``"gamma"``), if
            one is; the command line names the flag that changes it.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class UserInputError(CompressboError, ValueError):
    """Bad input from the user or the caller: a message that names the problem and the fix.

    The command line prints ``compressbo: error: <message>`` on one line and exits with
    code 2; library callers get an ordinary ``ValueError`` subclass.
    """


class SettingError(UserInputError):
    """A setting out of its range, of the wrong type, or inconsistent with another one."""


class SpecError(UserInputError):
    """A network spec that cannot be read or used (unknown name, bad key, bad layer)."""


class SpecNotFoundError(SpecError):
    """A spec name that is neither a spec in the models folders nor a file."""


class WeightsError(UserInputError):
    """Weights that cannot be loaded: a missing or damaged file, a wrong name or shape."""


class DataError(UserInputError):
    """A dataset that cannot be used: missing files, a wrong folder layout, bad images."""


class RunDirError(UserInputError):
    """A run or comparison directory that cannot be created, resumed or reported."""


class CacheError(UserInputError):
    """A cache that cannot be used at all (a damaged entry is a warning and is rebuilt)."""


class UntrustedCodeError(UserInputError):
    """A file names code to import that is not on the allowlist, without ``trust_code``."""


class OptimizerInputError(UserInputError):
    """Bad input to the BO engine: bounds, observations, options or a saved state."""


class ReportedInterrupt(KeyboardInterrupt):
    """Ctrl-C, after the command has said on stderr what was saved and how to continue."""


class EvaluationError(CompressboError):
    """An evaluation failed :data:`compressbo.app.parallel.MAX_ATTEMPTS` times (its worker died or raised).

    Everything finished is saved; ``--resume`` continues once the cause is fixed.
    """
