r"""Budgets: minimize the error subject to ``cost(theta) <= R``, a known cost.

``target_ratio`` bounds the ``params`` cost (the compressed layers' parameter ratio) and
``target_flops`` the ``flops`` cost (their MAC ratio at the spec's input size); each needs
its own ``cost`` setting, and at most one is given. A budget is achievable when it is at
least the cost of the box's lower corner (every layer at its lowest ``theta``; with a box
reaching low enough that is every layer at rank 1) and below 1 (no compression at all).

:func:`achievable_range` computes that range from the spec alone: the architecture is built
with random weights (no weights file, no data, no decomposition), the layers' geometries
and call sizes are read from it (one shape-only pass on the ``meta`` device) and the exact
cost follows from the ranks. So an infeasible budget is refused before anything is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from compressbo.compression.cost import CompressionCost
from compressbo.exceptions import SettingError

__all__ = ["BUDGETS", "Budget", "achievable_range", "budget_of", "check_budget", "check_budget_settings"]

BUDGETS: dict[str, str] = {"target_ratio": "params", "target_flops": "flops"}
"""Budget setting -> the cost it bounds."""


@dataclass(frozen=True)
class Budget:
    """A budget: ``cost(theta) <= bound`` for the cost ``metric``, given as ``setting``."""

    setting: str
    metric: str
    bound: float

    def to_dict(self) -> dict[str, Any]:
        return {"setting": self.setting, "cost": self.metric, "bound": self.bound}


def budget_of(config: Any) -> Budget | None:
    """The budget a :class:`~compressbo.compression.config.ProblemConfig` sets, or None."""
    for name, metric in BUDGETS.items():
        value = getattr(config, name, None)
        if value is not None:
            return Budget(name, metric, float(value))
    return None


def check_budget_settings(config: Any) -> None:
    """One-line :class:`SettingError` if the budget settings contradict each other (nothing loaded).

    At most one budget; each with its own cost; a finite number; the error alone is modelled
    (the composite surrogate adds a cost that is here a constraint).
    """
    given = [name for name in BUDGETS if getattr(config, name, None) is not None]
    if len(given) > 1:
        raise SettingError(f"give one budget, not both {' and '.join(given)}", setting=given[1])
    if not given:
        return
    name = given[0]
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingError(f"{name} must be a number in (0, 1), got {value!r}", setting=name)
    if config.cost != BUDGETS[name]:
        other = next(n for n, m in BUDGETS.items() if m == config.cost)
        raise SettingError(
            f"{name} bounds the {BUDGETS[name]} cost but cost is {config.cost}; set cost {BUDGETS[name]}, or use {other}",
            setting=name,
        )
    if getattr(config, "surrogate", "sum") == "composite":
        raise SettingError(
            f"with {name} the cost is a constraint and the GP models the error alone; drop surrogate composite",
            setting="surrogate",
        )


def spec_cost(config: Any, *, trust_code: bool = True) -> tuple[CompressionCost, torch.Tensor]:
    """The known cost of the config's network and its ``2 x d`` box, from the spec alone.

    Args:
        config: A problem config (``model``, ``method``, ``scheme``, ``bounds``, ``cost``).
        trust_code: Import a spec builder that is not on the allowlist.

    Returns:
        ``(cost, bounds)``.
    """
    from compressbo.compression.build import build_network, check_layers
    from compressbo.compression.compressor import _io_sizes
    from compressbo.compression.lowrank import LayerGeometry
    from compressbo.compression.spec import load_spec

    spec = load_spec(config.model)
    spec = spec.with_method(config.method) if config.method is not None else spec
    network = build_network(spec, "random", trust_code=trust_code)
    modules = check_layers(network, spec)
    calls = _io_sizes(network, spec)
    layers = [(LayerGeometry.of(m), layer.method, list(calls.get(m, []))) for layer, m in zip(spec.layers, modules)]
    cost = CompressionCost(layers, config.cost, config.scheme or spec.scheme)
    bounds = spec.bounds
    if config.bounds is not None:
        bounds = torch.tensor(config.bounds, dtype=torch.float64).reshape(2, 1).expand(2, len(layers)).clone()
    return cost, bounds


def achievable_range(config: Any, *, trust_code: bool = True) -> tuple[float, float, float]:
    """``(lowest in the box, lowest at rank 1, 1.0)``: the budgets the box can meet are ``[lowest, 1)``."""
    cost, bounds = spec_cost(config, trust_code=trust_code)
    return cost.exact(bounds[0]), cost.minimum(), 1.0


def check_budget(config: Any, *, trust_code: bool = True) -> Budget | None:
    """The config's budget once it is achievable; a one-line :class:`SettingError` with the range if not."""
    check_budget_settings(config)
    budget = budget_of(config)
    if budget is None:
        return None
    lowest, rank_one, _ = achievable_range(config, trust_code=trust_code)
    if budget.bound < lowest or budget.bound >= 1.0:
        where = "every layer at rank 1" if lowest <= rank_one * (1 + 1e-12) else (
            f"every layer at the box's lower bound; rank 1 everywhere costs {rank_one:.4g}, lower the bounds to reach it"
        )
        raise SettingError(
            f"{budget.setting} {budget.bound:g} is not achievable: the {budget.metric} cost of this box ranges over "
            f"[{lowest:.4g}, 1) ({where}); choose {budget.setting} in that range",
            setting=budget.setting,
        )
    return budget
