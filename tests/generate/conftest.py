"""Fixtures for the generation tests (helpers live in generate_helpers.py)."""

import pytest
import torch
from generate_helpers import ByteTokenizer


@pytest.fixture
def byte_tokenizer() -> ByteTokenizer:
    return ByteTokenizer()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run thousands of microsecond-sized ops; a second intra-op thread only adds wake-up
    stalls (milliseconds each when the cores are shared), so these tests run single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
