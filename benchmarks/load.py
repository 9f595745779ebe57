"""Load time and peak memory: lmforge.load vs transformers on the same SmolLM2 GGUF, fp32 on CPU.

Each side runs in a fresh subprocess so peak RSS is its own. Prints a table and the ratios, and
saves benchmarks/results/load.json.

    python benchmarks/load.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "load.json"


def measure(side: str) -> dict:
    import torch

    from lmforge.assets import asset_path

    path = asset_path("smollm2")
    torch.set_num_threads(2)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if side == "lmforge":
        import lmforge

        model = lmforge.load(path, device="cpu").model
    else:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "seconds": seconds,
        "peak_rss_mb": peak / 1024,
        "load_rss_mb": (peak - base) / 1024,
        "weights_mb": weights / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", choices=["lmforge", "transformers"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(measure(args.side)))
        return
    results = {}
    for side in ("lmforge", "transformers"):
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run(
                [sys.executable, __file__, "--side", side], capture_output=True, text=True, check=True
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        results[side] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    ours, ref = results["lmforge"], results["transformers"]
    print(f"{'':14}{'load s':>10}{'peak RSS MB':>14}{'load RSS MB':>14}{'weights MB':>12}")
    for side, r in results.items():
        print(
            f"{side:14}{r['seconds']:>10.2f}{r['peak_rss_mb']:>14.0f}{r['load_rss_mb']:>14.0f}{r['weights_mb']:>12.0f}"
        )
    speedup = ref["seconds"] / ours["seconds"]
    memory = ours["load_rss_mb"] / ref["load_rss_mb"]
    print(f"lmforge is {speedup:.2f}x faster to load and uses {memory:.2f}x the memory of transformers")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "load SmolLM2-135M-Instruct Q4_1 GGUF to fp32 on CPU (median of repeats)",
                "command": "python benchmarks/load.py",
                "repeats": args.repeats,
                "machine": platform.processor() or platform.machine(),
                "results": results,
                "speedup_vs_transformers": speedup,
                "memory_ratio_vs_transformers": memory,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
