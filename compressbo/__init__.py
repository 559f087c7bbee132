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
    "Optimizer": "compressbo.bo.optimizer",
    "make_acquisition": "compressbo.bo.acquisition",
    "ACQUISITION_NAMES": "compressbo.bo.acquisition",
    "CorrectedExpectedImprovement": "compressbo.bo.acquisition",
    "LogCorrectedExpectedImprovement": "compressbo.bo.acquisition",
    "CorrectedProbabilityOfImprovement": "compressbo.bo.acquisition",
    "fit_gp": "compressbo.bo.models.gp",
    # compression
    "load_spec": "compressbo.compression.spec",
    "build_network": "compressbo.compression.build",
    "Compressor": "compressbo.compression.compressor",
    "load_compressed": "compressbo.compression.export",
    "save_compressed": "compressbo.compression.export",
    "factorize_linear": "compressbo.compression.lowrank",
    "factorize_conv": "compressbo.compression.lowrank",
    "UserInputError": "compressbo.exceptions",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'compressbo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
