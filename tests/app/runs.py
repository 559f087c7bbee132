"""Helpers of the end-to-end ``compress`` tests: the fast optimizer flags and a run's history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FAST = ["--num-restarts", "2", "--raw-samples", "32", "--samples", "100", "--quiet"]
"""Few restarts and raw samples, m = 100, no progress bar: properties, not quality, are tested."""


def read_history(directory: Path) -> list[dict[str, Any]]:
    """The records of ``directory/history.jsonl``, in file order."""
    return [json.loads(line) for line in (directory / "history.jsonl").read_text().splitlines()]
