"""Retrieval quality of every mode on the shipped RAG sets, side by side with bootstrap intervals:
bm25, dense, hybrid (RRF), hybrid-rerank (the default: the generator's query likelihood reordering the
hybrid top 5, on the queries where BM25's and the dense retriever's best documents differ) and, for
comparison, hybrid-rerank with the sentence reranker at its own defaults.

- wikipedia: 55 questions over the built-in Wikipedia excerpt (294 section documents);
- pydoc: 60 questions over the Python 3.11 library reference Debian ships
  (`apt-get install python3.11-doc`; 317 pages, ~13k chunks; indexing takes ~20 min on 2 busy cores).

hybrid-rerank runs with `SearchConfig`'s defaults (reranker, rerank_weight, rerank_depth), which were
chosen on the development sets rag-*-dev (`benchmarks/rag_ql_study.py`, `rag_gate_study.py` for
rerank_when; the sentence reranker's by
`benchmarks/rag_tune.py`), never on these test sets. Each set's entry says
whether hybrid-rerank beats the best single retriever (bm25 or dense) on nDCG@10, and hybrid, and by how much.

Stores are built (or updated incrementally) under --work and reused. Writes benchmarks/results/rag_eval.json
with the CPU model and flags and the load average.

    python benchmarks/rag_eval.py [--sets wikipedia pydoc] [--work ~/.cache/lmforge/bench-rag] [--threads 1] [--output F]
    python benchmarks/rag_eval.py --paired-only   # + paired intervals of hybrid-rerank - best single, - hybrid
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "rag_eval.json"
TASKS = Path(__file__).resolve().parents[1] / "src" / "lmforge" / "tasks"
SETS = {
    "wikipedia": ("wikipedia", TASKS / "rag-wikipedia.qrels.jsonl"),
    "pydoc": ("/usr/share/doc/python3.11-doc/html/library", TASKS / "rag-pydoc.qrels.jsonl"),
}
MODES = ["bm25", "dense", "hybrid", "hybrid-rerank"]
SENTENCE = "hybrid-rerank (sentence)"


def aim(results: dict, metric: str = "ndcg@10") -> dict:
    """hybrid-rerank's margin on `metric` over the best single retriever (bm25 or dense), the issue's aim,
    and over hybrid, their fusion (the stricter comparison these notes also report)."""
    best = max(("bm25", "dense"), key=lambda m: results[m][metric]["value"])
    value = results["hybrid-rerank"][metric]["value"]
    margin, over_hybrid = value - results[best][metric]["value"], value - results["hybrid"][metric]["value"]
    return {
        "metric": metric,
        "best_single": best,
        "margin": margin,
        "beats": margin > 0,
        "margin_over_hybrid": over_hybrid,
        "beats_hybrid": over_hybrid > 0,
    }


def paired(store: Path, qrels: Path, best: str, metric: str = "ndcg@10") -> dict:
    """Bootstrap interval of the per-query difference hybrid-rerank - `best` (the same queries resampled
    for both, so the interval is of the difference itself)."""
    from lmforge.eval.bootstrap import mean_ci
    from lmforge.eval.metrics import retrieval
    from lmforge.rag.api import document_run, open_index, read_qrels

    idx = open_index(store)
    queries, judged = read_qrels(qrels, idx)
    per = {
        m: retrieval.per_query(document_run(idx, queries, m, 10), judged, [metric])[metric]
        for m in ("hybrid-rerank", best)
    }
    ci = mean_ci([per["hybrid-rerank"][q] - per[best][q] for q in queries])
    wins = sum(per["hybrid-rerank"][q] > per[best][q] for q in queries)
    losses = sum(per["hybrid-rerank"][q] < per[best][q] for q in queries)
    return {
        "difference": ci.value,
        "low": ci.low,
        "high": ci.high,
        "queries_better": wins,
        "queries_worse": losses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--work", default="~/.cache/lmforge/bench-rag")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--paired-only",
        action="store_true",
        help="add to the saved results the paired bootstrap interval of hybrid-rerank minus the best single mode",
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from lmforge import rag
    from lmforge.hardware import describe
    from lmforge.io.atomic import atomic_write_text

    work = Path(args.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    if args.paired_only:
        saved = json.loads(args.output.read_text())
        for name in args.sets:
            entry = saved["sets"][name]
            store, best = work / f"{name}.db", entry["aim"]["best_single"]
            entry["aim"]["paired"] = paired(store, SETS[name][1], best)
            entry["aim"]["paired_over_hybrid"] = paired(store, SETS[name][1], "hybrid")
            print(name, entry["aim"], flush=True)
        saved["paired_machine"], saved["paired_load_average"] = describe(), os.getloadavg()
        atomic_write_text(args.output, json.dumps(saved, indent=1) + "\n")
        return
    from lmforge.rag.config import SearchConfig

    def settings(cfg: SearchConfig) -> dict:
        used = cfg.reranker_used
        return {
            "reranker": used,
            "rerank_weight": cfg.weight_for(used),
            "rerank_depth": cfg.depth_for(used),
            "rerank_fusion": cfg.rerank_fusion,
        }

    out = {
        "machine": describe(),
        "load_average_before": os.getloadavg(),
        "modes": MODES + [SENTENCE],
        "hybrid_rerank": {
            **settings(SearchConfig(mode="hybrid-rerank")),
            "chosen_on": "rag-wikipedia-dev, rag-pydoc-dev (benchmarks/results/rag_ql_study.json)",
        },
        SENTENCE: {
            **settings(SearchConfig(mode="hybrid-rerank", rerank="sentence")),
            "chosen_on": "rag-wikipedia-dev, rag-pydoc-dev (benchmarks/results/rag_tune.json, "
            "rag_rerank_study.json)",
        },
        "sets": {},
    }
    for name in args.sets:
        corpus, qrels = SETS[name]
        store = work / f"{name}.db"
        start = time.perf_counter()
        report = rag.index([corpus], store)
        indexed = time.perf_counter() - start
        start = time.perf_counter()
        results = rag.evaluate(store, qrels, modes=MODES, k=10)
        modes_seconds = time.perf_counter() - start
        sentence = rag.evaluate(store, qrels, modes=["hybrid-rerank"], k=10, rerank="sentence")
        results[SENTENCE] = sentence["hybrid-rerank"]
        print(
            f"## {name} ({report.documents} documents, {report.chunks} chunks)\n{rag.eval_table(results)}\n"
        )
        out["sets"][name] = {
            "corpus": corpus,
            "qrels": str(qrels.relative_to(TASKS.parents[2])),
            "documents": report.documents,
            "chunks": report.chunks,
            "index_seconds": indexed,
            "eval_seconds": modes_seconds,
            "eval_seconds_with_sentence": time.perf_counter() - start,
            "results": results,
            "aim": aim(results),
        }
        print(f"aim: {out['sets'][name]['aim']}")
    out["load_average_after"] = os.getloadavg()
    atomic_write_text(args.output, json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
