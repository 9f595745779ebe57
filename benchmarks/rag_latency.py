"""Query latency of every retrieval mode at 10k and 100k real chunks, and the index size on disk.

The chunks are rag-pydoc's: the Python 3.11 library reference as `rag_eval.py` indexed it (13,195 chunks
of up to 200 MiniLM tokens, with their stored MiniLM embeddings). Embedding 100k chunks takes hours on
this CPU, so a store of N chunks is that store's documents copied under distinct paths (`copy0/...`,
`copy1/...`) until it holds N chunks, written through the store's own write path (`put_document`) with
the stored embeddings. The texts and vectors repeat, so these stores measure latency only, never
retrieval quality. Each query is embedded by MiniLM as in real use; the query caches are cleared before
every query. hybrid-rerank at its defaults (`hybrid-rerank (default: query likelihood)`: the generator
reranks the hybrid top 5 where BM25's and the dense retriever's best documents differ), and with the
sentence reranker at its defaults, three ways:

- `hybrid-rerank (uncached)`: the store's sentence cache switched off (every sentence of the top
  `rerank_depth` chunks embedded at every query: what the reranker did before the cache);
- `hybrid-rerank (first)`: each query the first time, the cache holding what earlier queries put there
  (a new store starts empty; copies of a chunk share its content hash, so they share its vectors);
- `hybrid-rerank (warm)`: the same queries again, every sentence vector cached.

Writes benchmarks/results/rag_latency.json with the CPU model and flags and the load average.

    python benchmarks/rag_latency.py [--sizes 10000 100000] [--queries 40] [--rerank-queries 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "rag_latency.json"
TASKS = Path(__file__).resolve().parents[1] / "src" / "lmforge" / "tasks"
MODES = ["bm25", "dense", "hybrid", "hybrid-rerank"]
RERANK = ["hybrid-rerank (uncached)", "hybrid-rerank (first)", "hybrid-rerank (warm)"]
DEFAULT = "hybrid-rerank (default: query likelihood)"
COLUMNS = MODES[:-1] + RERANK + [DEFAULT]


def source_documents(db: Path):
    """Yield (Document, chunks, hashes, embeddings) of every document of an lmforge SQLite store."""
    from lmforge.rag.chunking import Chunk
    from lmforge.rag.ingest import Document

    con = sqlite3.connect(db)
    docs = con.execute("SELECT id, path, root, source, title, mtime, meta, text FROM documents ORDER BY id")
    for doc_id, path, root, source, title, mtime, meta, text in docs.fetchall():
        rows = con.execute(
            'SELECT start, "end", text, section, tokens, hash, embedding FROM chunks WHERE doc = ? ORDER BY ord',
            (doc_id,),
        ).fetchall()
        chunks = [Chunk(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        emb = np.stack([np.frombuffer(r[6], np.float32) for r in rows]) if rows else None
        yield (
            Document(path, text, title, root, source, mtime, json.loads(meta)),
            chunks,
            [r[5] for r in rows],
            emb,
        )
    con.close()


def replicated_store(source: Path, n: int, folder: Path) -> Path:
    """A store of exactly `n` chunks: `source`'s documents copied under distinct paths, its settings
    (encoder, fingerprint, chunking) kept, written through `SQLiteStore.put_document`."""
    from dataclasses import replace

    from lmforge.rag.store import SQLiteStore

    src = SQLiteStore(source)
    settings = src.settings()
    src.close()
    docs = [d for d in source_documents(source) if d[1]]
    path = folder / f"pydoc_x_{n}.db"
    store = SQLiteStore(path, create=True)
    store.set_settings(settings)
    written, copy = 0, 0
    while written < n:
        with store.transaction():
            for doc, chunks, hashes, emb in docs:
                take = min(len(chunks), n - written)
                if take == 0:
                    break
                store.put_document(
                    replace(doc, path=f"copy{copy}/{doc.path}"), chunks[:take], hashes[:take], emb[:take]
                )
                written += take
        copy += 1
    store.close()
    return path


def percentiles(times: list[float]) -> dict[str, float]:
    return {
        "p50_ms": 1000 * float(np.percentile(times, 50)),
        "p95_ms": 1000 * float(np.percentile(times, 95)),
    }


def measure(path: Path, queries: list[str], rerank_queries: int) -> dict:
    from lmforge.rag import Index

    idx = Index(path)
    uncached = Index(path, encoder=idx.encoder)  # the same store with its sentence cache switched off
    uncached.store.sentence_vectors = lambda hashes, encoder: {}
    uncached.store.put_sentence_vectors = lambda vectors, encoder: None
    start = time.perf_counter()
    idx.store.faiss_index()
    faiss_s = time.perf_counter() - start
    start = time.perf_counter()
    idx.bm25()
    bm25_s = time.perf_counter() - start
    out = {"chunks": idx.store.counts()[1], "faiss_build_s": faiss_s, "bm25_build_s": bm25_s}
    for mode in MODES[:-1]:
        idx.search(queries[-1], mode=mode, k=10)  # warm-up
    uncached.search(queries[-1], mode="hybrid-rerank", rerank="sentence", k=10)
    idx.search(queries[-1], mode="hybrid-rerank", k=10)  # loads the generator

    def timed(column: str, index: Index, q: str, mode: str, rerank: str | None = None) -> None:
        index._query_cache.clear()
        index._qvec_cache.clear()
        before = index.sentence_vectors_embedded
        start = time.perf_counter()
        options = {"rerank": rerank} if rerank else {}
        index.search(q, mode=mode, k=10, **options)
        times[column].append(time.perf_counter() - start)
        embedded[column].append(index.sentence_vectors_embedded - before)

    # modes take turns on each query, so a burst of load on the shared box falls on all of them alike
    times: dict[str, list[float]] = {c: [] for c in COLUMNS}
    embedded: dict[str, list[int]] = {c: [] for c in COLUMNS}
    for i, q in enumerate(queries):
        for mode in MODES[:-1]:
            timed(mode, idx, q, mode, "none")
        if i < rerank_queries:
            timed(DEFAULT, idx, q, "hybrid-rerank")
            timed("hybrid-rerank (uncached)", uncached, q, "hybrid-rerank", "sentence")
            timed("hybrid-rerank (first)", idx, q, "hybrid-rerank", "sentence")
    for q in queries[:rerank_queries]:
        timed("hybrid-rerank (warm)", idx, q, "hybrid-rerank", "sentence")
    uncached.store.close()
    for c in COLUMNS:
        out[c] = percentiles(times[c])
        if c in RERANK:
            out[c]["sentences_embedded_per_query"] = float(np.mean(embedded[c]))
        print(f"  {c}: p50 {out[c]['p50_ms']:.1f} ms, p95 {out[c]['p95_ms']:.1f} ms", flush=True)
    out["size_bytes"] = idx.store.size_bytes()
    out["size_mib"] = out["size_bytes"] / 2**20
    idx.store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", default="~/.cache/lmforge/bench-rag/pydoc.db", help="store rag_eval.py built"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument(
        "--rerank-queries", type=int, default=20, help="the first N queries time hybrid-rerank (seconds each)"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from lmforge.hardware import describe
    from lmforge.io.atomic import atomic_write_text
    from lmforge.rag.config import SearchConfig

    source = Path(args.source).expanduser()
    lines = [json.loads(x) for x in (TASKS / "rag-pydoc-dev.qrels.jsonl").read_text().splitlines()]
    queries = [x["query"] for x in lines][: args.queries]
    cfg, reranked = SearchConfig(), SearchConfig(mode="hybrid-rerank")
    out = {
        "machine": describe(),
        "load_average_before": os.getloadavg(),
        "what": "latency only: rag-pydoc's real chunks and stored MiniLM embeddings replicated under distinct "
        "paths to each size (texts and vectors repeat); queries: rag-pydoc-dev's, embedded per query",
        "source": str(source),
        "queries": len(queries),
        "hybrid_rerank_queries": min(args.rerank_queries, len(queries)),
        "k": 10,
        "candidates": cfg.candidates,
        "hybrid_rerank_default": {
            "reranker": reranked.reranker_used,
            "rerank_depth": reranked.depth_for(reranked.reranker_used),
            "rerank_when": reranked.rerank_gate,
        },
        "hybrid_rerank": {
            "reranker": "sentence",
            "rerank_depth": cfg.depth_for("sentence"),
            "rerank_weight": cfg.weight_for("sentence"),
        },
        "sizes": [],
    }
    folder = Path(tempfile.mkdtemp(prefix="rag_latency_"))
    try:
        for n in args.sizes:
            start = time.perf_counter()
            path = replicated_store(source, n, folder)
            write_s = time.perf_counter() - start
            print(f"## {n} chunks (store written in {write_s:.1f} s)", flush=True)
            row = {"store_write_s": write_s, **measure(path, queries, args.rerank_queries)}
            out["sizes"].append(row)
            path.unlink()
            for extra in folder.glob(path.name + "*"):
                extra.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out["load_average_after"] = os.getloadavg()
    print("\n| chunks | " + " | ".join(f"{m} p50 / p95 ms" for m in COLUMNS) + " | size on disk |")
    print("|---|" + "---|" * len(COLUMNS) + "---|")
    for r in out["sizes"]:
        cells = " | ".join(f"{r[m]['p50_ms']:.1f} / {r[m]['p95_ms']:.1f}" for m in COLUMNS)
        print(f"| {r['chunks']:,} | {cells} | {r['size_mib']:.0f} MiB |")
    atomic_write_text(RESULTS, json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
