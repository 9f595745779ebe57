"""Cost of the logits-processor pipeline and of constraint masks per decoding step, at SmolLM2's
vocabulary (V = 49152), on CPU, on SmolLM2's real next-token logits (random histories of 512 tokens). Prints a table and saves benchmarks/results/processors.json.

    PYTHONPATH=src .venv/bin/python benchmarks/processors.py [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from lmforge.generate.config import GenerationConfig
from lmforge.generate.processors import build_pipeline, pick_tokens, seeded_generator

V, HISTORY = 49152, 512

PIPELINES = {
    "greedy (empty pipeline)": {},
    "penalties (rep 1.1, freq 0.3, pres 0.2, 3-gram)": dict(
        repetition_penalty=1.1, frequency_penalty=0.3, presence_penalty=0.2, no_repeat_ngram_size=3
    ),
    "sampling (T 0.7, top-k 50, top-p 0.9)": dict(do_sample=True, temperature=0.7, top_k=50, top_p=0.9),
    "sampling + min-p + typical-p": dict(do_sample=True, temperature=0.7, min_p=0.05, typical_p=0.9),
    "everything": dict(
        do_sample=True, temperature=0.7, top_k=50, top_p=0.9, min_p=0.05, repetition_penalty=1.1,
        frequency_penalty=0.3, presence_penalty=0.2, no_repeat_ngram_size=3, logit_bias={5: -100.0},
        bad_words_ids=[[10, 11], [12]], min_new_tokens=4,
    ),
}  # fmt: skip


def timed(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e3


PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colors are",
    "To be, or not to be, that is",
    "The best way to learn a language is",
    "In 1969, the first humans",
    "My favourite recipe for pancakes:",
]


def real_logits(batch: int) -> torch.Tensor:
    """Next-token logits of SmolLM2 after real prompts (peaked like every LM's, unlike random normals)."""
    import lmforge

    lm = lmforge.load("smollm2")
    rows = []
    with torch.inference_mode():
        for i in range(batch):
            ids = torch.tensor([lm.tokenizer.encode(PROMPTS[i % len(PROMPTS)])])
            rows.append(lm.model(ids)[0, -1].float())
    return torch.stack(rows)


def bench_pipelines(batch_sizes: list[int]) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    logits = real_logits(max(batch_sizes))
    for B in batch_sizes:
        ids = torch.randint(0, V, (B, HISTORY), generator=g)
        scores = logits[:B].clone()
        for name, opts in PIPELINES.items():
            config = GenerationConfig(**opts)
            pipeline = build_pipeline(config, V, eos_token_id=2, prompt_length=HISTORY // 2)
            gen = seeded_generator(0)
            ms = timed(
                lambda p=pipeline, c=config, i=ids, s=scores, g=gen: pick_tokens(p(i, s), c.do_sample, g), 20
            )
            rows.append({"what": name, "batch": B, "ms_per_step": round(ms, 3)})
    return rows


def bench_constraints(batch_sizes: list[int]) -> list[dict]:
    from lmforge.assets import asset_path
    from lmforge.generate.constraints import compile_constraint, token_table
    from lmforge.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(asset_path("smollm2"))
    start = time.perf_counter()
    table = token_table(tok)
    table_ms = (time.perf_counter() - start) * 1e3
    rows = [
        {"what": "token table from the tokenizer (once per tokenizer)", "batch": 0, "ms": round(table_ms, 1)}
    ]
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            "ok": {"type": "boolean"},
        },
        "required": ["name", "age"],
    }
    specs = {
        "choices (3)": dict(choices=["yes", "no", "maybe"]),
        "regex date": dict(regex=r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
        "json schema (4 fields)": dict(json_schema=schema),
    }
    g = torch.Generator().manual_seed(0)
    for name, spec in specs.items():
        start = time.perf_counter()
        automaton = compile_constraint(table, [2], **spec)
        rows.append(
            {"what": f"compile {name}", "batch": 0, "ms": round((time.perf_counter() - start) * 1e3, 1)}
        )
        for B in batch_sizes:
            # walk a few steps of random sampling so the states are realistic, then time mask + advance
            c = automaton.new(B)
            scores = torch.randn(B, V, generator=g)
            for _ in range(6):
                c.advance(pick_tokens(c.mask(scores), True, g))
            ms = timed(lambda c=c, s=scores: c.mask(s), 50)
            rows.append({"what": f"mask {name} (cached states)", "batch": B, "ms_per_step": round(ms, 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 16])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = bench_pipelines(args.batch) + bench_constraints(args.batch)
    print(f"{'what':58s} {'batch':>5s} {'ms':>9s}")
    for r in rows:
        value = r.get("ms_per_step", r.get("ms"))
        print(f"{r['what']:58s} {r['batch'] or '':>5} {value:9.3f}")
    out = Path(__file__).parent / "results" / "processors.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from lmforge.io.atomic import atomic_write_text

    meta = {
        "vocab_size": V,
        "history_tokens": HISTORY,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "load_average": os.getloadavg()[0],
        "torch": torch.__version__,
    }
    atomic_write_text(out, json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
