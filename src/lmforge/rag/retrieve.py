"""Ranking helpers: top-k of a score vector, and the two hybrid fusions.

- Reciprocal-rank fusion (Cormack et al., 2009): score(d) = sum over rankings of 1 / (rrf_k + rank(d)),
  ranks from 1; a chunk missing from a ranking adds nothing.
- Weighted sum: each ranking's scores min-max normalized to [0, 1] over its own candidates, then
  alpha * dense + (1 - alpha) * bm25 (a chunk missing from a ranking gets 0 there).
"""

from __future__ import annotations

import numpy as np


def top_k(
    ids: np.ndarray, scores: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> list[tuple[int, float]]:
    """The k best (id, score) pairs, ties broken by id; only positive-score and `allowed` ids."""
    mask = scores > 0
    if allowed is not None:
        mask &= np.isin(ids, allowed)
    idx = np.flatnonzero(mask)
    if len(idx) > k:
        part = np.argpartition(-scores[idx], k - 1)[:k]
        # keep every id tied with the k-th score so the id tie-break is exact
        kth = scores[idx[part]].min()
        idx = idx[scores[idx] >= kth]
    order = sorted(idx.tolist(), key=lambda i: (-scores[i], ids[i]))[:k]
    return [(int(ids[i]), float(scores[i])) for i in order]


def rrf(rankings: list[list[tuple[int, float]]], rrf_k: int = 60) -> list[tuple[int, float]]:
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (cid, _) in enumerate(ranking, 1):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))


def _minmax(ranking: list[tuple[int, float]]) -> dict[int, float]:
    if not ranking:
        return {}
    vals = np.asarray([s for _, s in ranking], dtype=np.float64)
    lo, hi = vals.min(), vals.max()
    if hi - lo <= 0:
        return {cid: 1.0 for cid, _ in ranking}
    return {cid: (s - lo) / (hi - lo) for cid, s in ranking}


def weighted(
    dense: list[tuple[int, float]], sparse: list[tuple[int, float]], alpha: float = 0.5
) -> list[tuple[int, float]]:
    d, s = _minmax(dense), _minmax(sparse)
    fused = {cid: alpha * d.get(cid, 0.0) + (1 - alpha) * s.get(cid, 0.0) for cid in {*d, *s}}
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
