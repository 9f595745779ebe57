"""The sentence reranker's store cache changes no result: hybrid-rerank on the test sets through the
cached path (`Index.sentence_vectors`: the store's vectors, computed at a chunk's first rerank) and the
uncached path (the same store with the cache switched off, every sentence embedded at every query),
compared hit by hit: the same chunk ids and the same scores, to the last bit.

Writes benchmarks/results/rag_cache_check.json (CPU model and flags, load average, seconds per path).

    python benchmarks/rag_cache_check.py [--sets pydoc wikipedia] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "rag_cache_check.json"
TASKS = Path(__file__).resolve().parents[1] / "src" / "lmforge" / "tasks"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["pydoc", "wikipedia"])
    parser.add_argument("--work", default="~/.cache/lmforge/bench-rag")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from lmforge.hardware import describe
    from lmforge.io.atomic import atomic_write_text
    from lmforge.rag import Index, SearchConfig
    from lmforge.rag.api import read_qrels

    out = {"machine": describe(), "load_average_before": os.getloadavg(), "search": {}, "sets": {}}
    # what `rag.evaluate` asks for at k=10, with the sentence reranker (the one with a store cache)
    opts = {"mode": "hybrid-rerank", "rerank": "sentence", "k": 50, "candidates": 50}
    cfg = SearchConfig(rerank="sentence")
    out["search"] = {
        **opts,
        "rerank_depth": cfg.depth_for("sentence"),
        "rerank_weight": cfg.weight_for("sentence"),
        "rerank_fusion": cfg.rerank_fusion,
    }
    for name in args.sets:
        store = Path(args.work).expanduser() / f"{name}.db"
        cached = Index(store)
        uncached = Index(store, encoder=cached.encoder)
        uncached.store.sentence_vectors = lambda hashes, encoder: {}
        uncached.store.put_sentence_vectors = lambda vectors, encoder: None
        queries, _ = read_qrels(TASKS / f"rag-{name}.qrels.jsonl", cached)
        hits, seconds = {}, {}
        for label, idx in (("uncached", uncached), ("cached", cached)):
            start = time.perf_counter()
            hits[label] = [[(h.chunk_id, h.score) for h in idx.search(q, **opts)] for q in queries.values()]
            seconds[label] = time.perf_counter() - start
        same = hits["cached"] == hits["uncached"]
        out["sets"][name] = {
            "queries": len(queries),
            "identical": same,
            "queries_differing": sum(a != b for a, b in zip(hits["cached"], hits["uncached"])),
            "seconds": seconds,
            "sentences_embedded_cached_path": cached.sentence_vectors_embedded,
            "sentences_embedded_uncached_path": uncached.sentence_vectors_embedded,
        }
        print(name, json.dumps(out["sets"][name]), flush=True)
    out["load_average_after"] = os.getloadavg()
    atomic_write_text(RESULTS, json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
