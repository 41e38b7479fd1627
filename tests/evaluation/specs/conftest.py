import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Small matrices: one intra-op thread is fastest and immune to a busy CPU (OpenMP spin-waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
