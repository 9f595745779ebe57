"""The query-likelihood reranker against the sentence reranker, on the development sets only
(rag-wikipedia-dev, rag-pydoc-dev; the test sets are never read here).

Every variant runs through `Index.search` (hybrid top 50, the top `rerank_depth` reordered, documents
ranked where their best chunk ranks, nDCG@10 over documents):
- sentence: the sentence reranker at its tuned depth 30 and weight 0.2 (the hybrid-rerank default of
  the time);
- query-likelihood at depth 10 (the generator scores one prompt per chunk: 10 keeps a query under a
  second on two AMX cores in bf16) with weight 0.2, 0.35, 0.5 (reciprocal-rank fusion with the hybrid
  order) and 1 (its own order), and at depth 5 with weight 1 (half the cost).
The generator's score of a (query, passage) pair is computed once and reused by every variant (a
variant's top 5 or 10 are the same passages; in `Index.search` a pair scored in another batch may differ
in the last bits, far below the gaps between passages). So a variant's seconds_per_query is the time of
the pairs it scored first (`pairs_scored`): the first query-likelihood variant pays for the others.
Also a diagnosis: on how many questions hybrid's rank-1 document is wrong, and how many of those the
query-likelihood's best chunk fixes (belongs to a relevant document) or, where hybrid was right, breaks.

The rule, fixed before the variants were run through `Index.search`: a variant replaces the sentence
reranker as hybrid-rerank's default only if its smaller dev margin of nDCG@10 over the best of bm25 /
dense / hybrid is larger than the sentence reranker's; among those, the largest smaller margin wins
(ties: the larger mean). Writes benchmarks/results/rag_ql_study.json (CPU, load average).

    python benchmarks/rag_ql_study.py [--threads 2]
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from rag_dev import METRIC, SETS, finish, margin_table, run_studies

RESULTS = Path(__file__).parent / "results" / "rag_ql_study.json"
VARIANTS = {
    "sentence@30/0.2": {"rerank": "sentence", "rerank_depth": 30, "rerank_weight": 0.2},
    **{
        f"query-likelihood@10/{w}": {"rerank": "query-likelihood", "rerank_depth": 10, "rerank_weight": w}
        for w in (0.2, 0.35, 0.5, 1.0)
    },
    "query-likelihood@5/1.0": {"rerank": "query-likelihood", "rerank_depth": 5, "rerank_weight": 1.0},
}
K = 10


SCORED: dict[tuple[str, str], float] = {}  # (query, passage) -> the generator's score


def memoize_query_likelihood() -> None:
    """Score each (query, passage) pair once across variants (see the module docstring)."""
    from lmforge.rag import rerank

    score, memo = rerank.query_likelihood_scores, SCORED

    def memoized(lm, query, passages, **kw):
        todo = [p for p in dict.fromkeys(passages) if (query, p) not in memo]
        if todo:
            memo.update({(query, p): s for p, s in zip(todo, score(lm, query, todo, **kw))})
        return [memo[(query, p)] for p in passages]

    rerank.query_likelihood_scores = memoized


def score_variants(idx, queries: dict[str, str], judged: dict[str, dict[str, int]], variants: dict) -> dict:
    """nDCG@10 of bm25 / dense / hybrid, and of each hybrid-rerank variant with its margin over the best
    of them, its seconds per query and the (query, passage) pairs it scored first."""
    from lmforge.eval.metrics import retrieval
    from lmforge.rag.api import document_run

    value = {}
    for mode in ("bm25", "dense", "hybrid"):
        per = retrieval.per_query(document_run(idx, queries, mode, K), judged, [METRIC])[METRIC]
        value[mode] = float(np.mean(list(per.values())))
    best_single = max(value, key=value.get)
    out = {"single": value, "best_single": best_single, "variants": {}}
    for name, options in variants.items():
        start, before = time.perf_counter(), len(SCORED)
        run = document_run(idx, queries, "hybrid-rerank", K, **options)
        per = retrieval.per_query(run, judged, [METRIC])[METRIC]
        ndcg = float(np.mean(list(per.values())))
        out["variants"][name] = {
            METRIC: ndcg,
            "margin": ndcg - value[best_single],
            "seconds_per_query": (time.perf_counter() - start) / len(queries),
            "pairs_scored": len(SCORED) - before,
        }
    return out


def study(idx, queries: dict[str, str], judged: dict[str, dict[str, int]]) -> dict:
    out = score_variants(idx, queries, judged, VARIANTS)
    diag = {"questions": len(queries), "hybrid_top1_wrong": 0, "fixed": 0, "broken": 0}
    for qid, text in queries.items():
        relevant = {p for p, g in judged[qid].items() if g > 0}
        hybrid = idx.search(text, mode="hybrid", k=1)[0].path in relevant
        ql = idx.search(
            text, mode="hybrid-rerank", k=1, rerank="query-likelihood", rerank_depth=10, rerank_weight=1.0
        )
        reranked = ql[0].path in relevant
        diag["hybrid_top1_wrong"] += not hybrid
        diag["fixed"] += (not hybrid) and reranked
        diag["broken"] += hybrid and not reranked
    out["diagnosis"] = diag
    return out


def main() -> None:
    memoize_query_likelihood()
    out = run_studies(__doc__.splitlines()[0], __doc__.split("The rule")[1], study, default_threads=2)
    table = margin_table(out)
    incumbent = "sentence@30/0.2"
    passing = [k for k in VARIANTS if table[k]["min_margin"] > table[incumbent]["min_margin"]]
    out["table"] = table
    out["chosen"] = (
        max(passing, key=lambda k: (table[k]["min_margin"], table[k]["mean"])) if passing else incumbent
    )
    best = ", ".join(f"{n} {out['sets'][n]['best_single']}" for n in SETS)
    print(f"best single modes: {best}")

    def speed(k: str) -> str:
        return f"{np.mean([out['sets'][n]['variants'][k]['seconds_per_query'] for n in SETS]):.2f}"

    finish(out, table, RESULTS, speed)


if __name__ == "__main__":
    main()
