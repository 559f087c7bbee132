from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """Run LAPACK on one thread: on a busy 2-core machine OpenMP/MKL threads spin-wait and
    small SVDs get 10-100x slower; one thread keeps these tests fast and stable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
