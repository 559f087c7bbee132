"""The factorization methods by name: :data:`FACTORIZATIONS`, one :class:`~.factorization.Factorization` each.

Adding a method is one subclass of :class:`~.factorization.Factorization` and one entry here.
"""

from __future__ import annotations

from compressbo.exceptions import SettingError

from .factorization import Factorization
from .svd import SVD
from .tucker import TUCKER2
from .vh import VH

__all__ = ["FACTORIZATIONS", "METHODS", "check_method", "factorization", "unknown_method"]

FACTORIZATIONS: dict[str, Factorization] = {f.name: f for f in (SVD, TUCKER2, VH)}
METHODS: tuple[str, ...] = tuple(FACTORIZATIONS)


def unknown_method(method: object) -> str:
    """The message for a name that is not in :data:`FACTORIZATIONS`."""
    return f"unknown factorization method {method!r}; choose one of {', '.join(METHODS)}"


def factorization(method: str) -> Factorization:
    """The :class:`~.factorization.Factorization` named ``method``.

    Raises:
        SettingError: ``method`` is not one of :data:`METHODS` (a ``ValueError``).
    """
    try:
        return FACTORIZATIONS[method]
    except (KeyError, TypeError):
        raise SettingError(unknown_method(method), setting="method") from None


def check_method(method: str) -> str:
    """``method`` if it is a known factorization, else :class:`SettingError` naming them."""
    factorization(method)
    return method
