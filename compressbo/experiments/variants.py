"""Acquisition variants of a comparison: ``NAME[@WARP][+SURROGATE]``, e.g. ``cei``, ``cei@log``,
``cei@log+composite``.

A comparison runs each listed variant on every seed. ``NAME`` is an acquisition from
``compressbo.bo.acquisition.ACQUISITION_NAMES``; ``@WARP`` (one of
``compressbo.bo.models.warping.WARP_NAMES``) sets the GP's input warping of that variant.
Without it a variant uses the problem's default warping where the acquisition takes one
(``learned`` for compression problems unless ``--warp`` says otherwise, ``none`` for synthetic
problems and GP samples), so ``cei@none cei@log`` compare the two side by side on the same
seeds and initial designs. ``+SURROGATE`` (``sum`` or ``composite``) chooses the surrogate:
``composite`` models the error alone and adds the problem's known cost exactly (problems with
a ``known_cost``: compression). Without it a variant uses the problem's default surrogate
where the acquisition works on it (``composite`` for compression problems unless
``--surrogate`` says otherwise, ``sum`` for everything else).
"""

from __future__ import annotations

from dataclasses import dataclass

from compressbo.bo.acquisition import ACQUISITION_NAMES
from compressbo.bo.models.warping import WARP_NAMES
from compressbo.bo.optimizer import SURROGATES, applicable_surrogate, applicable_warp
from compressbo.exceptions import SettingError

__all__ = ["Variant", "parse_variant"]


@dataclass(frozen=True)
class Variant:
    """One compared setting.

    Attributes:
        label: The name as given (``cei@log``): the key of its runs and its report row.
        acquisition: The acquisition name (``cei``).
        warp: The warping it asks for, or None for the problem's default.
        surrogate: The surrogate it asks for (``sum`` or ``composite``), or None for the
            problem's default.
    """

    label: str
    acquisition: str
    warp: str | None = None
    surrogate: str | None = None

    def resolved_warp(self, problem_default: str) -> str:
        """The warping its optimizer uses, given the problem's default."""
        return self.warp if self.warp is not None else applicable_warp(self.acquisition, problem_default)

    def resolved_surrogate(self, problem_default: str) -> str:
        """The surrogate its optimizer uses, given the problem's default."""
        return self.surrogate if self.surrogate is not None else applicable_surrogate(self.acquisition, problem_default)


def parse_variant(label: str) -> Variant:
    """``NAME[@WARP][+SURROGATE]`` as a :class:`Variant`; a one-line :class:`SettingError` if malformed."""
    head, plus, surrogate = str(label).partition("+")
    if plus and surrogate not in SURROGATES:
        raise SettingError(
            f"unknown surrogate {surrogate!r} in {label!r}; write NAME[@WARP]+SURROGATE with SURROGATE "
            f"one of {', '.join(SURROGATES)}",
            setting="acq",
        )
    name, at, warp = head.partition("@")
    if name not in ACQUISITION_NAMES:
        raise SettingError(
            f"unknown acquisition {name!r}{'' if name == label else f' in {label!r}'}; "
            f"choose from {', '.join(ACQUISITION_NAMES)}"
            + ("" if name == label else " (as NAME[@WARP][+SURROGATE], e.g. cei@log+composite)"),
            setting="acq",
        )
    if at and warp not in WARP_NAMES:
        raise SettingError(
            f"unknown warp {warp!r} in {label!r}; write NAME@WARP with WARP one of {', '.join(WARP_NAMES)}",
            setting="acq",
        )
    return Variant(str(label), name, warp if at else None, surrogate if plus else None)

