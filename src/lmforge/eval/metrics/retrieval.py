"""Ranking metrics from a run and qrels: Recall@K, Precision@K, MRR, nDCG@K, MAP (TREC conventions).

A *run* maps each query id to `{doc_id: score}` (higher is better); *qrels* map each query id to
`{doc_id: relevance}` (an int; `relevance >= min_relevance` counts as relevant). Scores are averaged
over all the queries of the qrels; a query the run misses, or one without a relevant document, scores
0 (as ranx does). Ties in the run are broken by doc id, ascending. The definitions match `ranx` (and `trec_eval`):
- Precision@K divides by K even when fewer than K documents were retrieved;
- AP divides by the number of relevant documents, retrieved or not;
- nDCG uses linear gains (the relevance grade) and a log2(rank + 1) discount.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np

from lmforge.errors import LMForgeError

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

RETRIEVAL_METRICS = ("recall@K", "precision@K", "mrr", "mrr@K", "ndcg@K", "map", "map@K", "hit_rate@K")


def _ranked(scores: Mapping[str, float]) -> list[str]:
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (-float(kv[1]), kv[0]))]


def _parse(name: str) -> tuple[str, int]:
    match = re.fullmatch(r"(recall|precision|mrr|ndcg|map|hit_rate)(?:@(\d+))?", name.strip().lower())
    if not match:
        raise LMForgeError(f"unknown retrieval metric '{name}'; known: {', '.join(RETRIEVAL_METRICS)}")
    base, k = match.group(1), int(match.group(2) or 0)
    if base in ("recall", "precision", "ndcg", "hit_rate") and k <= 0:
        raise LMForgeError(f"retrieval metric '{name}' needs a cutoff, e.g. '{base}@10'")
    return base, k


def query_score(
    name: str, ranking: list[str], judgements: Mapping[str, int], min_relevance: int = 1
) -> float:
    """One query's score for metric `name` given its ranked doc ids and its relevance judgements."""
    base, k = _parse(name)
    relevant = {d: int(r) for d, r in judgements.items() if int(r) >= min_relevance}
    if not relevant:
        return 0.0
    top = ranking[:k] if k else ranking
    hits = [1.0 if d in relevant else 0.0 for d in top]
    if base == "recall":
        return sum(hits) / len(relevant)
    if base == "precision":
        return sum(hits) / k
    if base == "hit_rate":
        return float(any(hits))
    if base == "mrr":
        return next((1.0 / (i + 1) for i, h in enumerate(hits) if h), 0.0)
    if base == "map":
        found, total = 0, 0.0
        for i, h in enumerate(hits):
            if h:
                found += 1
                total += found / (i + 1)
        return total / len(relevant)
    # ndcg: linear gain, discount log2(rank + 1), ideal ranking from the judgements themselves
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(top))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def per_query(
    run: Run, qrels: Qrels, metrics: list[str], *, min_relevance: int = 1
) -> dict[str, dict[str, float]]:
    """`{metric: {query_id: score}}` over the qrels' queries."""
    if not qrels:
        raise LMForgeError("qrels are empty: give at least one query with relevance judgements")
    for m in metrics:
        _parse(m)
    queries = list(qrels)
    if not any(int(r) >= min_relevance for j in qrels.values() for r in j.values()):
        raise LMForgeError(f"no query in the qrels has a document with relevance >= {min_relevance}")
    rankings = {q: _ranked(run.get(q, {})) for q in queries}
    return {m: {q: query_score(m, rankings[q], qrels[q], min_relevance) for q in queries} for m in metrics}


def evaluate(
    run: Run,
    qrels: Qrels,
    metrics: list[str] | tuple[str, ...] = ("recall@10", "mrr", "ndcg@10", "map"),
    *,
    min_relevance: int = 1,
) -> dict[str, float]:
    """Mean of each metric over the qrels' queries, e.g. `evaluate(run, qrels, ["ndcg@10", "mrr"])`."""
    scores = per_query(run, qrels, list(metrics), min_relevance=min_relevance)
    return {m: float(np.mean(list(s.values()))) for m, s in scores.items()}
