"""Retrieval metrics equal ranx on random runs (ranx compiles each metric with numba: a few s each)."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.errors import LMForgeError
from lmforge.eval.metrics import retrieval


def random_run_and_qrels(seed: int, n_queries: int = 25, n_docs: int = 60):
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(n_docs)]
    run, qrels = {}, {}
    for q in range(n_queries):
        qid = f"s{seed}q{q}"
        retrieved = rng.choice(docs, size=int(rng.integers(3, 40)), replace=False)
        run[qid] = {str(d): float(rng.random()) for d in retrieved}  # continuous scores: no ties
        judged = rng.choice(docs, size=int(rng.integers(1, 10)), replace=False)
        qrels[qid] = {str(d): int(rng.integers(0, 4)) for d in judged}  # graded, some non-relevant
        if q % 3 == 0:  # make sure some relevant documents are retrieved
            qrels[qid][str(retrieved[0])] = 2
    return run, qrels


def _ranx(run, qrels, metrics):
    import ranx

    return ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), metrics)


def _several_seeds():
    run, qrels = {}, {}
    for seed in range(4):
        r, q = random_run_and_qrels(seed)
        run.update(r)
        qrels.update(q)
    return run, qrels


def test_parity_with_ranx() -> None:
    run, qrels = _several_seeds()
    metrics = ["recall@5", "mrr", "ndcg@10", "map"]
    expected = _ranx(run, qrels, metrics)
    got = retrieval.evaluate(run, qrels, metrics)
    for m in metrics:
        assert got[m] == pytest.approx(float(expected[m]), abs=1e-12), m


@pytest.mark.slow
def test_parity_with_ranx_all_cutoffs() -> None:
    run, qrels = _several_seeds()
    metrics = [
        "recall@20",
        "precision@5",
        "precision@50",
        "mrr@3",
        "ndcg@3",
        "ndcg@100",
        "map@5",
        "hit_rate@3",
    ]
    expected = _ranx(run, qrels, metrics)
    got = retrieval.evaluate(run, qrels, metrics)
    for m in metrics:
        assert got[m] == pytest.approx(float(expected[m]), abs=1e-12), m


def test_hand_computed_example() -> None:
    run = {"q": {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}}
    qrels = {"q": {"b": 1, "d": 2, "e": 1}}
    got = retrieval.evaluate(run, qrels, ["recall@2", "precision@2", "mrr", "map", "ndcg@4"])
    assert got["recall@2"] == pytest.approx(1 / 3)
    assert got["precision@2"] == pytest.approx(1 / 2)
    assert got["mrr"] == pytest.approx(1 / 2)
    assert got["map"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    dcg = 1 / np.log2(3) + 2 / np.log2(5)
    idcg = 2 / np.log2(2) + 1 / np.log2(3) + 1 / np.log2(4)
    assert got["ndcg@4"] == pytest.approx(dcg / idcg)


def test_bad_metric_names_and_inputs() -> None:
    with pytest.raises(LMForgeError, match="known: recall@K"):
        retrieval.evaluate({}, {"q": {"a": 1}}, ["rcall@5"])
    with pytest.raises(LMForgeError, match="needs a cutoff"):
        retrieval.evaluate({}, {"q": {"a": 1}}, ["ndcg"])
    with pytest.raises(LMForgeError, match="qrels are empty"):
        retrieval.evaluate({"q": {"a": 1.0}}, {}, ["mrr"])
