"""The one JSON encoding of tensors (compressbo._json), and its users."""

from __future__ import annotations

import json

import numpy as np
import torch

from compressbo._json import jsonable, tag_tensors, untag_tensors


def test_jsonable_turns_tensors_numpy_and_tuples_into_plain_json() -> None:
    value = {1: (torch.tensor([[1.5, 2.0]]), np.int64(3)), "r": [(4, 5), np.float32(0.5)], "a": np.arange(2)}
    encoded = jsonable(value)
    assert encoded == {"1": [[[1.5, 2.0]], 3], "r": [[4, 5], 0.5], "a": [0, 1]}
    assert type(encoded["1"][1]) is int and json.loads(json.dumps(encoded)) == encoded


def test_tagged_tensors_come_back_as_float64_tensors() -> None:
    options = {"f_star": 0.05, "weights": torch.tensor([0.25, 0.75], dtype=torch.float32), "kernel": "rbf"}
    stored = json.loads(json.dumps(tag_tensors(options)))
    assert stored == {"f_star": 0.05, "weights": {"tensor": [0.25, 0.75]}, "kernel": "rbf"}
    back = untag_tensors(stored)
    assert back["f_star"] == 0.05 and back["kernel"] == "rbf"
    assert back["weights"].dtype == torch.float64 and torch.equal(back["weights"], options["weights"].double())


def test_the_optimizer_state_and_the_objective_records_use_it() -> None:
    from compressbo.bo import optimizer
    from compressbo.compression import objective

    assert not hasattr(optimizer, "_jsonable") and not hasattr(objective, "_jsonable")
    assert optimizer.tag_tensors is tag_tensors and objective.jsonable is jsonable
