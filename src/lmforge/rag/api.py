"""`lmforge.rag`: build an index (`index`), open it (`Index`), search it, answer from it, evaluate it.

```python
from lmforge import rag
report = rag.index(["docs/"], store="docs.db")          # add / replace / delete, incrementally
hits = rag.search("docs.db", "how do I rotate the logs?", mode="hybrid", k=5)
answer = rag.ask("docs.db", "how do I rotate the logs?")  # text with [n] citations + sources
metrics = rag.evaluate("docs.db", "qrels.jsonl", modes=["bm25", "dense", "hybrid"])
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import LMForgeError
from lmforge.options import configure
from lmforge.rag.chunking import chunk_text
from lmforge.rag.config import (
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_ENCODER,
    DEFAULT_OVERLAP,
    IndexConfig,
    SearchConfig,
)
from lmforge.rag.ingest import Skipped, content_hash, read_documents
from lmforge.rag.models import load_model
from lmforge.rag.retrieve import rrf, top_k, weighted
from lmforge.rag.store import SQLiteStore


@dataclass
class Hit:
    """One retrieved chunk: where it is (document path, character span) and why it ranked."""

    rank: int
    score: float
    chunk_id: int
    path: str
    title: str
    section: str
    start: int
    end: int
    text: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IndexReport:
    store: str
    added: list[str]
    replaced: list[str]
    deleted: list[str]
    unchanged: int
    skipped: list[Skipped]
    chunks_embedded: int
    chunks_reused: int
    documents: int
    chunks: int
    seconds: float
    embed_seconds: float
    sentences_embedded: int = 0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks_embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def summary(self) -> str:
        lines = [
            f"{self.store}: {self.documents} documents, {self.chunks} chunks "
            f"(+{len(self.added)} added, {len(self.replaced)} replaced, {len(self.deleted)} deleted, "
            f"{self.unchanged} unchanged)",
            f"embedded {self.chunks_embedded} chunks ({self.chunks_per_s:.1f} chunks/s), "
            f"reused {self.chunks_reused}; {self.seconds:.1f} s",
        ]
        if self.sentences_embedded:
            lines.append(f"embedded {self.sentences_embedded} sentences for the sentence reranker")
        for s in self.skipped:
            lines.append(f"skipped {s.path}: {s.reason}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["chunks_per_s"] = self.chunks_per_s
        return d


def open_store(store: str | Path, create: bool = False, faiss_index: str = "flat"):
    text = str(store)
    if text.startswith(("postgresql://", "postgres://")):
        from lmforge.rag.pgstore import PostgresStore

        return PostgresStore(text, create=create)
    return SQLiteStore(store, create=create, faiss_index=faiss_index)


def encoder_fingerprint(lm) -> str:
    """Hash of what decides an embedding: the encoder's config, tokenizer, pooling and weights. Config
    fields at their defaults are left out, so a field added to `ModelConfig` later (whose default keeps
    the old behaviour) does not orphan every existing store."""
    h = hashlib.sha256()
    config: Any = repr(lm.config)
    if dataclasses.is_dataclass(lm.config):
        config = {
            f.name: getattr(lm.config, f.name)
            for f in dataclasses.fields(lm.config)
            if f.default is dataclasses.MISSING or getattr(lm.config, f.name) != f.default
        }
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    h.update(repr(lm.embedding).encode())
    if lm.tokenizer is not None:
        h.update(str(lm.tokenizer.fingerprint).encode())
    for name, p in lm.model.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().reshape(-1)[:1024].float().cpu().numpy().tobytes())
    return h.hexdigest()[:24]


class Index:
    """An opened store: search it, ask it. `Index(store)` opens an existing store (SQLite file or
    `postgresql://` URL); `rag.index(paths, store)` builds or updates one.

    `cross_encoder`, a callable `(query, [texts]) -> [scores]`, is what `rerank="cross-encoder"` runs.
    """

    def __init__(
        self,
        store: str | Path,
        *,
        encoder: Any = None,
        cross_encoder: Any = None,
        _create: bool = False,
        faiss_index: str = "flat",
    ):
        self.name = str(store)
        self.store = open_store(store, create=_create, faiss_index=faiss_index)
        settings = self.store.settings()
        if not _create and "encoder" not in settings:
            raise LMForgeError(
                f"store {self.name} holds no index yet: build it with `lmforge rag index PATH --store {self.name}`"
            )
        self._encoder = encoder
        self.cross_encoder = cross_encoder
        self._bm25: tuple[int, Any, np.ndarray] | None = None
        self._query_cache: OrderedDict[tuple, list[Hit]] = OrderedDict()
        self._qvec_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._sentence_key: str | None = None
        self.cache_hits = 0
        self.sentence_vectors_embedded = 0

    # --- models ---------------------------------------------------------------------------------------
    @property
    def settings(self) -> dict[str, Any]:
        return self.store.settings()

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = load_model(self.settings.get("encoder", DEFAULT_ENCODER))
        return self._encoder

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Unit-norm embeddings (N, d) float32; texts embedded longest first (less padding)."""
        if not texts:
            return np.zeros((0, int(self.settings.get("dim", 0)) or 1), np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        emb = self.encoder.embed([texts[i] for i in order], batch_size=batch_size, normalize=True)
        out = np.empty((len(texts), emb.shape[1]), np.float32)
        out[order] = emb.float().cpu().numpy()
        return out

    def sentence_vectors(self, texts: list[str]) -> list[np.ndarray]:
        """Each chunk text's sentence vectors (what the sentence reranker scores), from the store's cache
        (keyed by the text's content hash, the encoder's fingerprint and `SENTENCE_VECTORS_VERSION`); those
        not cached are embedded by the uncached `rerank.sentence_vectors` and written to the cache."""
        from lmforge.rag.rerank import SENTENCE_VECTORS_VERSION, sentence_vectors

        if self._sentence_key is None:
            self._sentence_key = f"{encoder_fingerprint(self.encoder)}:{SENTENCE_VECTORS_VERSION}"
        hashes = [content_hash(t) for t in texts]
        cached = self.store.sentence_vectors(sorted(set(hashes)), self._sentence_key)
        todo = {h: t for h, t in zip(hashes, texts) if h not in cached}
        if todo:
            fresh = dict(zip(todo, sentence_vectors(self.embed, list(todo.values()))))
            self.store.put_sentence_vectors(fresh, self._sentence_key)
            self.sentence_vectors_embedded += sum(len(v) for v in fresh.values())
            cached.update(fresh)
        return [cached[h] for h in hashes]

    def query_vector(self, query: str) -> np.ndarray:
        vec = self._qvec_cache.get(query)
        if vec is None:
            vec = self.embed([query])[0]
            self._qvec_cache[query] = vec
            if len(self._qvec_cache) > 4096:
                self._qvec_cache.popitem(last=False)
        return vec

    # --- indexing -------------------------------------------------------------------------------------
    def _check_settings(self, cfg: IndexConfig) -> dict[str, Any]:
        stored = self.store.settings()
        has_docs = "encoder" in stored
        wanted = {
            "chunk_tokens": cfg.chunk_tokens
            if cfg.chunk_tokens is not None
            else stored.get("chunk_tokens", DEFAULT_CHUNK_TOKENS),
            "overlap": cfg.overlap if cfg.overlap is not None else stored.get("overlap", DEFAULT_OVERLAP),
            "encoder": cfg.encoder if cfg.encoder is not None else stored.get("encoder", DEFAULT_ENCODER),
        }
        if has_docs:
            diff = [f"{k} {stored[k]!r} (asked: {wanted[k]!r})" for k in wanted if stored.get(k) != wanted[k]]
            if diff:
                raise LMForgeError(
                    f"store {self.name} was built with another chunking or encoder: {', '.join(diff)}; "
                    "index into a new store, or leave these options out to use the store's"
                )
        if self._encoder is None:
            self._encoder = load_model(wanted["encoder"])
        fp = encoder_fingerprint(self.encoder)
        if has_docs and stored.get("encoder_fingerprint") != fp:
            raise LMForgeError(
                f"store {self.name} was embedded by encoder fingerprint {stored.get('encoder_fingerprint')}, "
                f"but '{wanted['encoder']}' now has fingerprint {fp} (other weights or tokenizer): re-index into a new store"
            )
        limit = (
            self.encoder.embedding.max_len
            if self.encoder.embedding and self.encoder.embedding.max_len
            else self.encoder.config.max_seq_len
        ) - 2
        if wanted["chunk_tokens"] > limit:
            raise LMForgeError(
                f"chunk_tokens {wanted['chunk_tokens']} exceeds what the encoder reads ({limit} tokens)"
            )
        return {**wanted, "encoder_fingerprint": fp}

    def add(
        self, paths: list[str | Path], config: IndexConfig | None = None, progress: Any = None, **options: Any
    ) -> IndexReport:
        """Index `paths`: new documents are added, changed ones replaced, and documents of an indexed
        folder that are gone deleted; unchanged ones are left alone (nothing re-embedded)."""
        cfg = configure(IndexConfig, config, options, "rag index")
        start = time.perf_counter()
        docs, skipped, roots = read_documents(paths, cfg.field)
        wanted = self._check_settings(cfg)
        existing = self.store.documents()
        if not docs and not existing:
            listed = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
            raise LMForgeError(
                f"empty corpus: no readable documents under {', '.join(map(str, paths))}"
                + (f" (skipped {listed})" if listed else "")
            )
        seen: dict[str, Any] = {}
        for d in docs:
            seen[d.path] = d  # the last of two documents at one path wins
        todo = [d for p, d in seen.items() if existing.get(p, (None,))[0] != d.id]
        added = [d.path for d in todo if d.path not in existing]
        replaced = [d.path for d in todo if d.path in existing]
        deleted = (
            sorted(p for p, (_, root) in existing.items() if root in roots and p not in seen)
            if cfg.delete_missing
            else []
        )
        if "encoder" not in self.store.settings():
            self.store.set_settings(
                {
                    **wanted,
                    "faiss_index": cfg.faiss_index,
                    "dim": int(self.embed(["dimension probe"]).shape[1]),
                }
            )
        tok = self.encoder.tokenizer
        embedded = reused = 0
        embed_s = 0.0
        batch: list[tuple[Any, list, list[str]]] = []

        def flush() -> None:
            nonlocal embedded, reused, embed_s
            hashes = [h for _, _, hs in batch for h in hs]
            known = self.store.embeddings_by_hash(sorted(set(hashes)))
            new = sorted({h for h in hashes if h not in known})
            texts = {h: c.text for _, cs, hs in batch for c, h in zip(cs, hs)}
            t0 = time.perf_counter()
            vecs = self.embed([texts[h] for h in new], cfg.batch_size)
            embed_s += time.perf_counter() - t0
            known.update(zip(new, vecs))
            embedded += len(new)
            reused += len(hashes) - len(new)
            with self.store.transaction():
                for doc, cs, hs in batch:
                    self.store.put_document(
                        doc, cs, hs, np.stack([known[h] for h in hs]) if hs else np.zeros((0, 1), np.float32)
                    )
            if progress:
                progress(embedded + reused)
            batch.clear()

        pending = 0
        for doc in todo:
            chunks = chunk_text(doc.text, tok, wanted["chunk_tokens"], wanted["overlap"])
            batch.append((doc, chunks, [content_hash(c.text) for c in chunks]))
            pending += len(chunks)
            if pending >= 256:
                flush()
                pending = 0
        if batch:
            flush()
        if deleted:
            with self.store.transaction():
                for p in deleted:
                    self.store.delete_document(p)
        sentences = self.sentence_vectors_embedded
        if cfg.sentence_vectors:
            self.fill_sentence_vectors(progress)
        n_docs, n_chunks = self.store.counts()
        if n_chunks and hasattr(self.store, "faiss_index"):
            self.store.faiss_index()  # build and save the dense index now, not at the first query
        return IndexReport(
            store=self.name,
            added=added,
            replaced=replaced,
            deleted=deleted,
            unchanged=len(seen) - len(todo),
            skipped=skipped,
            chunks_embedded=embedded,
            chunks_reused=reused,
            documents=n_docs,
            chunks=n_chunks,
            seconds=time.perf_counter() - start,
            embed_seconds=embed_s,
            sentences_embedded=self.sentence_vectors_embedded - sentences,
        )

    def fill_sentence_vectors(self, progress: Any = None, batch: int = 256) -> None:
        """Cache the sentence vectors of every chunk that has none yet (`batch` chunks a transaction)."""
        _, texts = self.store.chunk_texts()
        texts = list(dict.fromkeys(texts))
        for i in range(0, len(texts), batch):
            self.sentence_vectors(texts[i : i + batch])  # reads the cached ones, embeds and writes the rest
            if progress:
                progress(i + len(texts[i : i + batch]))

    # --- retrieval ------------------------------------------------------------------------------------
    def bm25(self):
        from lmforge.rag.bm25 import BM25

        version = self.store.version()
        if self._bm25 is None or self._bm25[0] != version:
            ids, texts = self.store.chunk_texts()
            self._bm25 = (version, BM25(texts), ids)
        return self._bm25[1], self._bm25[2]

    def _bm25_ranking(self, query: str, n: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        model, ids = self.bm25()
        return top_k(ids, model.scores(query), n, allowed)

    def _dense_ranking(self, query: str, n: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        ids, scores = self.store.dense_search(self.query_vector(query), n, allowed)
        return [(int(i), float(s)) for i, s in zip(ids, scores)]

    def search(self, query: str, config: SearchConfig | None = None, **options: Any) -> list[Hit]:
        """The best `k` chunks for `query` (see `SearchConfig` for the options)."""
        cfg = configure(SearchConfig, config, options, "rag search")
        if not isinstance(query, str) or not query.strip():
            raise LMForgeError("empty query: give the text to search for")
        if cfg.k < 1:
            raise LMForgeError(f"k must be at least 1, got {cfg.k}")
        key = (self.store.version(), query, json.dumps(asdict(cfg), sort_keys=True, default=str))
        if key in self._query_cache:
            self.cache_hits += 1
            self._query_cache.move_to_end(key)
            return self._query_cache[key]
        allowed = self.store.filter_ids(cfg.filters) if cfg.filters else None
        n = max(cfg.candidates, cfg.k)
        rerank = cfg.reranker_used
        if cfg.mode == "bm25":
            ranking = self._bm25_ranking(query, n, allowed)
        elif cfg.mode == "dense":
            ranking = self._dense_ranking(query, n, allowed)
        else:
            sparse = self._bm25_ranking(query, n, allowed)
            dense = self._dense_ranking(query, n, allowed)
            if cfg.fusion == "rrf":
                ranking = rrf([dense, sparse], cfg.rrf_k)
            else:
                ranking = weighted(dense, sparse, cfg.alpha)
            if rerank not in ("none", "mmr") and cfg.rerank_gate == "disagree" and self._agree(sparse, dense):
                rerank = "none"
        if rerank != "none":
            depth = cfg.depth_for(rerank) if rerank != "mmr" else n
            ranking = self._rerank(query, ranking[:depth], rerank, cfg) + ranking[depth:]
        ranking = ranking[: cfg.k]
        rows = self.store.chunks([cid for cid, _ in ranking])
        hits = [
            Hit(
                rank=i + 1,
                score=float(s),
                chunk_id=cid,
                path=rows[cid]["path"],
                title=rows[cid]["title"],
                section=rows[cid]["section"],
                start=rows[cid]["start"],
                end=rows[cid]["end"],
                text=rows[cid]["text"],
                meta=rows[cid].get("meta") or {},
            )
            for i, (cid, s) in enumerate(ranking)
        ]
        self._query_cache[key] = hits
        if len(self._query_cache) > 1024:
            self._query_cache.popitem(last=False)
        return hits

    def _agree(self, sparse: list[tuple[int, float]], dense: list[tuple[int, float]]) -> bool:
        """Whether the two retrievers' best chunks come from the same document."""
        if not sparse or not dense:
            return False
        rows = self.store.chunks([sparse[0][0], dense[0][0]])
        return rows[sparse[0][0]]["path"] == rows[dense[0][0]]["path"]

    def _rerank(
        self, query: str, ranking: list[tuple[int, float]], how: str, cfg: SearchConfig
    ) -> list[tuple[int, float]]:
        from lmforge.rag.rerank import (
            best_sentence_scores,
            fuse_orders,
            fuse_scores,
            mmr,
            query_likelihood_scores,
            yes_no_scores,
        )

        if not ranking:
            return ranking
        ids = [cid for cid, _ in ranking]
        if how == "mmr":
            vecs = self.store.embeddings_of(ids)
            order = mmr(self.query_vector(query), vecs, len(ids), cfg.mmr_lambda)
            return [(ids[i], float(len(order) - r)) for r, i in enumerate(order)]
        rows = self.store.chunks(ids)
        texts = [rows[i]["text"] for i in ids]
        if how == "sentence":
            scores = best_sentence_scores(self.query_vector(query), self.sentence_vectors(texts))
        elif how == "llm":
            # scoring is all prefill: bf16 where this machine runs it faster
            scores = yes_no_scores(load_model(cfg.reranker, "auto"), query, texts)
        elif how == "query-likelihood":
            scores = query_likelihood_scores(load_model(cfg.reranker, "auto"), query, texts)
        else:
            if self.cross_encoder is None:
                raise LMForgeError(
                    "rerank='cross-encoder' needs a cross encoder: Index(store, cross_encoder=fn) with fn(query, texts) -> scores"
                )
            scores = [float(s) for s in self.cross_encoder(query, texts)]
        weight = cfg.weight_for(how)
        if cfg.rerank_fusion == "weighted":
            return fuse_scores(ids, [s for _, s in ranking], scores, weight)
        return fuse_orders(ids, scores, weight, cfg.rrf_k)


def index(
    paths: list[str | Path] | str | Path,
    store: str | Path,
    config: IndexConfig | None = None,
    progress: Any = None,
    **options: Any,
) -> IndexReport:
    """Build or update the index at `store` from files, folders or built-in corpora."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    cfg = configure(IndexConfig, config, options, "rag index")
    idx = Index(store, _create=True, faiss_index=cfg.faiss_index)
    return idx.add(list(paths), cfg, progress=progress)


_OPEN: dict[str, Index] = {}


def open_index(store: str | Path | Index) -> Index:
    """An `Index` for `store`, kept open for the process (so its caches survive between calls)."""
    if isinstance(store, Index):
        return store
    key = str(store)
    if key not in _OPEN:
        _OPEN[key] = Index(store)
    return _OPEN[key]


def search(
    store: str | Path | Index, query: str, config: SearchConfig | None = None, **options: Any
) -> list[Hit]:
    """The best chunks of an index for a query; see `SearchConfig` for the options."""
    return open_index(store).search(query, config, **options)


# --- evaluation -------------------------------------------------------------------------------------


def read_qrels(path: str | Path, idx: Index) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """({query id: text}, {query id: {document path: grade}}) from a qrels JSONL file; relevant paths
    may be relative to the indexed folder (as stored) or absolute."""
    from lmforge.io.jsonl import iter_jsonl

    path = Path(path)
    if not path.is_file():
        raise LMForgeError(f"qrels file {path} does not exist")
    known = idx.store.document_paths()  # {stored path: absolute source}
    by_source = {src: p for p, src in known.items()}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for n, record in iter_jsonl(path.read_text(encoding="utf-8"), path):
        where = f"{path}:{n}"
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("query"), str)
            or not record["query"].strip()
        ):
            raise LMForgeError(f'{where}: each line needs a non-empty "query" string')
        rel = record.get("relevant")
        if isinstance(rel, list):
            rel = {p: 1 for p in rel}
        if not isinstance(rel, dict) or not rel:
            raise LMForgeError(
                f'{where}: "relevant" must be a non-empty list of paths or a {{path: grade}} object'
            )
        judged: dict[str, int] = {}
        for p, grade in rel.items():
            stored = (
                p if p in known else by_source.get(str(Path(p).resolve()) if Path(p).is_absolute() else p)
            )
            if stored is None:
                raise LMForgeError(
                    f"{where}: relevant document {p!r} is not in the store (paths are relative to the indexed folder, or absolute)"
                )
            judged[stored] = int(grade)
        qid = str(record.get("id", n))
        queries[qid] = record["query"]
        qrels[qid] = judged
    if not qrels:
        raise LMForgeError(f"{path}: no queries")
    return queries, qrels


def document_run(
    idx: Index, queries: dict[str, str], mode: str, k: int, **options: Any
) -> dict[str, dict[str, float]]:
    """{query id: {document path: score}} of the top `k` documents, a document ranked where its best
    chunk ranks (scores k, k - 1, ...)."""
    run: dict[str, dict[str, float]] = {}
    depth = max(5 * k, 50)
    for qid, text in queries.items():
        hits = idx.search(text, **{"mode": mode, "k": depth, "candidates": depth, **options})
        ranked: list[str] = []
        for h in hits:
            if h.path not in ranked:
                ranked.append(h.path)
        run[qid] = {p: float(len(ranked) - i) for i, p in enumerate(ranked[:k])}
    return run


def evaluate(
    store: str | Path | Index,
    qrels: str | Path,
    modes: list[str] | tuple[str, ...] = ("bm25", "dense", "hybrid"),
    k: int = 10,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    **options: Any,
) -> dict[str, dict[str, dict[str, float]]]:
    """Document-level retrieval metrics of each mode: `{mode: {"recall@10": {"value", "low", "high"}, ...}}`
    (a document ranks where its best chunk ranks; bootstrap intervals over queries)."""
    from lmforge.eval.bootstrap import mean_ci
    from lmforge.eval.metrics import retrieval

    idx = open_index(store)
    queries, judged = read_qrels(qrels, idx)
    metrics = [f"recall@{k}", f"mrr@{k}", f"ndcg@{k}", "map"]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for mode in modes:
        run = document_run(idx, queries, mode, k, **options)
        scores = retrieval.per_query(run, judged, metrics)
        out[mode] = {}
        for m, per in scores.items():
            ci = mean_ci(list(per.values()), n_resamples=n_resamples, confidence=confidence, seed=seed)
            out[mode][m] = {"value": ci.value, "low": ci.low, "high": ci.high}
        out[mode]["queries"] = {
            "value": float(len(queries)),
            "low": float(len(queries)),
            "high": float(len(queries)),
        }
    return out


def eval_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown table: one row per mode, value [low, high] per metric."""
    modes = list(results)
    metrics = [m for m in results[modes[0]] if m != "queries"]
    lines = ["| mode | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for mode in modes:
        cells = [
            f"{results[mode][m]['value']:.3f} [{results[mode][m]['low']:.3f}, {results[mode][m]['high']:.3f}]"
            for m in metrics
        ]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- answering --------------------------------------------------------------------------------------


def ask(
    store: str | Path | Index,
    question: str,
    config: Any = None,
    *,
    stream: bool = False,
    faithfulness: bool = True,
    **options: Any,
):
    """Answer `question` from the index with `[n]` citations (see `AskConfig`). Returns an `Answer`
    (text, numbered sources, faithfulness scores); with `stream=True`, an iterator that yields the
    text pieces as they are generated and then the `Answer`."""
    from lmforge.rag.answer import ask_stream
    from lmforge.rag.config import AskConfig

    cfg = configure(AskConfig, config, options, "rag ask")
    events = ask_stream(open_index(store), question, cfg, faithfulness)
    if stream:
        return events
    answer = None
    for event in events:
        answer = event
    return answer
