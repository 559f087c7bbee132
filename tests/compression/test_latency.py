"""The latency measurement: medians of timed passes, adaptive repeats, the speedup as a ratio."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compressbo.compression.latency import MIN_REPEATS, compare_latency, measure_latency
from compressbo.exceptions import SettingError


def _wide() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))


def _narrow() -> nn.Module:
    torch.manual_seed(0)  # the same shapes in and out, 1/100 of the multiply-accumulates
    return nn.Sequential(nn.Flatten(), nn.Linear(1024, 8), nn.Linear(8, 10), nn.ReLU(), nn.Linear(10, 10))


def test_measure_latency_fields_are_positive_and_consistent() -> None:
    network = nn.Sequential(nn.Dropout(0.5), _wide()).train()
    result = measure_latency(network, (1, 32, 32), batch_size=16, seconds=0.05)
    assert not network.training  # measured in eval mode
    assert result.batch_size == result.requested_batch_size == 16
    assert 0 < result.min_ms <= result.median_ms
    assert result.images_per_s == pytest.approx(16 / (result.median_ms / 1e3))
    assert MIN_REPEATS <= result.repeats and result.device == "cpu" and result.threads >= 1


def test_repeats_adapt_to_the_time_budget() -> None:
    quick = measure_latency(nn.Linear(4, 2), (4,), seconds=0.05)
    slow = measure_latency(_wide(), (1, 32, 32), batch_size=256, seconds=0.05)
    assert quick.repeats > slow.repeats >= MIN_REPEATS


def test_a_batch_that_does_not_fit_the_pass_budget_is_cut_down_and_says_so() -> None:
    result = measure_latency(_wide(), (1, 32, 32), batch_size=64, seconds=0.02, max_pass_seconds=1e-9)
    assert result.batch_size == 1 and result.requested_batch_size == 64


def test_compare_latency_speedup_is_the_ratio_of_the_medians() -> None:
    latency = compare_latency(_wide(), _narrow(), (1, 32, 32), batch_sizes=(1, 64, 64), seconds=0.05)
    assert latency["device"] == "cpu" and [row["batch_size"] for row in latency["batches"]] == [1, 64]
    for row in latency["batches"]:
        assert row["speedup"] == pytest.approx(row["original"]["median_ms"] / row["compressed"]["median_ms"])
        assert row["original"]["batch_size"] == row["compressed"]["batch_size"] == row["batch_size"]
    # 100x fewer multiply-accumulates at batch 64: faster, even on a busy machine
    assert latency["batches"][1]["speedup"] > 1


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"seconds": 0.0}])
def test_bad_settings_raise_setting_error(kwargs) -> None:
    with pytest.raises(SettingError):
        measure_latency(nn.Linear(4, 2), (4,), **kwargs)
