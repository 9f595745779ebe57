"""The embedded store: one SQLite file (documents, chunks, metadata, embeddings, settings) and a FAISS
index beside it (`STORE.faiss`).

SQLite is the source of truth and every change is a transaction: a document and all its chunks are
written (or deleted) together, and the store's `version` is bumped in the same transaction, so a run
killed at any point leaves every document either fully in its old state or fully in its new one. The
FAISS file is a cache of the stored embeddings, tagged with the version it was built at; when the tag
and the store disagree (a killed run, another writer) it is rebuilt from SQLite without re-embedding.

`sentence_vectors` caches what the sentence reranker embeds: the unit vectors of a chunk's sentences,
keyed by the chunk's content hash and the encoder's fingerprint, filled at the first query that reranks
the chunk. A cache changes no result, so writing it does not bump the version; its rows go in the
transaction that removes the last chunk with their hash (a replaced or deleted document).

Both backends (this one and `pgstore.PostgresStore`) offer the same methods; `Index` uses only those.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import LMForgeError
from lmforge.rag.chunking import Chunk
from lmforge.rag.ingest import Document

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, hash TEXT NOT NULL, root TEXT NOT NULL,
    source TEXT NOT NULL, title TEXT NOT NULL, mtime REAL NOT NULL, meta TEXT NOT NULL, text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, doc INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ord INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL, section TEXT NOT NULL,
    tokens INTEGER NOT NULL, hash TEXT NOT NULL, text TEXT NOT NULL, embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc);
CREATE INDEX IF NOT EXISTS chunks_hash ON chunks(hash);
CREATE TABLE IF NOT EXISTS sentence_vectors (
    hash TEXT NOT NULL, encoder TEXT NOT NULL, n INTEGER NOT NULL, vectors BLOB NOT NULL,
    PRIMARY KEY (hash, encoder)
);
"""

FILTER_FIELDS = ("path", "title", "section", "root", "source")


def chunk_row(r: Any, path: str, title: str) -> dict[str, Any]:
    return {
        "id": int(r[0]),
        "path": path,
        "title": title,
        "ord": int(r[1]),
        "start": int(r[2]),
        "end": int(r[3]),
        "section": r[4],
        "text": r[5],
    }


def check_filters(filters: dict[str, Any]) -> None:
    unknown = set(filters) - set(FILTER_FIELDS) - {"meta"}
    if unknown:
        raise LMForgeError(
            f"unknown filter field(s) {', '.join(sorted(unknown))}; filter on {', '.join(FILTER_FIELDS)} or meta"
        )


def matches(row: dict[str, Any], filters: dict[str, Any]) -> bool:
    """Does a chunk's metadata pass the filters (exact value or glob; `meta` is a dict of them)?"""
    for key, want in filters.items():
        if key == "meta":
            meta = row.get("meta") or {}
            if not all(fnmatch.fnmatchcase(str(meta.get(k, "")), str(v)) for k, v in want.items()):
                return False
        elif not fnmatch.fnmatchcase(str(row.get(key, "")), str(want)):
            return False
    return True


