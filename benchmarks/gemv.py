"""One-row and 128-row `F.linear` in fp32 and bf16 on SmolLM2's layer shapes: what decode (one row per
step) and prefill (many rows) cost in each dtype on this CPU, as weight bytes read per second.

On CPUs with AMX, bf16 matmuls with many rows run several times faster than fp32, but a one-row bf16
`F.linear` can be slower than fp32 (the weight is not prepacked for the bf16 kernel): which dtype is fast
depends on the row count, not only on the CPU flags. Prints the CPU model and flags, saves
benchmarks/results/gemv.json.

    python benchmarks/gemv.py [--threads 2] [--repeats 50]
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


def seconds(x: torch.Tensor, w: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(5):
            F.linear(x, w)
        start = time.perf_counter()
        for _ in range(repeats):
            F.linear(x, w)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
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
                w, x = torch.randn(n, k, dtype=dtype), torch.randn(m, k, dtype=dtype)
                t = seconds(x, w, args.repeats if n < 10_000 else max(5, args.repeats // 5))
                key = str(dtype).removeprefix("torch.")
                row[f"{key}_ms"] = round(t * 1e3, 3)
                row[f"{key}_weight_GBps"] = round(n * k * w.element_size() / t / 1e9, 1)
            row["bf16_speedup"] = round(row["float32_ms"] / row["bfloat16_ms"], 2)
            rows.append(row)
            print(f"{name:9s} rows {m:3d}: fp32 {row['float32_ms']:8.3f} ms  bf16 {row['bfloat16_ms']:8.3f} ms"
                  f"  bf16 speedup {row['bf16_speedup']:.2f}x")  # fmt: skip
    record = {"machine": machine(), "load_average": os.getloadavg(), "threads": args.threads, "rows": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
