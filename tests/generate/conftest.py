"""Fixtures for the generation tests (helpers live in generate_helpers.py)."""

import pytest

from generate_helpers import ByteTokenizer, tiny_model


@pytest.fixture
def byte_tokenizer() -> ByteTokenizer:
    return ByteTokenizer()
