"""Shared test fixtures."""
from __future__ import annotations

import pytest


@pytest.fixture()
def one_torch_thread():
    """Tests of numerics run single-threaded: faster on a shared 2-core box, and reproducible reductions."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
