"""The SQLite + FAISS store: incremental re-indexing, embedding reuse, transactions, settings checks."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from lmforge import rag
from lmforge.errors import LMForgeError
from lmforge.rag.store import SQLiteStore


def test_first_build(built):
    folder, store, report = built
    assert sorted(report.added) == sorted(
        [
            "volcano.md",
            "bread.txt",
            "chess.html",
            "notes/rivers.md",
            "insects.jsonl#bees",
            "insects.jsonl#ants",
        ]
    )
    assert report.documents == 6 and report.chunks > 6 and report.chunks_embedded == report.chunks
    db = sqlite3.connect(store)
    settings = dict(db.execute("SELECT key, value FROM settings"))
    assert (
        settings["chunk_tokens"] == "24" and settings["overlap"] == "8" and settings["encoder"] == '"minilm"'
    )
    assert len(settings["encoder_fingerprint"]) == 24 + 2  # a JSON string
    # every chunk's text is its document's text at its span
    rows = db.execute(
        'SELECT d.text, c.start, c."end", c.text FROM chunks c JOIN documents d ON d.id = c.doc'
    ).fetchall()
    assert all(doc[a:b] == text for doc, a, b, text in rows)
    assert (store.parent / (store.name + ".faiss")).exists()


def test_reindex_adds_replaces_deletes_and_reuses(own_store, minilm):
    folder, store = own_store
    again = rag.index([folder], store)
    assert (again.added, again.replaced, again.deleted, again.unchanged) == ([], [], [], 6)
    assert again.chunks_embedded == 0
    # change one document's last paragraph, add one, delete one
    volcano = (folder / "volcano.md").read_text()
    (folder / "volcano.md").write_text(volcano.replace("Mauna Loa in Hawaii", "Mauna Kea on Hawaii Island"))
    (folder / "glaciers.txt").write_text("Glaciers are rivers of ice that carve U-shaped valleys.")
    (folder / "bread.txt").unlink()
    report = rag.index([folder], store)
    assert (
        report.added == ["glaciers.txt"]
        and report.replaced == ["volcano.md"]
        and report.deleted == ["bread.txt"]
    )
    assert report.unchanged == 4
    # only chunks whose text changed were embedded; the volcano's unchanged chunks were reused
    assert report.chunks_reused >= 1 and report.chunks_embedded < report.chunks
    hits = rag.search(store, "ice carving valleys", mode="dense", k=1)
    assert hits[0].path == "glaciers.txt"
    assert all(h.path != "bread.txt" for h in rag.search(store, "yeast dough", mode="bm25", k=10))
    assert rag.search(store, "Mauna Kea", mode="bm25", k=1)[0].path == "volcano.md"
    # the embeddings equal a from-scratch encoding of the same chunks
    db = sqlite3.connect(store)
    texts, blobs = zip(*db.execute("SELECT text, embedding FROM chunks ORDER BY id"))
    stored = np.stack([np.frombuffer(b, np.float32) for b in blobs])
    fresh = minilm.embed(list(texts), normalize=True).numpy()
    np.testing.assert_allclose(stored, fresh, atol=1e-5)


def test_interrupted_run_keeps_the_previous_index(own_store, monkeypatch):
    folder, store = own_store
    before = rag.Index(store).search("yeast dough", mode="bm25", k=3)
    (folder / "bread.txt").write_text("Bread is now about rye and caraway seeds only.")
    (folder / "zzz.md").write_text("# Z\n\nA brand new document about zebras.")

    def boom(self, doc, chunks, hashes, emb):
        raise KeyboardInterrupt  # killed in the middle of writing a batch

    monkeypatch.setattr(SQLiteStore, "put_document", boom)
    with pytest.raises(KeyboardInterrupt):
        rag.index([folder], store)
    monkeypatch.undo()
    idx = rag.Index(store)
    assert idx.store.counts()[0] == 6
    after = idx.search("yeast dough", mode="bm25", k=3)
    assert [(h.path, h.text) for h in after] == [(h.path, h.text) for h in before]
    assert idx.search("yeast", mode="dense", k=1)[0].path == "bread.txt"
    # the next run completes the work
    report = rag.index([folder], store)
    assert report.added == ["zzz.md"] and report.replaced == ["bread.txt"]


def test_faiss_cache_rebuilt_when_stale(own_store):
    folder, store = own_store
    faiss_file = store.parent / (store.name + ".faiss")
    faiss_file.unlink()
    hits = rag.Index(store).search("lava", mode="dense", k=1)
    assert hits[0].path == "volcano.md" and faiss_file.exists()


def test_other_chunking_or_encoder_refused(own_store):
    folder, store = own_store
    with pytest.raises(LMForgeError, match=r"chunk_tokens 24 \(asked: 100\)"):
        rag.index([folder], store, chunk_tokens=100)
    db = sqlite3.connect(store)
    db.execute("UPDATE settings SET value = '\"0123\"' WHERE key = 'encoder_fingerprint'")
    db.commit()
    with pytest.raises(LMForgeError, match="fingerprint 0123"):
        rag.index([folder], store)


def test_bad_input(tmp_path, built):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.bin").write_bytes(b"\x00\x01")
    with pytest.raises(LMForgeError, match="empty corpus"):
        rag.index([tmp_path / "empty"], tmp_path / "e.db")
    with pytest.raises(LMForgeError, match="does not exist"):
        rag.Index(tmp_path / "missing.db")
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(LMForgeError, match="not an lmforge store"):
        rag.Index(tmp_path / "junk.db")
    with pytest.raises(LMForgeError, match="empty query"):
        rag.search(built[1], "   ")
    with pytest.raises(LMForgeError, match="exceeds what the encoder reads"):
        rag.index([built[0]], tmp_path / "big.db", chunk_tokens=600)


def test_fingerprint_survives_a_new_config_field_at_its_default():
    import dataclasses

    from lmforge.config import ModelConfig
    from lmforge.lm import LM
    from lmforge.rag.api import encoder_fingerprint
    from tiny import tiny_model

    model = tiny_model("bert", head="none")
    before = encoder_fingerprint(LM(model, None, source="tiny"))
    # a later ModelConfig with one more field whose default keeps the old behaviour
    Later = dataclasses.make_dataclass(
        "Later", [("new_option", int, dataclasses.field(default=0))], bases=(ModelConfig,)
    )
    model.config = Later(**dataclasses.asdict(model.config))
    assert encoder_fingerprint(LM(model, None, source="tiny")) == before
    model.config = dataclasses.replace(model.config, new_option=3)  # a value that changes the model
    assert encoder_fingerprint(LM(model, None, source="tiny")) != before
