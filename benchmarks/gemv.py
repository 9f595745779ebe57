"""Linear layers with 1, 8 and 128 rows in fp32 and bf16 on SmolLM2's layer shapes: what decode (one row
per step), a served batch and prefill (many rows) cost in each dtype and kernel on this CPU, as weight
bytes read per second.

Two of `lmforge.model.linear.Linear`'s paths are measured here. On CPUs with AMX, bf16 matmuls with many
rows run several times faster than fp32, but a one-row bf16 `F.linear` reads its weight slower than a
matrix-vector product (`torch.mv`): the `bf16 mv` column. In float32, oneDNN's linear (the `fp32 onednn`
column) streams some shapes faster than aten's `F.linear` (MKL); `Linear` runs whichever its per-machine
probe found faster for the shape and row bucket (the `chosen` column). As in a decode step, each timed
pass reads a set of copies of the weight bigger than the caches (like a model's layers), so the figures
are memory reads, not cache hits. Then, end to end: SmolLM2 eager greedy decode of 128 tokens after a
16-token prompt (the one-token call's time subtracted), in float32 and, where the CPU runs bf16
natively, in bf16, with `Linear`'s paths and with every layer forced through `F.linear`, alternating,
tokens compared (asserted equal in bf16). Prints the CPU model and flags, saves benchmarks/results/gemv.json.

    python benchmarks/gemv.py [--threads 2] [--repeats 10] [--rounds 2] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

SHAPES = {
    "qkv": (960, 576),
    "attn.out": (576, 576),
    "mlp.fc": (3072, 576),
    "mlp.proj": (576, 1536),
    "lm_head": (49152, 576),
}
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


def decode(rounds: int, dtype: torch.dtype) -> list[dict]:
    """SmolLM2 eager decode tokens/s in `dtype` with `Linear`'s paths and with `F.linear` throughout."""
    import lmforge
    from lmforge.model.linear import Linear

    lm = lmforge.load("smollm2", dtype=dtype, compile="eager")
    prompt = lm.tokenizer.encode("The history of the city begins in the Middle Ages, when")[:16]
    paths = {"Linear": Linear.forward, "F.linear": lambda self, x: F.linear(x, self.weight, self.bias)}
    name_of_dtype = str(dtype).removeprefix("torch.")
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
                out.append({"dtype": name_of_dtype, "round": r, "path": name, "decode_tok_s": round(rate, 1)})
                print(f"SmolLM2 {name_of_dtype} eager decode, {name:8s}: {rate:5.1f} tok/s", flush=True)
            a, b = tokens["Linear"], tokens["F.linear"]
            agree = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            out[-1]["tokens_agree_with_F.linear"] = agree
            print(f"  the paths' greedy tokens agree for {agree} of {len(a)}")
            # bf16's matrix-vector path is bit-identical; fp32's kernels differ in rounding
            assert dtype != torch.bfloat16 or a == b, "the two bf16 paths decoded different tokens"
    finally:
        Linear.forward = paths["Linear"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="end-to-end decode rounds per path")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from lmforge.hardware import describe, machine, native_support
    from lmforge.model.linear import fp32_kernel

    print(f"machine: {describe()}")
    rows = []
    for name, (n, k) in SHAPES.items():
        for m in (1, 8, 128):
            row = {"layer": name, "shape": [n, k], "rows": m}
            for dtype in (torch.float32, torch.bfloat16):
                copies = max(1, STREAM_BYTES // (n * k * dtype.itemsize))
                ws = [torch.randn(n, k, dtype=dtype) for _ in range(copies)]
                x = torch.randn(m, k, dtype=dtype)
                key = str(dtype).removeprefix("torch.")
                paths = {key: lambda w, x=x: F.linear(x, w)}
                if dtype == torch.bfloat16 and m == 1:
                    paths["bfloat16_mv"] = lambda w, v=x[0]: torch.mv(w, v)
                if dtype == torch.float32:
                    paths["float32_onednn"] = lambda w, x=x: torch.ops.mkldnn._linear_pointwise(
                        x, w, None, "none", [], ""
                    )
                for path, step in paths.items():
                    t = seconds(step, ws, args.repeats)
                    row[f"{path}_ms"] = round(t * 1e3, 3)
                    row[f"{path}_weight_GBps"] = round(n * k * dtype.itemsize / t / 1e9, 1)
            row["float32_chosen"] = fp32_kernel(n, k, m)
            row["bf16_speedup"] = round(row["float32_ms"] / row["bfloat16_ms"], 2)
            mv = f"  bf16 mv {row['bfloat16_mv_ms']:8.3f} ms" if m == 1 else ""
            rows.append(row)
            print(f"{name:9s} rows {m:3d}: fp32 {row['float32_ms']:8.3f} ms  fp32 onednn "
                  f"{row['float32_onednn_ms']:8.3f} ms (chosen: {row['float32_chosen']:6s})  "
                  f"bf16 {row['bfloat16_ms']:8.3f} ms{mv}  bf16 speedup {row['bf16_speedup']:.2f}x")  # fmt: skip
    record = {"machine": machine(), "load_average": os.getloadavg(), "threads": args.threads, "rows": rows}
    dtypes = [torch.float32] + ([torch.bfloat16] if native_support("bf16") else [])
    record["decode"] = [r for dtype in dtypes for r in decode(args.rounds, dtype)]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
