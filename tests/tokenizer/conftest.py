"""Shared tokenizers for the tokenizer tests (loaded once per session)."""

from __future__ import annotations

import pytest

from lmforge.assets import asset_path
from lmforge.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def smollm_tok() -> Tokenizer:
    return Tokenizer.from_gguf(asset_path("smollm2"))


@pytest.fixture(scope="session")
def hf_smollm():
    """transformers' tokenizer for the same GGUF file: the oracle."""
    from transformers import AutoTokenizer

    path = asset_path("smollm2")
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="session")
def minilm_tok() -> Tokenizer:
    return Tokenizer.from_dir(asset_path("minilm"))
