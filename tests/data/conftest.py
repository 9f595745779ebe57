"""Fixtures for the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import train_tokenizer

from lmforge.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def tiny_tok() -> Tokenizer:
    return train_tokenizer()


@pytest.fixture(scope="session")
def tiny_tok_dir(tmp_path_factory, tiny_tok) -> Path:
    path = tmp_path_factory.mktemp("tok")
    tiny_tok.save(path)
    return path
