"""Choose hybrid-rerank's fusion on the development sets only (rag-wikipedia-dev, rag-pydoc-dev).

hybrid-rerank = the hybrid RRF first stage, its top `rerank_depth` chunks scored by the sentence
reranker, the two orders fused by weighted reciprocal-rank fusion (`rerank_weight`; 1 = the reranker's
order alone). The sweep runs every (rerank_weight, rerank_depth) of the grid through `rag.evaluate`
(the code path users run) on both dev sets, beside bm25, dense and hybrid.

The rule, fixed before the sweep: the aim is "hybrid+rerank beats the best single mode on nDCG@10" on
each set, so a setting's score is its smaller dev margin over the best other mode of that set (bm25,
dense or hybrid), ties broken by the mean nDCG@10 of the two sets. The test sets (rag-wikipedia,
rag-pydoc) are never read here; `benchmarks/rag_eval.py` reports them with the default this chooses.

The store caches each chunk's sentence vectors (`Index.sentence_vectors`; a setting changes the fusion,
not the embeddings), so the sweep pays for each sentence once. Stores are the ones `rag_eval.py` builds.
Writes benchmarks/results/rag_tune.json with the CPU model and flags and the load average.

    python benchmarks/rag_tune.py [--threads 1] [--weights 0.1 0.2 ...] [--depths 10 20 30]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "rag_tune.json"
TASKS = Path(__file__).resolve().parents[1] / "src" / "lmforge" / "tasks"
SETS = {
    "wikipedia": ("wikipedia", TASKS / "rag-wikipedia-dev.qrels.jsonl"),
    "pydoc": ("/usr/share/doc/python3.11-doc/html/library", TASKS / "rag-pydoc-dev.qrels.jsonl"),
}
SINGLE = ["bm25", "dense", "hybrid"]
METRIC = "ndcg@10"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="~/.cache/lmforge/bench-rag")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0])
    parser.add_argument("--depths", type=int, nargs="+", default=[10, 20, 30])
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from lmforge import rag
    from lmforge.hardware import describe
    from lmforge.io.atomic import atomic_write_text
    from lmforge.rag.config import SearchConfig

    work = Path(args.work).expanduser()
    out = {
        "machine": describe(),
        "load_average_before": os.getloadavg(),
        "rule": "max over settings of min over dev sets of (hybrid-rerank nDCG@10 - best of bm25/dense/hybrid); "
        "ties: mean nDCG@10",
        "default_before": {
            "rerank_weight": SearchConfig().weight_for("sentence"),
            "rerank_depth": SearchConfig().depth_for("sentence"),
        },
        "sets": {},
        "settings": [],
    }
    single: dict[str, float] = {}
    grid = [(w, d) for d in args.depths for w in args.weights]
    scores: dict[tuple[float, int], dict[str, float]] = {g: {} for g in grid}
    for name, (corpus, qrels) in SETS.items():
        store = work / f"{name}.db"
        report = rag.index([corpus], store)  # incremental: nothing to do when the store is current
        idx = rag.Index(store)
        start = time.perf_counter()
        base = rag.evaluate(idx, qrels, modes=SINGLE, k=10)
        single[name] = max(base[m][METRIC]["value"] for m in SINGLE)
        out["sets"][name] = {
            "qrels": str(qrels.relative_to(TASKS.parents[2])),
            "documents": report.documents,
            "chunks": report.chunks,
            "results": base,
            "best_single": single[name],
        }
        print(f"## {name} dev ({report.chunks} chunks)\n{rag.eval_table(base)}")
        for w, d in grid:
            res = rag.evaluate(
                idx, qrels, modes=["hybrid-rerank"], k=10, rerank="sentence", rerank_weight=w, rerank_depth=d
            )
            scores[(w, d)][name] = res["hybrid-rerank"][METRIC]["value"]
            print(f"  weight {w:.1f} depth {d:2d}: {METRIC} {scores[(w, d)][name]:.3f}", flush=True)
        out["sets"][name]["sweep_seconds"] = time.perf_counter() - start
    for (w, d), per in scores.items():
        margins = {n: per[n] - single[n] for n in per}
        out["settings"].append(
            {
                "rerank_weight": w,
                "rerank_depth": d,
                METRIC: per,
                "margin": margins,
                "min_margin": min(margins.values()),
                "mean": float(np.mean(list(per.values()))),
            }
        )
    best = max(out["settings"], key=lambda s: (round(s["min_margin"], 9), round(s["mean"], 9)))
    out["chosen"] = {k: best[k] for k in ("rerank_weight", "rerank_depth", METRIC, "margin")}
    out["load_average_after"] = os.getloadavg()
    print("\n| weight | depth | " + " | ".join(f"{n} dev" for n in SETS) + " | smaller margin |")
    print("|---|---|" + "---|" * len(SETS) + "---|")
    for s in out["settings"]:
        cells = " | ".join(f"{s[METRIC][n]:.3f} ({s['margin'][n]:+.3f})" for n in SETS)
        print(f"| {s['rerank_weight']:.1f} | {s['rerank_depth']} | {cells} | {s['min_margin']:+.3f} |")
    print(f"chosen: {out['chosen']}")
    atomic_write_text(RESULTS, json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
