"""Values to and from JSON: the one encoding of tensors, numpy scalars and tuples.

A tensor becomes its nested lists (``Tensor.tolist``). Where it must come back as a tensor
(an optimizer's acquisition options), :func:`tag_tensors` wraps those lists as
``{"tensor": lists}`` and :func:`untag_tensors` rebuilds them (``float64``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["TENSOR_TAG", "jsonable", "tag_tensors", "untag_tensors"]

TENSOR_TAG = "tensor"


def jsonable(value: Any) -> Any:
    """``value`` with tensors and numpy arrays as nested lists, numpy scalars as Python numbers,
    tuples as lists and dict keys as strings (recursively), so ``json.dumps`` takes it."""
    if isinstance(value, (Tensor, np.ndarray)):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def tag_tensors(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` as :func:`jsonable`, with each tensor value as ``{"tensor": nested lists}``."""
    return {k: {TENSOR_TAG: jsonable(v)} if isinstance(v, Tensor) else jsonable(v) for k, v in options.items()}


def untag_tensors(options: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`tag_tensors`: ``{"tensor": lists}`` values back to ``float64`` tensors."""
    return {
        k: torch.tensor(v[TENSOR_TAG], dtype=torch.float64) if isinstance(v, dict) and set(v) == {TENSOR_TAG} else v
        for k, v in options.items()
    }
