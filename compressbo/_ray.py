"""Ray, where it is used (``compress --ray``, ``compare --ray``): imported on demand, started once.

Ray is an optional dependency (``pip install "compressbo[ray]"``); without it ``--ray`` is one
line saying which extra to install. :func:`connect` joins the cluster at ``address`` (as
``ray.init`` takes it: ``auto`` for a running cluster, ``ray://host:10001`` for a remote one)
or, without an address, starts a local Ray, unless this process is already connected.
"""

from __future__ import annotations

from typing import Any

from compressbo.exceptions import SettingError

__all__ = ["connect", "import_ray"]


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`SettingError` saying which extra to install."""
    try:
        import ray
    except ImportError:
        raise SettingError(
            'ray is not installed; install it with: pip install "compressbo[ray]"', setting="ray"
        ) from None
    return ray


def connect(address: str | None = None) -> Any:
    """The ``ray`` module, connected to ``address`` (``None``: a local Ray) unless already connected."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
    return ray
