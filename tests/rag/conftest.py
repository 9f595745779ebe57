"""A small real corpus (Markdown, text, HTML, JSONL on distinct topics) indexed once with the real
MiniLM encoder; tests that change a store build their own copy."""

from __future__ import annotations

import pytest
from rag_corpus import write_corpus


@pytest.fixture(scope="session")
def minilm():
    from lmforge.rag.models import load_model

    return load_model("minilm")


@pytest.fixture(scope="session")
def built(tmp_path_factory, minilm):
    """(corpus folder, store path, IndexReport) of the shared read-only index (small chunks so each
    document gives several)."""
    from lmforge import rag

    folder = write_corpus(tmp_path_factory.mktemp("corpus"))
    store = tmp_path_factory.mktemp("store") / "index.db"
    report = rag.index([folder], store, chunk_tokens=24, overlap=8)
    return folder, store, report


@pytest.fixture
def own_store(tmp_path, minilm):
    """A private index of a private copy of the corpus (folder, store path), for tests that change it."""
    from lmforge import rag

    folder = write_corpus(tmp_path / "corpus")
    store = tmp_path / "index.db"
    rag.index([folder], store, chunk_tokens=24, overlap=8)
    return folder, store
