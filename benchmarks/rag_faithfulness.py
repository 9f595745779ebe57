"""The faithfulness scorer with and without the generator as judge (SmolLM2), on rag-wikipedia.

1. Labelled pairs: for each rag-wikipedia question, the statement "<question>: <reference answer>."
   against (a) the best chunk of its relevant section (supported) and (b) the best-ranked
   hybrid chunk of another document (a plausible source that does not support it). Each signal's
   AUROC at telling (a) from (b) — similarity, overlap, the judge, their two-signal mean (the default
   scorer) and the three-signal mean (with the judge) — by scikit-learn's roc_auc_score.
2. Real answers: rag-wikipedia-answers' 30 questions answered by SmolLM2 from the hybrid top 3 (as
   `lmforge eval --task rag-wikipedia-answers` does), each answer scored both ways: faithfulness,
   citation recall and precision, the share of answers flagged.

Writes benchmarks/results/rag_faithfulness.json with the CPU model and flags and the load average.

    python benchmarks/rag_faithfulness.py [--threads 1] [--answers 30]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "rag_faithfulness.json"
QRELS = Path(__file__).resolve().parents[1] / "src" / "lmforge" / "tasks" / "rag-wikipedia.qrels.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="~/.cache/lmforge/bench-rag/wikipedia.db")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--answers", type=int, default=30)
    args = parser.parse_args()

    import torch
    from sklearn.metrics import roc_auc_score

    torch.set_num_threads(args.threads)
    from lmforge import rag
    from lmforge.hardware import describe
    from lmforge.io.atomic import atomic_write_text
    from lmforge.rag.answer import ask_stream
    from lmforge.rag.config import AskConfig
    from lmforge.rag.faithfulness import score, support
    from lmforge.rag.models import load_model

    store = str(Path(args.store).expanduser())
    rag.index(["wikipedia"], store)
    idx = rag.Index(store)
    lm, encoder = load_model("smollm2"), load_model("minilm")
    rows = [json.loads(x) for x in QRELS.read_text().splitlines()]
    out = {"machine": describe(), "load_average_before": os.getloadavg(), "generator": "smollm2"}

    start = time.perf_counter()
    signals: dict[str, list[float]] = {k: [] for k in ("similarity", "overlap", "judge", "mean2", "mean3")}
    labels: list[int] = []
    for row in rows:
        relevant = set(row["relevant"])
        hits = idx.search(row["query"], mode="hybrid", k=50)
        pos = next((h for h in hits if h.path in relevant), None)
        neg = next(h for h in hits if h.path.split("/")[1] != row["relevant"][0].split("/")[1])
        if pos is None:
            continue
        # one sentence: the question, then its reference answer
        statement = f"{row['query'].rstrip('?')}: {row['answer']}.".replace("? ", ", ").replace(". ", ", ")
        (s,) = support(statement, {1: pos.text, 2: neg.text}, encoder, judge=lm)
        for n, label in ((1, 1), (2, 0)):
            signals["similarity"].append(s.similarity[n])
            signals["overlap"].append(s.overlap[n])
            signals["judge"].append(s.judge[n])
            signals["mean2"].append((s.similarity[n] + s.overlap[n]) / 2)
            signals["mean3"].append(s.scores[n])
            labels.append(label)
    out["pairs"] = {
        "questions": len(labels) // 2,
        "auroc": {k: float(roc_auc_score(labels, v)) for k, v in signals.items()},
        "mean_supported": {k: float(np.mean(v[0::2])) for k, v in signals.items()},
        "mean_unsupported": {k: float(np.mean(v[1::2])) for k, v in signals.items()},
        "seconds": time.perf_counter() - start,
    }
    print("pairs:", json.dumps(out["pairs"], indent=1), flush=True)

    start = time.perf_counter()
    cfg = AskConfig(max_new_tokens=48, k=3)
    per = {"similarity+overlap": [], "with judge": []}
    details = []
    for row in [r for r in rows if r.get("answer")][: args.answers]:
        answer = list(ask_stream(idx, row["query"], cfg, False, lm=lm))[-1]
        sources = [s.text for s in answer.sources]
        if not answer.text or not sources:
            continue
        plain = score(answer.text, sources, encoder, cfg.support_threshold)
        judged = score(answer.text, sources, encoder, cfg.support_threshold, judge=lm)
        for name, f in (("similarity+overlap", plain), ("with judge", judged)):
            per[name].append([f.faithfulness, f.citation_recall, f.citation_precision, float(f.flagged)])
        details.append(
            {
                "query": row["query"],
                "answer": answer.text,
                "plain": plain.to_dict(),
                "judged": judged.to_dict(),
            }
        )
    names = ["faithfulness", "citation_recall", "citation_precision", "flagged"]
    out["answers"] = {
        "questions": len(details),
        "scorers": {k: dict(zip(names, np.mean(v, axis=0).tolist())) for k, v in per.items()},
        "seconds": time.perf_counter() - start,
        "details": details,
    }
    print("answers:", json.dumps(out["answers"]["scorers"], indent=1))
    out["load_average_after"] = os.getloadavg()
    atomic_write_text(RESULTS, json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
