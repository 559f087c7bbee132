"""CompressionSetup: a setup rebuilt elsewhere from another's weights and factors is the same problem."""

from __future__ import annotations

import torch

from compressbo.compression.config import ProblemConfig, RuntimeConfig
from compressbo.compression.setup import CompressionSetup


def test_a_prebuilt_setup_reads_no_weights_decomposes_nothing_and_evaluates_the_same(fc3_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("COMPRESSBO_CACHE", str(fc3_cache))
    problem, runtime = ProblemConfig(samples="100"), RuntimeConfig(device="cpu")
    driver = CompressionSetup.load(problem, runtime, seed=3)
    shipped = driver.prebuilt()
    assert all(t.device.type == "cpu" for t in shipped.state_dict.values())

    monkeypatch.setenv("COMPRESSBO_CACHE", str(tmp_path / "empty"))  # no weights, no factors here
    worker = CompressionSetup.load(problem, runtime, seed=3, prebuilt=shipped)
    assert worker.compressor.decomposed == [] and not (tmp_path / "empty" / "factors").exists()
    assert worker.fingerprints == driver.fingerprints
    theta = torch.tensor([0.12, 0.3, 0.7], dtype=torch.float64)
    a, b = driver.objective()(theta, index=5), worker.objective()(theta, index=5)
    assert (a.y, a.yvar, a.error, a.ratio) == (b.y, b.yvar, b.error, b.ratio)
