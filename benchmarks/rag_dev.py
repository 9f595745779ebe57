"""What the dev-only reranker studies share (benchmarks/rag_rerank_study.py, rag_ql_study.py): the
development sets, running a study over each store, the table of each variant's smaller margin over the
best single mode, and the printed table. The test sets are never read here."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

TASKS = Path(__file__).resolve().parents[1] / "src" / "lmforge" / "tasks"
SETS = {
    "wikipedia": TASKS / "rag-wikipedia-dev.qrels.jsonl",
    "pydoc": TASKS / "rag-pydoc-dev.qrels.jsonl",
}
METRIC = "ndcg@10"


def run_studies(description: str, rule: str, study: Callable, default_threads: int) -> dict:
    """Parse --work/--threads, run `study(idx, queries, judged)` on each dev set against its store under
    --work (the stores benchmarks/rag_eval.py builds) and return the record: machine, load, rule, sets."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work", default="~/.cache/lmforge/bench-rag")
    parser.add_argument("--threads", type=int, default=default_threads)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from lmforge.hardware import describe
    from lmforge.rag.api import open_index, read_qrels

    work = Path(args.work).expanduser()
    print(f"machine: {describe()}")
    out = {"machine": describe(), "load_average_before": os.getloadavg(), "rule": rule, "sets": {}}
    for name, qrels in SETS.items():
        start = time.perf_counter()
        idx = open_index(work / f"{name}.db")
        queries, judged = read_qrels(qrels, idx)
        out["sets"][name] = study(idx, queries, judged)
        out["sets"][name]["seconds"] = time.perf_counter() - start
        print(name, json.dumps(out["sets"][name]["diagnosis"]), flush=True)
    return out


def margin_table(out: dict) -> dict[str, dict[str, float]]:
    """{variant: {"min_margin", "mean"}}: the smaller dev margin over the best single mode, the mean."""
    table = {}
    for key in out["sets"][next(iter(SETS))]["variants"]:
        s = [out["sets"][n]["variants"][key] for n in SETS]
        table[key] = {
            "min_margin": min(x["margin"] for x in s),
            "mean": float(np.mean([x[METRIC] for x in s])),
        }
    return table


def finish(out: dict, table: dict, results: Path, extra: Callable[[str], str] | None = None) -> None:
    """Print the table (with an `extra` column when given) and the choice; write `results`."""
    from lmforge.io.atomic import atomic_write_text

    head = f"| variant | {' | '.join(f'{n} {METRIC} (margin)' for n in SETS)} | min margin |"
    print("\n" + head + (" s/query |" if extra else ""))
    print("|---|" + "---|" * len(SETS) + "---|" + ("---|" if extra else ""))
    for k, t in table.items():
        cells = " | ".join(
            f"{out['sets'][n]['variants'][k][METRIC]:.3f} ({out['sets'][n]['variants'][k]['margin']:+.3f})"
            for n in SETS
        )
        print(f"| {k} | {cells} | {t['min_margin']:+.3f} |" + (f" {extra(k)} |" if extra else ""))
    print(f"chosen by the rule: {out['chosen']}")
    out["load_average_after"] = os.getloadavg()
    atomic_write_text(results, json.dumps(out, indent=1) + "\n")
    print(f"wrote {results}")
