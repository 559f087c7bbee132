"""compressbo: low-rank network compression tuned by noise-aware Bayesian optimization.

The public API is imported lazily, so ``import compressbo`` stays cheap and the
compression side does not pay for BoTorch (and vice versa).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    # BO engine
    "Optimizer": "compressbo.optimizer",
    "make_acquisition": "compressbo.acquisition",
    "ACQUISITION_NAMES": "compressbo.acquisition",
    "CorrectedExpectedImprovement": "compressbo.acquisition",
    "LogCorrectedExpectedImprovement": "compressbo.acquisition",
    "CorrectedProbabilityOfImprovement": "compressbo.acquisition",
    "fit_gp": "compressbo.gp",
    # compression
    "load_spec": "compressbo.networks",
    "build_network": "compressbo.networks",
    "Compressor": "compressbo.networks",
    "load_compressed": "compressbo.networks",
    "save_compressed": "compressbo.networks",
    "factorize_linear": "compressbo.lowrank",
    "factorize_conv": "compressbo.lowrank",
    "UserInputError": "compressbo.errors",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'compressbo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
