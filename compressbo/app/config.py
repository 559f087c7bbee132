"""The settings of a compression run: the problem's, the search's and the runtime's.

:class:`CompressConfig` is the three configs side by side (``config.json``'s ``settings``
keep their flat layout): :class:`~compressbo.compression.config.ProblemConfig` (what is
minimized), :class:`~compressbo.bo.config.SearchConfig` (how it is searched) and
:class:`~compressbo.compression.config.RuntimeConfig` (where it is evaluated). The command
line's flags, ``compare``'s problem settings and the settings ``--resume`` may change are
all derived from the fields' metadata (:func:`compressbo._settings.fields_where`).

Example:
    >>> config = CompressConfig(model="fc3", acq="cei", iterations=10)
    >>> config.validate()
    >>> config.problem().gamma, config.search().iterations
    (1.0, 10)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from compressbo._settings import fields_where
from compressbo.bo.config import SearchConfig
from compressbo.compression.config import ProblemConfig, RuntimeConfig
from compressbo.exceptions import SettingError

__all__ = ["PROBLEM_SETTINGS", "RESUMABLE_SETTINGS", "CompressConfig"]

_Part = TypeVar("_Part")


@dataclass
class CompressConfig(RuntimeConfig, SearchConfig, ProblemConfig):
    """Every setting of a compression run (written to ``config.json``).

    The fields are those of :class:`ProblemConfig`, :class:`SearchConfig` and
    :class:`RuntimeConfig`; each part's docstrings and ``metadata["help"]`` say what they mean.
    """

    def resolved_warp(self) -> str:
        """The GP input warping this run uses: ``warp``, or :data:`DEFAULT_WARP` where ``acq`` takes one."""
        from compressbo.bo.optimizer import applicable_warp
        from compressbo.experiments.compression_problem import DEFAULT_WARP

        return applicable_warp(self.acq, DEFAULT_WARP) if self.warp is None else self.warp

    def resolved_surrogate(self) -> str:
        """The surrogate this run uses: ``surrogate``, or :data:`DEFAULT_SURROGATE` where it applies.

        A budget (``target_ratio`` or ``target_flops``) makes the cost a constraint and the
        objective the error alone, so budgeted runs model that with ``sum``; so do
        acquisitions that need a GP of the objective itself.
        """
        from compressbo.bo.optimizer import applicable_surrogate
        from compressbo.experiments.compression_problem import DEFAULT_SURROGATE

        if self.surrogate is not None:
            return self.surrogate
        if self.target_ratio is not None or self.target_flops is not None:
            return "sum"
        return applicable_surrogate(self.acq, DEFAULT_SURROGATE)

    def problem(self) -> ProblemConfig:
        return self._part(ProblemConfig)

    def search(self) -> SearchConfig:
        return self._part(SearchConfig)

    def runtime(self) -> RuntimeConfig:
        return self._part(RuntimeConfig)

    def _part(self, cls: type[_Part]) -> _Part:
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    def validate(self) -> None:
        """Check everything that needs nothing loaded, each part by its owner's checks."""
        SearchConfig.validate(self)
        ProblemConfig.validate(self)
        RuntimeConfig.validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> CompressConfig:
        """The config saved by :meth:`to_dict`, validated (a damaged one raises SettingError)."""
        names = {f.name for f in dataclasses.fields(cls)}
        # what runs from before the warping and the composite surrogate used (they recorded neither)
        settings = {"warp": "none", "surrogate": "sum", **settings}
        try:
            config = cls(**{k: v for k, v in settings.items() if k in names})
            if config.bounds is not None:
                config.bounds = tuple(config.bounds)
            config.validate()
        except SettingError:
            raise  # e.g. the saved device is not here: the message names the setting to change
        except (TypeError, ValueError) as err:
            raise SettingError(f"the saved settings are damaged ({err}); start a new run") from None
        return config


PROBLEM_SETTINGS: tuple[str, ...] = fields_where(CompressConfig, "defines_problem")
"""Settings that define the objective: runs that differ in one are never pooled."""

RESUMABLE_SETTINGS: tuple[str, ...] = fields_where(CompressConfig, "resumable")
"""Settings ``compress --resume`` may change: how long (``iterations``) and where."""
