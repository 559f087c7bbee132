import pytest
import torch

from compressbo.compression.training import pretrained_fc3_weights


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


@pytest.fixture(scope="session")
def fc3_cache(tmp_path_factory: pytest.TempPathFactory):
    """A private cache directory holding FC3 trained briefly (2 epochs) on digits.

    Point ``COMPRESSBO_CACHE`` at it and the job and comparisons find FC3 there instead of
    training it for every test.
    """
    folder = tmp_path_factory.mktemp("cache")
    pretrained_fc3_weights(cache_dir=folder, epochs=2)
    return folder
