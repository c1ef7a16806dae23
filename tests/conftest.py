"""Settings for the whole test suite."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _single_intra_op_thread():
    """Tests run tiny models, which are faster on one thread: with test servers and other processes sharing the
    cores, OpenMP workers that wait on each other turn 1 ms ops into 10 ms ones (measured: 22 s -> 2 s for the
    UNet/VAE tests)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