class SQLiteStore:
    kind = "sqlite"

    def __init__(self, path: str | Path, create: bool = False, faiss_index: str = "flat"):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise LMForgeError(
                f"store {self.path} does not exist: build it with `lmforge rag index PATH --store {self.path}`"
            )
        if self.path.exists() and self.path.is_dir():
            raise LMForgeError(
                f"store {self.path} is a folder; give a file name such as {self.path}/index.db"
            )
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise LMForgeError(f"{self.path} is not an lmforge store (SQLite says: {exc})") from None
        self.faiss_kind = self.settings().get("faiss_index", faiss_index)
        self._faiss = None
        self._faiss_version = -1

    @property
    def faiss_path(self) -> Path:
        return self.path.with_name(self.path.name + ".faiss")

    def close(self) -> None:
        self.db.close()

    # --- settings and version -------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM settings")}

    def _set(self, key: str, value: Any) -> None:
        self.db.execute(
            "INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    def set_settings(self, values: dict[str, Any]) -> None:
        with self.transaction():
            for k, v in values.items():
                self._set(k, v)

    def version(self) -> int:
        row = self.db.execute("SELECT value FROM settings WHERE key = 'version'").fetchone()
        return int(json.loads(row[0])) if row else 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._set("version", self.version() + 1)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # --- documents and chunks -------------------------------------------------------------------------
    def documents(self) -> dict[str, tuple[str, str]]:
        """{path: (hash, root)} of every stored document."""
        return {p: (h, r) for p, h, r in self.db.execute("SELECT path, hash, root FROM documents")}

    def document_paths(self) -> dict[str, str]:
        """{stored path: absolute source} of every document."""
        return dict(self.db.execute("SELECT path, source FROM documents"))

    def embeddings_by_hash(self, hashes: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i in range(0, len(hashes), 500):
            part = hashes[i : i + 500]
            marks = ",".join("?" * len(part))
            for h, blob in self.db.execute(
                f"SELECT hash, embedding FROM chunks WHERE hash IN ({marks})", part
            ):
                out[h] = np.frombuffer(blob, dtype=np.float32)
        return out

    def _delete(self, path: str) -> list[str]:
        """Remove a document and its chunks; the hashes its chunks had."""
        old = [
            h
            for (h,) in self.db.execute(
                "SELECT c.hash FROM chunks c JOIN documents d ON d.id = c.doc WHERE d.path = ?", (path,)
            )
        ]
        self.db.execute("DELETE FROM documents WHERE path = ?", (path,))
        return old

    def _prune_sentence_vectors(self, hashes: list[str]) -> None:
        """Drop the cached sentence vectors of those `hashes` no chunk has any more."""
        hashes = sorted(set(hashes))
        for i in range(0, len(hashes), 500):
            part = hashes[i : i + 500]
            marks = ",".join("?" * len(part))
            self.db.execute(
                f"DELETE FROM sentence_vectors WHERE hash IN ({marks}) "
                "AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.hash = sentence_vectors.hash)",
                part,
            )

    def delete_document(self, path: str) -> None:
        """Inside a transaction: remove a document, its chunks and their cached sentence vectors."""
        self._prune_sentence_vectors(self._delete(path))

    def sentence_vectors(self, hashes: list[str], encoder: str) -> dict[str, np.ndarray]:
        """{chunk hash: (sentences, d) float32} cached for `encoder` (a fingerprint), of those `hashes`
        that have them."""
        out: dict[str, np.ndarray] = {}
        for i in range(0, len(hashes), 500):
            part = hashes[i : i + 500]
            marks = ",".join("?" * len(part))
            for h, n, blob in self.db.execute(
                f"SELECT hash, n, vectors FROM sentence_vectors WHERE encoder = ? AND hash IN ({marks})",
                [encoder, *part],
            ):
                out[h] = np.frombuffer(blob, dtype=np.float32).reshape(n, -1)
        return out

    def put_sentence_vectors(self, vectors: dict[str, np.ndarray], encoder: str) -> None:
        """Cache sentence vectors in one transaction that leaves the version alone (results do not
        change), only for hashes some chunk still has. Best effort: a store another process is writing
        (or a read-only file) is left alone at once, and the search goes on uncached."""
        self.db.execute("PRAGMA busy_timeout = 0")
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return
        finally:
            self.db.execute("PRAGMA busy_timeout = 5000")
        try:
            self.db.executemany(
                "INSERT OR IGNORE INTO sentence_vectors(hash, encoder, n, vectors) SELECT ?, ?, ?, ? "
                "WHERE EXISTS (SELECT 1 FROM chunks WHERE hash = ?)",
                [
                    (h, encoder, len(v), np.ascontiguousarray(v, np.float32).tobytes(), h)
                    for h, v in vectors.items()
                ],
            )
            self.db.execute("COMMIT")
        except sqlite3.OperationalError:
            self.db.execute("ROLLBACK")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def put_document(self, doc: Document, chunks: list[Chunk], hashes: list[str], emb: np.ndarray) -> None:
        """Inside a transaction: write a document (replacing one at the same path) and its chunks."""
        old = self._delete(doc.path)
        cur = self.db.execute(
            "INSERT INTO documents(path, hash, root, source, title, mtime, meta, text) VALUES (?,?,?,?,?,?,?,?)",
            (doc.path, doc.id, doc.root, doc.source, doc.title, doc.mtime, json.dumps(doc.meta), doc.text),
        )
        doc_id = cur.lastrowid
        self.db.executemany(
            'INSERT INTO chunks(doc, ord, start, "end", section, tokens, hash, text, embedding) '
            "VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (
                    doc_id,
                    i,
                    c.start,
                    c.end,
                    c.section,
                    c.tokens,
                    h,
                    c.text,
                    np.ascontiguousarray(e, np.float32).tobytes(),
                )
                for i, (c, h, e) in enumerate(zip(chunks, hashes, emb))
            ],
        )
        self._prune_sentence_vectors(old)

    def counts(self) -> tuple[int, int]:
        docs = self.db.execute("SELECT count(*) FROM documents").fetchone()[0]
        chunks = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return int(docs), int(chunks)

    def chunk_texts(self) -> tuple[np.ndarray, list[str]]:
        """(chunk ids, texts) of every chunk, in id order (what BM25 indexes)."""
        rows = self.db.execute("SELECT id, text FROM chunks ORDER BY id").fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def chunks(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for i in range(0, len(ids), 500):
            part = [int(x) for x in ids[i : i + 500]]
            marks = ",".join("?" * len(part))
            for r in self.db.execute(
                f'SELECT c.id, c.ord, c.start, c."end", c.section, c.text, d.path, d.title, d.root, d.source, d.meta '
                f"FROM chunks c JOIN documents d ON d.id = c.doc WHERE c.id IN ({marks})",
                part,
            ):
                row = chunk_row(r, r[6], r[7])
                row.update(root=r[8], source=r[9], meta=json.loads(r[10]))
                out[row["id"]] = row
        return out

    def filter_ids(self, filters: dict[str, Any]) -> np.ndarray:
        """Ids of the chunks whose document passes `filters`."""
        check_filters(filters)
        rows = self.db.execute(
            "SELECT c.id, d.path, d.title, c.section, d.root, d.source, d.meta FROM chunks c JOIN documents d ON d.id = c.doc"
        )
        keep = [
            r[0]
            for r in rows
            if matches(
                {
                    "path": r[1],
                    "title": r[2],
                    "section": r[3],
                    "root": r[4],
                    "source": r[5],
                    "meta": json.loads(r[6]),
                },
                filters,
            )
        ]
        return np.asarray(keep, dtype=np.int64)

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self.db.execute("SELECT id, embedding FROM chunks ORDER BY id").fetchall()
        ids = np.asarray([r[0] for r in rows], dtype=np.int64)
        if not rows:
            return ids, np.zeros((0, 0), dtype=np.float32)
        return ids, np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])

    def embeddings_of(self, ids: list[int]) -> np.ndarray:
        """Embeddings (len(ids), d) of the given chunks, in that order."""
        found: dict[int, np.ndarray] = {}
        for i in range(0, len(ids), 500):
            part = [int(x) for x in ids[i : i + 500]]
            marks = ",".join("?" * len(part))
            for cid, blob in self.db.execute(f"SELECT id, embedding FROM chunks WHERE id IN ({marks})", part):
                found[cid] = np.frombuffer(blob, dtype=np.float32)
        return np.stack([found[int(i)] for i in ids])

    # --- dense search (FAISS) -------------------------------------------------------------------------
    def _build_faiss(self):
        import faiss

        ids, emb = self.embeddings()
        dim = emb.shape[1] if len(ids) else int(self.settings().get("dim", 384))
        if self.faiss_kind == "hnsw":
            inner = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efSearch = 128
        elif self.faiss_kind == "ivf" and len(ids) >= 64:
            nlist = max(1, int(np.sqrt(len(ids))))
            inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            inner.train(emb)
            inner.nprobe = max(1, nlist // 8)
        else:
            inner = faiss.IndexFlatIP(dim)
        index = faiss.IndexIDMap2(inner)
        if len(ids):
            index.add_with_ids(emb, ids)
        return index

    def faiss_index(self):
        """The FAISS index at the store's current version (read from disk, or rebuilt and saved)."""
        import faiss

        version = self.version()
        if self._faiss is not None and self._faiss_version == version:
            return self._faiss
        tag = self.faiss_path.with_name(self.faiss_path.name + ".version")
        index = None
        if self.faiss_path.exists() and tag.exists() and tag.read_text().strip() == str(version):
            index = faiss.read_index(str(self.faiss_path))
        if index is None:
            index = self._build_faiss()
            from lmforge.io.atomic import atomic_file, atomic_write_text

            with atomic_file(self.faiss_path) as tmp:
                faiss.write_index(index, str(tmp))
            atomic_write_text(tag, str(version))
        self._faiss, self._faiss_version = index, version
        return index

    def dense_search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, inner products) of the `k` nearest chunks, best first."""
        import faiss

        index = self.faiss_index()
        if index.ntotal == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
        scores, ids = index.search(np.ascontiguousarray(query.reshape(1, -1), np.float32), k, params=params)
        keep = ids[0] >= 0
        return ids[0][keep].astype(np.int64), scores[0][keep]

    def size_bytes(self) -> int:
        files = [self.path, self.faiss_path, Path(str(self.path) + "-wal")]
        return sum(os.path.getsize(f) for f in files if f.exists())
