"""The sentence reranker's cache: a chunk's sentence vectors are embedded once, kept in the store
under the chunk's content hash and the encoder's fingerprint, give the uncached scores exactly, and go
with their chunk."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from rag_corpus import write_corpus

from lmforge import rag
from lmforge.rag.ingest import content_hash
from lmforge.rag.rerank import sentence_scores

QUERY = "how do bees tell each other where flowers are"
OPTS = {"mode": "hybrid-rerank", "rerank": "sentence", "k": 8, "rerank_depth": 8, "rerank_weight": 1.0}


@pytest.fixture
def store_of_paragraphs(tmp_path, minilm):
    """A private index whose chunks hold several sentences each (folder, store path)."""
    folder = write_corpus(tmp_path / "corpus")
    store = tmp_path / "index.db"
    rag.index([folder], store, chunk_tokens=64, overlap=8)
    return folder, store


def _cached(store) -> dict[str, int]:
    return dict(sqlite3.connect(store).execute("SELECT hash, n FROM sentence_vectors"))


def _chunk_hashes(store) -> set[str]:
    return {h for (h,) in sqlite3.connect(store).execute("SELECT hash FROM chunks")}


def test_cached_scores_equal_the_uncached_ones(store_of_paragraphs, monkeypatch):
    _, store = store_of_paragraphs
    assert _cached(store) == {}
    cold = rag.Index(store)
    hits = cold.search(QUERY, **OPTS)
    # the uncached reference: every sentence of the reranked chunks embedded now, best similarity each
    texts = [h.text for h in cold.search(QUERY, mode="hybrid", k=8)]
    want = sentence_scores(cold.embed, cold.query_vector(QUERY), texts)
    assert sorted(h.score for h in hits) == sorted(want)  # bit for bit
    assert set(_cached(store)) == {content_hash(t) for t in texts}
    assert cold.sentence_vectors_embedded == sum(_cached(store).values()) > len(texts)
    # a new process (fresh in-memory caches) reads them back and embeds no sentence
    warm = rag.Index(store)
    warm.query_vector(QUERY)
    monkeypatch.setattr(warm, "embed", lambda *a, **k: pytest.fail("a cached sentence was re-embedded"))
    again = warm.search(QUERY, **OPTS)
    assert [(h.chunk_id, h.score) for h in again] == [(h.chunk_id, h.score) for h in hits]
    assert warm.sentence_vectors_embedded == 0
    # the vectors are keyed by the encoder's fingerprint: another encoder does not read them
    assert warm.store.sentence_vectors(list(_cached(store)), "another-encoder") == {}


def test_changed_chunks_get_new_vectors_and_deleted_ones_go(store_of_paragraphs):
    folder, store = store_of_paragraphs
    idx = rag.Index(store)
    for query in ("volcano lava eruptions Hawaii", "bread yeast dough"):
        idx.search(query, mode="hybrid-rerank", rerank="sentence", k=20, rerank_depth=20)
    before = _cached(store)
    bread = {
        content_hash(t)
        for (t,) in sqlite3.connect(store).execute(
            "SELECT c.text FROM chunks c JOIN documents d ON d.id = c.doc WHERE d.path = 'bread.txt'"
        )
    }
    assert bread and bread <= set(before)
    volcano = (folder / "volcano.md").read_text()
    (folder / "volcano.md").write_text(volcano.replace("Mauna Loa in Hawaii", "Mauna Kea on Hawaii Island"))
    (folder / "bread.txt").unlink()
    rag.index([folder], store)
    after = _cached(store)
    assert not bread & set(after)  # the deleted document's rows went with it
    assert set(after) <= _chunk_hashes(store)  # no row outlives its chunk
    kept = set(before) & _chunk_hashes(store)
    assert kept and kept == set(after)  # the unchanged chunks (volcano's too) keep theirs
    # the changed chunk is embedded at its next rerank; nothing else is
    fresh = rag.Index(store)
    hits = fresh.search(
        "Mauna Kea on Hawaii Island", mode="hybrid-rerank", rerank="sentence", k=20, rerank_depth=20
    )
    new = {content_hash(h.text) for h in hits} - kept
    assert new and fresh.sentence_vectors_embedded == sum(_cached(store)[h] for h in new)
    ref = sentence_scores(
        fresh.embed, fresh.query_vector("Mauna Kea on Hawaii Island"), [h.text for h in hits]
    )
    got = fresh.sentence_vectors([h.text for h in hits])
    np.testing.assert_allclose(
        [float((v @ fresh.query_vector("Mauna Kea on Hawaii Island")).max()) for v in got], ref, atol=1e-6
    )


def test_sentence_vectors_at_index_time(tmp_path, minilm, monkeypatch):
    folder = write_corpus(tmp_path / "corpus")
    store = tmp_path / "index.db"
    report = rag.index([folder], store, chunk_tokens=64, overlap=8, sentence_vectors=True)
    assert set(_cached(store)) == _chunk_hashes(store)  # every chunk's, before any query
    assert report.sentences_embedded == sum(_cached(store).values())
    idx = rag.Index(store)
    idx.query_vector(QUERY)
    monkeypatch.setattr(idx, "embed", lambda *a, **k: pytest.fail("embedded at query time"))
    assert idx.search(QUERY, mode="hybrid-rerank", rerank="sentence", k=3)
    monkeypatch.undo()
    # re-indexing a change embeds the changed chunks' sentences only
    (folder / "glaciers.txt").write_text("Glaciers are rivers of ice. They carve U-shaped valleys.")
    again = rag.index([folder], store, sentence_vectors=True)
    assert again.sentences_embedded == 2 and set(_cached(store)) == _chunk_hashes(store)


def test_a_store_being_written_is_searched_uncached(store_of_paragraphs):
    """Filling the cache is best effort: while another process holds the store's write lock, a search
    neither waits for it nor fails; it reranks uncached, with the same result."""
    _, store = store_of_paragraphs
    writer = sqlite3.connect(store, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        locked = rag.Index(store).search(QUERY, **OPTS)
        assert _cached(store) == {}
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    free = rag.Index(store)
    assert [(h.chunk_id, h.score) for h in free.search(QUERY, **OPTS)] == [
        (h.chunk_id, h.score) for h in locked
    ]
    assert _cached(store)
