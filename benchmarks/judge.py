"""The worked comparison: SmolLM2-135M-Instruct against a quickstart model (a small GPT pretrained for a
few minutes on Shakespeare), judged pairwise by SmolLM2 itself on the 12 shipped prompts
(`lmforge/tasks/judge-prompts.jsonl`), each pair in both orders.

Prints the summary and writes the judge report (report.json with every judge prompt and decision,
report.md, plots) under benchmarks/results/judge/ plus benchmarks/results/judge.json (figures, CPU
model and flags, load average).

    lmforge quickstart --minutes 3 --out runs/quickstart     # makes runs/quickstart/run-N/best
    python benchmarks/judge.py runs/quickstart/run-1/best [--max-new-tokens 48] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("quickstart", help="quickstart checkpoint directory (run-N/best)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-resamples", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=None, help="judge only the first N prompts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import lmforge
    from lmforge.eval.harness import shipped_tasks_dir
    from lmforge.hardware import describe
    from lmforge.io.atomic import atomic_write_text

    load_before = os.getloadavg()
    start = time.perf_counter()
    result = lmforge.judge(
        ["smollm2", args.quickstart],
        shipped_tasks_dir() / "judge-prompts.jsonl",
        judge="smollm2",
        max_new_tokens=args.max_new_tokens,
        limit=args.limit,
        n_resamples=args.n_resamples,
        output=RESULTS / "judge",
        progress=lambda line: print(f"[judge] {line}", flush=True),
    )
    seconds = time.perf_counter() - start
    print(result.summary())
    pair = next(r for r in result.report["results"] if r["task"] == "judge-pairwise")
    out = {
        "command": f"python benchmarks/judge.py {args.quickstart} --max-new-tokens {args.max_new_tokens}"
        + (f" --limit {args.limit}" if args.limit else ""),
        "models": ["smollm2", args.quickstart],
        "judge": "smollm2",
        "prompts": pair["n_examples"],
        "metrics": pair["metrics"],
        "ratings": result.ratings,
        "seconds": seconds,
        "hardware": describe(),
        "threads": args.threads,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    atomic_write_text(RESULTS / "judge.json", json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / 'judge.json'} and {RESULTS / 'judge' / 'report.md'}")


if __name__ == "__main__":
    main()
