"""Why hybrid-rerank ties hybrid on rag-wikipedia, studied on the development sets only (rag-wikipedia-dev,
rag-pydoc-dev; the test sets are never read here).

1. Diagnosis: for each dev question, is hybrid's rank-1 document wrong, is a relevant document among the
   chunks the reranker reorders (the hybrid top `rerank_depth`), and would the sentence reranker's own
   best chunk fix it (belong to a relevant document) or break a right answer?
2. Variants of the sentence reranker, each fused exactly as `Index.search` does (hybrid top 50, the top
   `rerank_depth` reordered, documents ranked where their best chunk ranks, top 10):
   - max: the best query-sentence similarity (the current scorer);
   - top2-mean: the mean of the two best sentence similarities (one strong sentence is not enough);
   - max+chunk: the mean of the best sentence similarity and the whole chunk's similarity;
   - max+heading: the best over the sentences and the chunk's heading "title: section";
   - score-fusion: the reranker's best-sentence score and the hybrid RRF score, each min-max normalized
     over the reordered chunks, summed with the weight (instead of reciprocal-rank fusion of orders);
   at rerank_weight 0.2 (the default), 0.5 and 1.0, depth 30.

The rule, fixed before any variant was run: a variant/weight replaces the default of the time (max,
0.2, reciprocal-rank fusion) only if
(a) its smaller dev margin of nDCG@10 over the best of bm25/dense/hybrid is larger than the default's,
(b) the mean dev nDCG@10 is larger, and (c) neither dev set's nDCG@10 is lower than the default's.
Otherwise the defaults stay. It chose score-fusion@0.2, now `SearchConfig`'s default
(rerank_fusion="weighted"); both checks below tie the study to `Index.search`. Writes benchmarks/results/rag_rerank_study.json (CPU, load average).

    python benchmarks/rag_rerank_study.py [--threads 1]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rag_dev import METRIC, SETS, finish, margin_table, run_studies

RESULTS = Path(__file__).parent / "results" / "rag_rerank_study.json"
VARIANTS = ["max", "top2-mean", "max+chunk", "max+heading", "score-fusion"]
WEIGHTS = [0.2, 0.5, 1.0]
DEPTH, CANDIDATES, K = 30, 50, 10


def minmax(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.ones_like(x)


def documents(paths: list[str]) -> dict[str, float]:
    ranked = list(dict.fromkeys(paths))  # scored as `document_run` scores them
    return {p: float(len(ranked) - i) for i, p in enumerate(ranked[:K])}


def study(idx, queries: dict[str, str], judged: dict[str, dict[str, int]]) -> dict:
    from lmforge.eval.metrics import retrieval
    from lmforge.rag.api import document_run
    from lmforge.rag.rerank import fuse_orders

    headings: dict[str, np.ndarray] = {}
    runs: dict[tuple[str, float], dict] = {}
    single = {m: document_run(idx, queries, m, K) for m in ("bm25", "dense", "hybrid")}
    diag = {
        "questions": len(queries),
        "hybrid_top1_wrong": 0,
        "relevant_in_depth": 0,
        "fixable": 0,
        "breakable": 0,
    }
    for qid, text in queries.items():
        hits = idx.search(text, mode="hybrid", k=CANDIDATES, candidates=CANDIDATES)
        top, rest = hits[:DEPTH], hits[DEPTH:]
        ids = [h.chunk_id for h in top]
        q = idx.query_vector(text)
        sent = [v @ q for v in idx.sentence_vectors([h.text for h in top])]
        chunk = idx.store.embeddings_of(ids) @ q
        names = [f"{h.title}: {h.section}" if h.section else h.title for h in top]
        new = [n for n in dict.fromkeys(names) if n not in headings]
        if new:
            headings.update(zip(new, idx.embed(new)))
        head = np.asarray([headings[n] @ q for n in names])
        best = np.asarray([s.max() for s in sent])
        scores = {
            "max": best,
            "top2-mean": np.asarray([np.sort(s)[-2:].mean() for s in sent]),
            "max+chunk": (best + chunk) / 2,
            "max+heading": np.maximum(best, head),
        }
        relevant = {p for p, g in judged[qid].items() if g > 0}
        top1_wrong = hits[0].path not in relevant
        rerank_top = top[int(np.argmax(best))].path in relevant
        diag["hybrid_top1_wrong"] += top1_wrong
        diag["relevant_in_depth"] += top1_wrong and any(h.path in relevant for h in top)
        diag["fixable"] += top1_wrong and rerank_top
        diag["breakable"] += (not top1_wrong) and not rerank_top
        for w in WEIGHTS:
            for v in VARIANTS:
                if v == "score-fusion":
                    fused = w * minmax(best) + (1 - w) * minmax(np.asarray([h.score for h in top]))
                    order = [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-fused[i], i))]
                else:
                    order = [c for c, _ in fuse_orders(ids, scores[v].tolist(), w)]
                path = {h.chunk_id: h.path for h in hits}
                runs.setdefault((v, w), {})[qid] = documents(
                    [path[c] for c in order] + [h.path for h in rest]
                )
    for fusion, variant in (("rrf", "max"), ("weighted", "score-fusion")):
        check = document_run(
            idx, queries, "hybrid-rerank", K, rerank="sentence", rerank_fusion=fusion, rerank_weight=0.2
        )
        assert check == runs[(variant, 0.2)], f"the study's {variant} differs from Index.search's"
    per = {m: retrieval.per_query(r, judged, [METRIC])[METRIC] for m, r in single.items()}
    value = {m: float(np.mean(list(p.values()))) for m, p in per.items()}
    best_single = max(value, key=value.get)
    out = {"diagnosis": diag, "single": value, "best_single": best_single, "variants": {}}
    for (v, w), run in runs.items():
        scores = retrieval.per_query(run, judged, [METRIC])[METRIC]
        ndcg = float(np.mean(list(scores.values())))
        base = retrieval.per_query(runs[("max", 0.2)], judged, [METRIC])[METRIC]
        out["variants"][f"{v}@{w}"] = {
            METRIC: ndcg,
            "margin": ndcg - value[best_single],
            "better_than_default": sum(scores[q] > base[q] for q in scores),
            "worse_than_default": sum(scores[q] < base[q] for q in scores),
        }
    return out


def main() -> None:
    out = run_studies(__doc__.splitlines()[0], __doc__.split("The rule")[1], study, default_threads=1)
    default = "max@0.2"
    table = margin_table(out)
    d = table[default]
    passing = [
        k
        for k, t in table.items()
        if t["min_margin"] > d["min_margin"]
        and t["mean"] > d["mean"]
        and all(
            out["sets"][n]["variants"][k][METRIC] >= out["sets"][n]["variants"][default][METRIC] for n in SETS
        )
    ]
    out["table"] = table
    out["chosen"] = (
        max(passing, key=lambda k: (table[k]["min_margin"], table[k]["mean"])) if passing else default
    )
    finish(out, table, RESULTS)


if __name__ == "__main__":
    main()
