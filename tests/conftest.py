import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """Run every test on one torch thread.

    The suite's linear algebra is small; on a busy 2-core machine OpenMP threads spin-wait
    for each other and make it 10-100x slower. One thread keeps the tests fast and stable.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
