"""Which architecture builders a file may name: an allowlist, or the caller's explicit trust.

A spec names its builder as ``"module:function"`` (or a bare torchvision model name), and
building the network imports and calls it: a file that names a builder chooses code to run.
A spec the user names on the command line is the user's own code; a spec *inside* a file
compressbo reads later (``compressed.json``, a run directory's ``config.json``) is not. For
those, only builders on the allowlist are imported:

- torchvision's model builders (``torchvision.models.list_models`` of ``torchvision.models``
  and its sub-packages), by bare name (``"vgg16"``) or ``"torchvision.models:vgg16"``;
- compressbo's own architectures (``compressbo.compression.architectures:fc3``, and its
  name before the package was laid out by role, ``compressbo.architectures:fc3``).

Anything else needs ``trust_code=True`` (``--trust-code`` on the command line), like
``trust_remote_code`` in the Hugging Face ecosystem.

Example:
    >>> resolve_builder("vgg16", trust_code=False).__name__
    'vgg16'
    >>> resolve_builder("os:system", trust_code=False)
    Traceback (most recent call last):
    ...
    compressbo.exceptions.UntrustedCodeError: builder 'os:system' is not on compressbo's allowlist ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

from compressbo.exceptions import SpecError, UntrustedCodeError

__all__ = ["OWN_ARCHITECTURES", "RENAMED_BUILDERS", "is_allowed", "resolve_builder"]

# builders of compressbo's own architectures under their names before the package was laid out
# by role, so compressed models and run directories saved then still load
RENAMED_BUILDERS = {"compressbo.architectures:fc3": "compressbo.compression.architectures:fc3"}
OWN_ARCHITECTURES = "compressbo.compression.architectures"
_TORCHVISION_MODULES = (
    "torchvision.models",
    "torchvision.models.detection",
    "torchvision.models.optical_flow",
    "torchvision.models.quantization",
    "torchvision.models.segmentation",
    "torchvision.models.video",
)


def _canonical(builder: str) -> tuple[str, str]:
    """``(module, function)`` of a builder name; module ``""`` for a bare torchvision name."""
    module_name, _, function_name = RENAMED_BUILDERS.get(builder, builder).rpartition(":")
    return module_name, function_name


def is_allowed(builder: str) -> bool:
    """Whether ``builder`` is on the allowlist (a torchvision model or a compressbo architecture)."""
    module_name, function_name = _canonical(builder)
    if module_name == OWN_ARCHITECTURES:
        from compressbo.compression import architectures

        return function_name in architectures.__all__ and function_name.islower()
    if module_name in ("", *_TORCHVISION_MODULES):
        import torchvision.models

        try:
            if not module_name:
                return function_name in torchvision.models.list_models()
            return function_name in torchvision.models.list_models(module=importlib.import_module(module_name))
        except Exception:  # a torchvision without list_models(module=...)
            return False
    return False


def resolve_builder(builder: str, *, trust_code: bool, what: str = "") -> Callable[..., nn.Module]:
    """The architecture builder named ``builder``, imported only if allowed or trusted.

    Args:
        builder: ``"module:function"`` or a torchvision model name.
        trust_code: Import any ``module:function`` (the caller vouches for the file).
        what: Prefix of error messages (the spec's name).

    Raises:
        UntrustedCodeError: ``builder`` is not on the allowlist and ``trust_code`` is False;
            nothing was imported.
        SpecError: It cannot be imported, or is not a torchvision model name.
    """
    prefix = f"{what}: " if what else ""
    module_name, function_name = _canonical(builder)
    if not trust_code and not is_allowed(builder):
        raise UntrustedCodeError(
            f"{prefix}builder {builder!r} is not on compressbo's allowlist (torchvision models and "
            f"compressbo's own architectures), so it was not imported; if you trust the file that "
            f"names it, pass trust_code=True (--trust-code on the command line)"
        )
    if not module_name:
        import torchvision.models

        try:
            return torchvision.models.get_model_builder(function_name)
        except ValueError:
            raise SpecError(
                f"{prefix}builder {builder!r} is not a torchvision model name; "
                "use a torchvision name such as 'vgg16' or 'package.module:function'"
            ) from None
    try:
        return getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError):
        raise SpecError(f"{prefix}cannot import builder {builder!r}; check 'module:function'") from None
