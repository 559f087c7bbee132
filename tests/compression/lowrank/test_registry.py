"""The factorization registry: every method is one entry, and the shared code only asks the entry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compressbo.compression.lowrank import (
    FACTORIZATIONS,
    METHODS,
    FactorCache,
    Factorization,
    LayerGeometry,
    factorization,
    factorization_problem,
    factorized_params,
    max_ranks,
    rank_breakpoints,
    ranks_for_theta,
)
from compressbo.compression.lowrank.cache import expected_shapes
from compressbo.compression.lowrank.svd import SVDFactorization
from compressbo.exceptions import SettingError

LAYERS = {
    "svd": lambda: nn.Linear(12, 7),
    "tucker2": lambda: nn.Conv2d(6, 8, 3, padding=1),
    "vh": lambda: nn.Conv2d(5, 7, (3, 5), stride=2, padding=(1, 2), bias=False),
}


def test_methods_are_the_registry_entries() -> None:
    assert METHODS == tuple(FACTORIZATIONS) == ("svd", "tucker2", "vh")
    for name, entry in FACTORIZATIONS.items():
        assert isinstance(entry, Factorization) and entry.name == name and factorization(name) is entry
    assert [name for name, f in FACTORIZATIONS.items() if f.refinable] == ["tucker2"]
    with pytest.raises(SettingError, match="unknown factorization method 'cp'; choose one of svd, tucker2, vh") as error:
        factorization("cp")
    assert isinstance(error.value, ValueError) and error.value.setting == "method"


@pytest.mark.parametrize("method", METHODS)
def test_each_entry_counts_what_it_builds(method: str) -> None:
    """Shapes, parameter counts and full ranks of an entry agree with the modules it builds."""
    torch.manual_seed(0)
    layer = LAYERS[method]()
    entry, geometry = factorization(method), LayerGeometry.of(layer)
    assert factorization_problem(layer, method) is None
    factors = entry.decompose(layer.weight)
    assert {k: tuple(v.shape) for k, v in factors.state().items()} == expected_shapes(layer, method)
    assert entry.factors_from_state(factors.state()).state().keys() == factors.state().keys()
    for theta in (0.1, 0.4, 0.8):
        ranks = entry.check_ranks(geometry, ranks_for_theta(theta, geometry, method))
        module = entry.build(layer, factors, ranks)
        assert sum(p.numel() for p in module.parameters()) == factorized_params(geometry, method, ranks)
        assert str(entry.empty(layer, ranks, "meta")) == str(module)
    full = max_ranks(geometry, method)
    assert entry.modes(full) == tuple(full if isinstance(full, tuple) else (full,))


def test_a_new_method_is_one_entry(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A registered subclass works through the rank schemes, the factor cache and the builds, unchanged code."""

    class Copy(SVDFactorization):
        name = "svd_copy"

    monkeypatch.setitem(FACTORIZATIONS, "svd_copy", Copy())
    torch.manual_seed(1)
    layer, geometry = nn.Linear(12, 7), LayerGeometry(7, 12)
    for scheme in ("params", "plain"):
        assert rank_breakpoints(geometry, "svd_copy", scheme) == rank_breakpoints(geometry, "svd", scheme)
    cache = FactorCache(tmp_path)
    new, old = cache.get(layer, "svd_copy"), cache.get(layer, "svd")
    x = torch.randn(3, 12)
    assert new.ranks(0.3) == old.ranks(0.3) and new.params(2) == old.params(2)
    assert torch.equal(new.build(new.ranks(0.3))(x), old.build(old.ranks(0.3))(x))
    again = FactorCache(tmp_path)
    again.get(layer, "svd_copy")
    assert (cache.computed, again.loaded, again.computed) == (2, 1, 0)
    assert sorted(p.name.split("-")[0] for p in tmp_path.glob("*.pt")) == ["svd", "svd_copy"]
