"""Shared fixtures of the application tests: FC3 from the session's trained cache."""

from __future__ import annotations

import pytest


@pytest.fixture
def env(fc3_cache, monkeypatch, tmp_path):
    """A fresh directory, with ``COMPRESSBO_CACHE`` pointing at the trained FC3 (inherited by subprocesses)."""
    monkeypatch.setenv("COMPRESSBO_CACHE", str(fc3_cache))
    return tmp_path
