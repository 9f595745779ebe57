"""SmolLM2's weights in 4 KiB pages against 2 MiB pages (lmforge/model/huge_pages.py), in one run.

Decode on the default path a user gets (`lmforge.load(DIR).generate(...)`, the AOT step `lmforge quantize`
compiled) for fp32 (`lmforge.load("smollm2")`), bf16, int8 and int4 g64 (the checkpoints
benchmarks/quantize.py makes), each timed in a fresh process with LMFORGE_HUGE_PAGES=0 (4 KiB pages, as
before) and =1 (the default), alternating, `--rounds` rounds (greedy, 128 new tokens after a 128-token
prompt, the prefill subtracted); medians, the greedy tokens of every process compared, and the kB of
2 MiB pages behind the weights recorded. For bf16 also the read rate of its linears alone: each run once on
one input row (lmforge's bf16 kernel), best of 5, as GB/s of weights read.
Prints the CPU model and flags and Linux's transparent huge page setting; saves benchmarks/results/huge_pages.json.

    python benchmarks/huge_pages.py [--threads 2] [--rounds 5] [--variants fp32 bf16 int8 int4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import quantize as smollm2_bench  # noqa: E402  (its checkpoints and decode timing)

RESULTS = Path(__file__).parent / "results" / "huge_pages.json"


def measure(source: str, huge: bool, args) -> dict:
    """One process's figures for one load: default-path decode tok/s, the greedy tokens, kB of 2 MiB
    pages behind the first weight, and (bf16) the linears' read rate."""
    import torch

    import lmforge
    from lmforge.model.huge_pages import backed_kb

    torch.set_num_threads(args.threads)
    lm = lmforge.load(source)
    prompt = json.loads(args.prompt)
    out = {
        "decode_tok_s": smollm2_bench.decode_rate(lm, prompt, args.new_tokens, "default"),
        "tokens": lm.generate([prompt], max_new_tokens=32, ignore_eos=True)[0].token_ids,
        "huge_page_kb": backed_kb(next(lm.model.parameters())),
        "decode_step": lm.generate([prompt[:4]], max_new_tokens=2)[0].decode_step,
    }
    if any(type(m).__name__ == "BF16Linear" for m in lm.model.modules()):
        out["linears_read_gb_s"] = read_rate(lm)
    return out


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


def child(source: str, huge: bool, args) -> dict:
    """`measure` in a fresh process with LMFORGE_HUGE_PAGES set (two loads in one process disturb each
    other's timings)."""
    env = {**os.environ, "LMFORGE_HUGE_PAGES": "1" if huge else "0"}
    cmd = [sys.executable, __file__, "--child", source, "--threads", str(args.threads)]
    cmd += ["--new-tokens", str(args.new_tokens), "--prompt", args.prompt]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--variants", nargs="+", default=["fp32", "bf16", "int8", "int4"])
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: measure this source and print JSON
    parser.add_argument("--prompt", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, os.environ["LMFORGE_HUGE_PAGES"] == "1", args)))
        return

    import lmforge
    from lmforge.assets import HELD_OUT_PLAY, asset_path
    from lmforge.hardware import describe, machine

    print(f"machine: {describe()}")
    cache = Path(os.environ.get("LMFORGE_CACHE", Path.home() / ".cache" / "lmforge")) / "bench-quantize"
    cache.mkdir(parents=True, exist_ok=True)
    text = (asset_path("shakespeare") / HELD_OUT_PLAY).read_text(encoding="utf-8")
    prompt = lmforge.load("smollm2", compile="eager").encode(text, add_special_tokens=False)[:128]
    args.prompt = json.dumps(prompt)
    sources = {
        v: "smollm2" if v == "fp32" else str(smollm2_bench.checkpoint(cache, v)) for v in args.variants
    }

    settings = {k: v for k, v in vars(args).items() if k not in ("child", "prompt")} | {
        "output": str(args.output)
    }
    result: dict = {"machine": machine(), "settings": settings}
    rows = {}
    for variant, source in sources.items():
        runs = {"4k": [], "2m": []}
        for _ in range(args.rounds):
            for key in runs:
                runs[key].append(child(source, key == "2m", args))
        medians = {k: statistics.median(r["decode_tok_s"] for r in v) for k, v in runs.items()}
        rows[variant] = {
            "decode_tok_s_4k": round(medians["4k"], 1),
            "decode_tok_s_2m": round(medians["2m"], 1),
            "speedup": round(medians["2m"] / medians["4k"], 2),
            "rounds": {k: [round(r["decode_tok_s"], 1) for r in v] for k, v in runs.items()},
            "same_tokens": len({tuple(r["tokens"]) for v in runs.values() for r in v}) == 1,
            "huge_page_kb": {k: [r["huge_page_kb"] for r in v] for k, v in runs.items()},
            "decode_step": runs["2m"][0]["decode_step"],
        }
        if "linears_read_gb_s" in runs["4k"][0]:
            rows[variant]["linears_read_gb_s"] = {
                k: round(statistics.median(r["linears_read_gb_s"] for r in v), 1) for k, v in runs.items()
            }
        print(f"{variant}: {json.dumps(rows[variant])}", flush=True)
    result["rows"] = rows
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    print("\n| variant | 4 KiB pages tok/s | 2 MiB pages tok/s | speedup |\n|---|---|---|---|")
    for variant, row in rows.items():
        print(f"| {variant} | {row['decode_tok_s_4k']} | {row['decode_tok_s_2m']} | {row['speedup']}x |")
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
