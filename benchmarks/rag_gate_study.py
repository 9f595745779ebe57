"""Reranking only where the retrievers disagree, on the development sets only (rag-wikipedia-dev,
rag-pydoc-dev; the test sets are never read here).

hybrid-rerank's default reranker (query likelihood, depth 5, weight 1: benchmarks/rag_ql_study.py) runs
on every query. `rerank_when="disagree"` runs it only when BM25's and the dense retriever's best chunks
come from different documents; when two independent retrievers agree, their document is usually right
and the reranker can only move it down. Both variants go through `Index.search` (hybrid top 50, the top
5 reordered, documents ranked where their best chunk ranks, nDCG@10 over documents); the generator's
score of a (query, passage) pair is computed once and shared (`rag_ql_study.memoize_query_likelihood`).
Also a diagnosis per set: the queries where the retrievers agree, and on how many of them hybrid's
top document is right.

The rule, fixed before the variants were run: "disagree" becomes hybrid-rerank's default if its smaller
dev margin of nDCG@10 over the best of bm25 / dense / hybrid is at least the always-rerank default's
(at equal quality it is cheaper: it skips the generator on the queries where the retrievers agree).
Writes benchmarks/results/rag_gate_study.json (CPU, load average).

    python benchmarks/rag_gate_study.py [--threads 2]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rag_dev import SETS, finish, margin_table, run_studies
from rag_ql_study import memoize_query_likelihood, score_variants

RESULTS = Path(__file__).parent / "results" / "rag_gate_study.json"
BASE = {"rerank": "query-likelihood", "rerank_depth": 5, "rerank_weight": 1.0}
# "disagree" first: its seconds per query are its own cost, "always" then pays only the other pairs
VARIANTS = {"disagree": {**BASE, "rerank_when": "disagree"}, "always": {**BASE, "rerank_when": "always"}}


def study(idx, queries: dict[str, str], judged: dict[str, dict[str, int]]) -> dict:
    out = score_variants(idx, queries, judged, VARIANTS)
    diag = {"questions": len(queries), "agree": 0, "agree_hybrid_top1_right": 0}
    for qid, text in queries.items():
        relevant = {p for p, g in judged[qid].items() if g > 0}
        bm25 = idx.search(text, mode="bm25", k=1)
        dense = idx.search(text, mode="dense", k=1)
        if bm25 and dense and bm25[0].path == dense[0].path:
            diag["agree"] += 1
            diag["agree_hybrid_top1_right"] += idx.search(text, mode="hybrid", k=1)[0].path in relevant
    out["diagnosis"] = diag
    return out


def main() -> None:
    memoize_query_likelihood()
    out = run_studies(__doc__.splitlines()[0], __doc__.split("The rule")[1], study, default_threads=2)
    table = margin_table(out)
    out["table"] = table
    out["chosen"] = (
        "disagree" if table["disagree"]["min_margin"] >= table["always"]["min_margin"] else "always"
    )
    best = ", ".join(f"{n} {out['sets'][n]['best_single']}" for n in SETS)
    print(f"best single modes: {best}")

    def speed(k: str) -> str:
        return f"{np.mean([out['sets'][n]['variants'][k]['seconds_per_query'] for n in SETS]):.2f}"

    finish(out, table, RESULTS, speed)


if __name__ == "__main__":
    main()
