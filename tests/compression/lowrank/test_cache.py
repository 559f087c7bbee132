from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from compressbo.compression.lowrank import FactorCache, LayerFactors, default_cache_dir, weight_key


def _conv() -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(8, 16, 3, padding=1)


def test_second_cache_loads_factors_from_disk_without_decomposing(tmp_path: Path) -> None:
    conv, x = _conv(), torch.randn(1, 8, 7, 7)
    first = FactorCache(tmp_path)
    built = first.get(conv, "tucker2").build((5, 3))
    files = list(tmp_path.glob("tucker2-*.pt"))
    assert first.computed == 1 and first.loaded == 0 and len(files) == 1
    second = FactorCache(tmp_path)
    again = second.get(conv, "tucker2").build((5, 3))
    assert second.computed == 0 and second.loaded == 1
    assert torch.equal(built(x), again(x))
    assert second.get(conv, "vh").build(4)(x).shape == (1, 16, 7, 7)  # another method: its own file
    assert second.computed == 1 and len(list(tmp_path.glob("*.pt"))) == 2


def test_key_follows_weights_and_method() -> None:
    conv = _conv()
    key = weight_key(conv.weight, "tucker2")
    assert key == weight_key(conv.weight.clone(), "tucker2") != weight_key(conv.weight, "vh")
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] += 1e-3
    assert weight_key(conv.weight, "tucker2") != key


def test_unreadable_file_is_recomputed(tmp_path: Path) -> None:
    conv = _conv()
    cache = FactorCache(tmp_path)
    path = cache.path(conv, "tucker2")
    path.write_bytes(b"not a torch file")
    factors = cache.get(conv, "tucker2")
    assert cache.computed == 1
    torch.testing.assert_close(factors.factors.reconstruct((16, 8)), conv.weight.detach(), rtol=1e-4, atol=1e-5)
    assert FactorCache(tmp_path).get(conv, "tucker2") is not None and path.stat().st_size > 100


def test_an_unwritable_cache_warns_and_still_returns_the_factors(tmp_path: Path) -> None:
    conv = _conv()
    (tmp_path / "factors").write_text("a file where the cache folder should be")
    with pytest.warns(RuntimeWarning, match="cannot write the factor cache.*COMPRESSBO_CACHE"):
        factors = FactorCache(tmp_path / "factors").get(conv, "tucker2")
    torch.testing.assert_close(factors.factors.reconstruct((16, 8)), conv.weight.detach(), rtol=1e-4, atol=1e-5)


def test_no_disk_cache_and_default_location(tmp_path: Path, monkeypatch) -> None:
    cache = FactorCache(False)
    assert cache.path(_conv(), "vh") is None and isinstance(cache.get(_conv(), "vh"), LayerFactors)
    monkeypatch.setenv("COMPRESSBO_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "factors"


def test_decomposition_and_refinement_run_on_the_threads_asked_for(monkeypatch) -> None:
    import compressbo.compression.lowrank.cache as cache_module
    from compressbo.compression.lowrank import _params, factorization

    seen = []
    real_decompose, real_refine = cache_module.decompose, factorization("tucker2").refine

    def decompose(*args):
        seen.append(("decompose", torch.get_num_threads()))
        return real_decompose(*args)

    def refine(*args):
        seen.append(("refine", torch.get_num_threads()))
        return real_refine(*args)

    monkeypatch.setattr(cache_module, "decompose", decompose)
    monkeypatch.setattr(factorization("tucker2"), "refine", refine)  # the registry's Tucker-2 entry
    before = torch.get_num_threads()
    factors = FactorCache(False).get(_conv(), "tucker2", threads=2)
    factors.build((4, 4), refine=True, threads=3)
    factors.build((4, 4))
    assert seen == [("decompose", 2), ("refine", 3)] and torch.get_num_threads() == before

    assert _params.resolve_threads(3) == 3
    assert 1 <= _params.resolve_threads(None) <= min(torch.get_num_threads(), _params.machine_threads())
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            _params.resolve_threads(bad)
    monkeypatch.setattr(_params.os, "getloadavg", lambda: (50.0, 0.0, 0.0))
    assert _params.machine_threads() == 1  # a loaded machine: one thread, never oversubscribed
