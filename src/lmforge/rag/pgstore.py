"""The scale-path store: PostgreSQL with pgvector, behind the same methods as `SQLiteStore`.

Tables live in a schema of their own (`lmforge_rag` unless the URL's `?schema=` says otherwise).
Embeddings are `vector` columns; dense search is an exact inner-product scan (`ORDER BY embedding <#> q`,
pgvector's negative inner product); approximate pgvector indexes are not built yet. Every write is one
transaction, with the same `version` counter; the sentence reranker's cache (`sentence_vectors`) works
as in `SQLiteStore`.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from lmforge.errors import LMForgeError
from lmforge.rag.chunking import Chunk
from lmforge.rag.ingest import Document
from lmforge.rag.store import check_filters, chunk_row, matches


def _split_schema(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), "lmforge_rag")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
        raise LMForgeError(f"schema name {schema!r} in the store URL must be a plain identifier")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def _vec(value: Any) -> np.ndarray:
    """A pgvector value (a `Vector`, or an array) as float32."""
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=np.float32)


class PostgresStore:
    kind = "postgresql"

    def __init__(self, url: str, create: bool = False, faiss_index: str = "flat"):
        import psycopg
        from pgvector.psycopg import register_vector

        self.url, self.schema = _split_schema(url)
        shown = urlsplit(self.url)._replace(netloc=urlsplit(self.url).hostname or "").geturl()
        try:
            self.db = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LMForgeError(f"cannot reach PostgreSQL at {shown}: {first}") from None
        self.db.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(self.db)
        s = self.schema
        exists = self.db.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'settings'",
            (s,),
        ).fetchone()
        if not exists and not create:
            raise LMForgeError(
                f"store {shown} (schema {s}) does not exist: build it with `lmforge rag index PATH --store URL`"
            )
        self.db.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {s}.settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {s}.documents (id BIGSERIAL PRIMARY KEY, path TEXT UNIQUE NOT NULL, "
            "hash TEXT NOT NULL, root TEXT NOT NULL, source TEXT NOT NULL, title TEXT NOT NULL, "
            "mtime DOUBLE PRECISION NOT NULL, meta JSONB NOT NULL, text TEXT NOT NULL)"
        )
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {s}.chunks (id BIGSERIAL PRIMARY KEY, "
            f"doc BIGINT NOT NULL REFERENCES {s}.documents(id) ON DELETE CASCADE, ord INT NOT NULL, "
            'start INT NOT NULL, "end" INT NOT NULL, section TEXT NOT NULL, tokens INT NOT NULL, '
            "hash TEXT NOT NULL, text TEXT NOT NULL, embedding vector NOT NULL)"
        )
        self.db.execute(f"CREATE INDEX IF NOT EXISTS chunks_doc ON {s}.chunks(doc)")
        self.db.execute(f"CREATE INDEX IF NOT EXISTS chunks_hash ON {s}.chunks(hash)")
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {s}.sentence_vectors (hash TEXT NOT NULL, encoder TEXT NOT NULL, "
            "n INT NOT NULL, vectors BYTEA NOT NULL, PRIMARY KEY (hash, encoder))"
        )
        self.faiss_kind = self.settings().get("faiss_index", faiss_index)
        self._in_tx = False

    def close(self) -> None:
        self.db.close()

    def settings(self) -> dict[str, Any]:
        return {
            k: json.loads(v) for k, v in self.db.execute(f"SELECT key, value FROM {self.schema}.settings")
        }

    def _set(self, key: str, value: Any) -> None:
        self.db.execute(
            f"INSERT INTO {self.schema}.settings(key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    def set_settings(self, values: dict[str, Any]) -> None:
        with self.transaction():
            for k, v in values.items():
                self._set(k, v)

    def version(self) -> int:
        row = self.db.execute(f"SELECT value FROM {self.schema}.settings WHERE key = 'version'").fetchone()
        return int(json.loads(row[0])) if row else 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.db.transaction():
            self.db.execute(f"LOCK TABLE {self.schema}.settings IN EXCLUSIVE MODE")
            yield
            self._set("version", self.version() + 1)

    def documents(self) -> dict[str, tuple[str, str]]:
        return {
            p: (h, r) for p, h, r in self.db.execute(f"SELECT path, hash, root FROM {self.schema}.documents")
        }

    def document_paths(self) -> dict[str, str]:
        return dict(self.db.execute(f"SELECT path, source FROM {self.schema}.documents").fetchall())

    def embeddings_by_hash(self, hashes: list[str]) -> dict[str, np.ndarray]:
        rows = self.db.execute(
            f"SELECT hash, embedding FROM {self.schema}.chunks WHERE hash = ANY(%s)", (list(hashes),)
        )
        return {h: _vec(e) for h, e in rows}

    def _delete(self, path: str) -> list[str]:
        rows = self.db.execute(
            f"DELETE FROM {self.schema}.chunks c USING {self.schema}.documents d "
            "WHERE d.id = c.doc AND d.path = %s RETURNING c.hash",
            (path,),
        ).fetchall()
        self.db.execute(f"DELETE FROM {self.schema}.documents WHERE path = %s", (path,))
        return [r[0] for r in rows]

    def _prune_sentence_vectors(self, hashes: list[str]) -> None:
        s = self.schema
        self.db.execute(
            f"DELETE FROM {s}.sentence_vectors v WHERE v.hash = ANY(%s) "
            f"AND NOT EXISTS (SELECT 1 FROM {s}.chunks c WHERE c.hash = v.hash)",
            (sorted(set(hashes)),),
        )

    def delete_document(self, path: str) -> None:
        self._prune_sentence_vectors(self._delete(path))

    def sentence_vectors(self, hashes: list[str], encoder: str) -> dict[str, np.ndarray]:
        rows = self.db.execute(
            f"SELECT hash, n, vectors FROM {self.schema}.sentence_vectors WHERE encoder = %s AND hash = ANY(%s)",
            (encoder, list(hashes)),
        )
        return {h: np.frombuffer(bytes(b), dtype=np.float32).reshape(n, -1) for h, n, b in rows}

    def put_sentence_vectors(self, vectors: dict[str, np.ndarray], encoder: str) -> None:
        """Best effort, as in `SQLiteStore`: a user without write rights searches uncached."""
        import psycopg

        s = self.schema
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction):
            self._put_sentence_vectors(vectors, encoder, s)

    def _put_sentence_vectors(self, vectors: dict[str, np.ndarray], encoder: str, s: str) -> None:
        with self.db.transaction(), self.db.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {s}.sentence_vectors(hash, encoder, n, vectors) SELECT %s, %s, %s, %s "
                f"WHERE EXISTS (SELECT 1 FROM {s}.chunks WHERE hash = %s) ON CONFLICT DO NOTHING",
                [
                    (h, encoder, len(v), np.ascontiguousarray(v, np.float32).tobytes(), h)
                    for h, v in vectors.items()
                ],
            )

    def put_document(self, doc: Document, chunks: list[Chunk], hashes: list[str], emb: np.ndarray) -> None:
        old = self._delete(doc.path)
        doc_id = self.db.execute(
            f"INSERT INTO {self.schema}.documents(path, hash, root, source, title, mtime, meta, text) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
            (doc.path, doc.id, doc.root, doc.source, doc.title, doc.mtime, json.dumps(doc.meta), doc.text),
        ).fetchone()[0]
        with self.db.cursor() as cur:
            cur.executemany(
                f'INSERT INTO {self.schema}.chunks(doc, ord, start, "end", section, tokens, hash, text, embedding) '
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                [
                    (doc_id, i, c.start, c.end, c.section, c.tokens, h, c.text, np.asarray(e, np.float32))
                    for i, (c, h, e) in enumerate(zip(chunks, hashes, emb))
                ],
            )
        self._prune_sentence_vectors(old)

    def counts(self) -> tuple[int, int]:
        d = self.db.execute(f"SELECT count(*) FROM {self.schema}.documents").fetchone()[0]
        c = self.db.execute(f"SELECT count(*) FROM {self.schema}.chunks").fetchone()[0]
        return int(d), int(c)

    def chunk_texts(self) -> tuple[np.ndarray, list[str]]:
        rows = self.db.execute(f"SELECT id, text FROM {self.schema}.chunks ORDER BY id").fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def chunks(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        rows = self.db.execute(
            f'SELECT c.id, c.ord, c.start, c."end", c.section, c.text, d.path, d.title, d.root, d.source, d.meta '
            f"FROM {self.schema}.chunks c JOIN {self.schema}.documents d ON d.id = c.doc WHERE c.id = ANY(%s)",
            ([int(i) for i in ids],),
        )
        for r in rows:
            row = chunk_row(r, r[6], r[7])
            row.update(root=r[8], source=r[9], meta=r[10])
            out[row["id"]] = row
        return out

    def filter_ids(self, filters: dict[str, Any]) -> np.ndarray:
        check_filters(filters)
        rows = self.db.execute(
            f"SELECT c.id, d.path, d.title, c.section, d.root, d.source, d.meta "
            f"FROM {self.schema}.chunks c JOIN {self.schema}.documents d ON d.id = c.doc"
        )
        keep = [
            r[0]
            for r in rows
            if matches(
                {"path": r[1], "title": r[2], "section": r[3], "root": r[4], "source": r[5], "meta": r[6]},
                filters,
            )
        ]
        return np.asarray(keep, dtype=np.int64)

    def embeddings_of(self, ids: list[int]) -> np.ndarray:
        rows = dict(
            self.db.execute(
                f"SELECT id, embedding FROM {self.schema}.chunks WHERE id = ANY(%s)", ([int(i) for i in ids],)
            ).fetchall()
        )
        return np.stack([_vec(rows[int(i)]) for i in ids])

    def dense_search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(query, np.float32)
        where = "WHERE id = ANY(%s)" if allowed is not None else ""
        params: list[Any] = [q] + ([[int(i) for i in allowed]] if allowed is not None else []) + [q, k]
        rows = self.db.execute(
            f"SELECT id, -(embedding <#> %s) AS score FROM {self.schema}.chunks {where} "
            "ORDER BY embedding <#> %s, id LIMIT %s",
            params,
        ).fetchall()
        return np.asarray([r[0] for r in rows], np.int64), np.asarray([r[1] for r in rows], np.float32)

    def size_bytes(self) -> int:
        row = self.db.execute(
            "SELECT sum(pg_total_relation_size(format('%%I.%%I', table_schema, table_name)::regclass)) "
            "FROM information_schema.tables WHERE table_schema = %s",
            (self.schema,),
        ).fetchone()
        return int(row[0] or 0)
