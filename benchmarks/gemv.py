"""One-row and 128-row linear layers in fp32 and bf16 on SmolLM2's layer shapes: what decode (one row per
step) and prefill (many rows) cost in each dtype on this CPU, as weight bytes read per second.

On CPUs with AMX, bf16 matmuls with many rows run several times faster than fp32, but a one-row bf16
`F.linear` reads its weight slower than a matrix-vector product (`torch.mv`) of the same weight, which is
what `lmforge.model.linear.Linear` uses for one bf16 row on the CPU: the `bf16 mv` column. As in a
decode step, each timed pass reads a set of copies of the weight bigger than the caches (like a
model's layers), so the figures are memory reads, not cache hits. Then, end to end: SmolLM2 in bf16,
eager greedy decode of 128 tokens after a 16-token prompt (the one-token call's time subtracted), with
`Linear`'s path and with every layer forced through `F.linear`, alternating, tokens asserted equal.
Prints the CPU model and flags, saves benchmarks/results/gemv.json.

    python benchmarks/gemv.py [--threads 2] [--repeats 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

SHAPES = {"qkv": (960, 576), "mlp.fc": (3072, 576), "mlp.proj": (576, 1536), "lm_head": (49152, 576)}
RESULTS = Path(__file__).parent / "results" / "gemv.json"


STREAM_BYTES = 128 * 2**20  # weight copies per timed pass: more than the caches hold


def seconds(step, ws: list[torch.Tensor], repeats: int) -> float:
    """Seconds per matrix of `step(w)` over every copy in `ws`."""
    with torch.inference_mode():
        for w in ws:
            step(w)
        start = time.perf_counter()
        for _ in range(repeats):
            for w in ws:
                step(w)
    return (time.perf_counter() - start) / repeats / len(ws)


def decode(rounds: int) -> list[dict]:
    """SmolLM2 bf16 eager decode tokens/s with `Linear`'s one-row path and with `F.linear` throughout."""
    import lmforge
    from lmforge.model.linear import Linear

    lm = lmforge.load("smollm2", dtype="bfloat16", compile="eager")
    prompt = lm.tokenizer.encode("The history of the city begins in the Middle Ages, when")[:16]
    paths = {"Linear (mv)": Linear.forward, "F.linear": lambda self, x: F.linear(x, self.weight, self.bias)}
    out, tokens = [], {}
    try:
        for r in range(rounds):
            for name, forward in paths.items():
                Linear.forward = forward
                lm.generate(prompt, max_new_tokens=4)
                start = time.perf_counter()
                tokens[name] = lm.generate(prompt, max_new_tokens=129, ignore_eos=True).token_ids
                whole = time.perf_counter() - start
                start = time.perf_counter()
                lm.generate(prompt, max_new_tokens=1)
                first = time.perf_counter() - start
                rate = 128 / (whole - first)
                out.append({"round": r, "path": name, "decode_tok_s": round(rate, 1)})
                print(f"SmolLM2 bf16 eager decode, {name:11s}: {rate:5.1f} tok/s", flush=True)
            assert tokens["Linear (mv)"] == tokens["F.linear"], "the two paths decoded different tokens"
    finally:
        Linear.forward = paths["Linear (mv)"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="end-to-end decode rounds per path")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from lmforge.hardware import describe, machine

    print(f"machine: {describe()}")
    rows = []
    for name, (n, k) in SHAPES.items():
        for m in (1, 128):
            row = {"layer": name, "shape": [n, k], "rows": m}
            for dtype in (torch.float32, torch.bfloat16):
                copies = max(1, STREAM_BYTES // (n * k * dtype.itemsize))
                ws = [torch.randn(n, k, dtype=dtype) for _ in range(copies)]
                x = torch.randn(m, k, dtype=dtype)
                key = str(dtype).removeprefix("torch.")
                paths = {key: lambda w, x=x: F.linear(x, w)}
                if dtype == torch.bfloat16 and m == 1:
                    paths["bfloat16_mv"] = lambda w, v=x[0]: torch.mv(w, v)
                for path, step in paths.items():
                    t = seconds(step, ws, args.repeats)
                    row[f"{path}_ms"] = round(t * 1e3, 3)
                    row[f"{path}_weight_GBps"] = round(n * k * dtype.itemsize / t / 1e9, 1)
            row["bf16_speedup"] = round(row["float32_ms"] / row["bfloat16_ms"], 2)
            mv = f"  bf16 mv {row['bfloat16_mv_ms']:8.3f} ms" if m == 1 else ""
            rows.append(row)
            print(f"{name:9s} rows {m:3d}: fp32 {row['float32_ms']:8.3f} ms  bf16 {row['bfloat16_ms']:8.3f} ms"
                  f"{mv}  bf16 speedup {row['bf16_speedup']:.2f}x")  # fmt: skip
    record = {"machine": machine(), "load_average": os.getloadavg(), "threads": args.threads, "rows": rows}
    record["decode"] = decode(args.rounds)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
