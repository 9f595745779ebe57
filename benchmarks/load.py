"""Import time, load time and peak memory: lmforge vs transformers on the same SmolLM2 GGUF, fp32 on CPU.

Every measurement runs in a fresh subprocess, so each import is cold within its process and peak RSS
is its own. The child imports torch first (both sides need it; timed apart as `torch_import_s`), then
times its package's import (`import lmforge` / `import transformers`, nothing of either imported
before: the parent passes the GGUF path in) and the load of what a user needs to generate:
`lmforge.load` (model + tokenizer) against `AutoModelForCausalLM` + `AutoTokenizer` (the model alone
is also recorded). The sides are interleaved (lmforge, transformers, lmforge, ...) so a change in
machine load hits both alike; figures are medians over `--repeats` runs. Prints a table and saves
benchmarks/results/load.json with the CPU model, its SIMD flags and the load average.

    python benchmarks/load.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "load.json"
SIDES = ("lmforge", "transformers")
SIMD = ("sse4", "avx", "fma", "f16c", "amx")  # flag prefixes that matter to matmul kernels


def machine_info() -> dict:
    """The CPU model and its SIMD flags (from /proc/cpuinfo), core count and load average: a shared
    machine's other jobs slow every figure, so results carry the load they were measured under."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():  # the first CPU's entries
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
    except OSError:  # not Linux
        pass
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = sorted(f for f in fields.get("flags", "").split() if f.startswith(SIMD))
    return {
        "cpu": model,
        "cpu_flags": flags,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def measure(side: str, gguf: Path) -> dict:
    """One cold run of `side` in this (fresh) process."""
    start = time.perf_counter()
    import torch

    torch_import = time.perf_counter() - start
    torch.set_num_threads(2)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if side == "lmforge":
        import lmforge

        imported = time.perf_counter()
        model = lmforge.load(gguf, device="cpu").model  # model and tokenizer in one call
        model_loaded, loaded = None, time.perf_counter()
    else:
        import transformers

        imported = time.perf_counter()
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        model_loaded = time.perf_counter()
        transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "torch_import_s": torch_import,
        "import_s": imported - start,
        "load_s": loaded - imported,
        **({"model_load_s": model_loaded - imported} if model_loaded is not None else {}),
        "import_and_load_s": loaded - start,
        "peak_rss_mb": peak / 1024,
        "rss_over_torch_mb": (peak - base) / 1024,
        "weights_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--gguf", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(measure(args.side, args.gguf)))
        return

    from lmforge.assets import asset_path  # the parent only: the children start cold

    gguf = asset_path("smollm2")
    before = machine_info()
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    for i in range(args.repeats):
        for side in SIDES:  # interleaved: A B A B ...
            cmd = [sys.executable, __file__, "--side", side, "--gguf", str(gguf)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = runs[side][-1]
            print(
                f"  run {i + 1} {side:12} import {r['import_s']:.2f} s, load {r['load_s']:.2f} s", flush=True
            )
    results = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()}

    ours, ref = results["lmforge"], results["transformers"]
    print(f"\nmedians of {args.repeats} interleaved cold runs (fresh process each), fp32 on CPU, 2 threads\n")
    print("| | import s | load s (model + tokenizer) | model only s | import + load s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for side, r in results.items():
        model_only = f"{r['model_load_s']:.2f}" if "model_load_s" in r else "—"
        print(
            f"| {side} | {r['import_s']:.2f} | {r['load_s']:.2f} | {model_only} | "
            f"{r['import_and_load_s']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    torch_import = statistics.median(r["torch_import_s"] for rs in runs.values() for r in rs)
    print(f"| (torch, imported first on both sides) | {torch_import:.2f} |")
    ratios = {
        "import": ref["import_s"] / ours["import_s"],
        "load": ref["load_s"] / ours["load_s"],
        "import_and_load": ref["import_and_load_s"] / ours["import_and_load_s"],
        "peak_rss": ours["peak_rss_mb"] / ref["peak_rss_mb"],
    }
    print(
        f"\ntransformers / lmforge time: import {ratios['import']:.2f}x, load {ratios['load']:.2f}x, "
        f"both {ratios['import_and_load']:.2f}x; lmforge's peak RSS is {ratios['peak_rss']:.2f}x transformers'"
    )

    from lmforge.io.atomic import atomic_write_text

    result = {
        "benchmark": "cold import + load of SmolLM2-135M-Instruct (Q4_1 GGUF -> fp32, CPU), model + tokenizer",
        "command": f"python benchmarks/load.py --repeats {args.repeats}",
        "repeats": args.repeats,
        "statistic": "median of interleaved runs, one fresh process each",
        "machine": {**machine_info(), "load_average_before": before["load_average"]},
        "results": results,
        "runs": runs,
        "transformers_over_lmforge_time": {k: v for k, v in ratios.items() if k != "peak_rss"},
        "lmforge_over_transformers_peak_rss": ratios["peak_rss"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS, json.dumps(result, indent=2))
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
