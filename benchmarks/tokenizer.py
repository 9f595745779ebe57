"""Tokenizer training time and encode throughput, lmforge vs tiktoken vs raw `tokenizers`.

Training: byte-level BPE and WordPiece with 8k and 32k vocabularies on the Shakespeare corpus, one run
each (`--unigram` adds Unigram at 8k and 32k, minutes on 2 cores). Throughput: the same GPT-2 vocabulary
three ways (lmforge's Tokenizer built from the tiktoken rank file; tiktoken's own gpt2 encoding, built by
its `tiktoken_ext.openai_public.gpt2` with the same local ranks; the raw `tokenizers.Tokenizer` under
lmforge's wrapper), on one long text (single call) and on the same text cut into ~4 KB documents (batch
call), in MB of UTF-8 per second; ids are checked equal. SmolLM2's tokenizer (lmforge) is measured too.
The contenders are interleaved (each repeat times every contender once, in turn), so a change in machine
load hits all of them; figures are medians over `--repeats`. Prints a table and saves
benchmarks/results/tokenizer.json with the CPU model, its SIMD flags and the load average.

    python benchmarks/tokenizer.py [--repeats 5] [--megabytes 2] [--unigram]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from load import machine_info  # benchmarks/load.py: CPU model and flags, load average

RESULTS = Path(__file__).parent / "results" / "tokenizer.json"


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def tiktoken_gpt2(ranks_path: Path):
    """tiktoken's own gpt2 encoding (pattern, special tokens, vocabulary size from its
    `tiktoken_ext.openai_public.gpt2`), with the ranks it would download read from the local file."""
    import tiktoken
    import tiktoken.load
    from tiktoken_ext import openai_public

    ranks = tiktoken.load.load_tiktoken_bpe(str(ranks_path))
    download = openai_public.data_gym_to_mergeable_bpe_ranks
    openai_public.data_gym_to_mergeable_bpe_ranks = lambda **_: ranks
    try:
        spec = openai_public.gpt2()
    finally:
        openai_public.data_gym_to_mergeable_bpe_ranks = download
    return tiktoken.Encoding(**spec)


def bench_training(unigram: bool) -> list[dict]:
    from lmforge.tokenizer.train import train_tokenizer

    runs = [("bpe", 8000), ("bpe", 32000), ("wordpiece", 8000), ("wordpiece", 32000)]
    if unigram:
        runs += [("unigram", 8000), ("unigram", 32000)]
    rows = []
    for algorithm, vocab in runs:
        start = time.perf_counter()
        tok = train_tokenizer(["shakespeare"], algorithm=algorithm, vocab_size=vocab, show_progress=False)
        seconds = time.perf_counter() - start
        rows.append(
            {"algorithm": algorithm, "vocab_size": vocab, "actual_vocab": tok.vocab_size, "seconds": seconds}
        )
        print(
            f"  trained {algorithm:<9} {vocab:>6,}: {seconds:6.1f} s (vocab {tok.vocab_size:,})", flush=True
        )
    return rows


def bench_encode(repeats: int, megabytes: float) -> list[dict]:
    from lmforge.assets import asset_path, shakespeare_files
    from lmforge.tokenizer import Tokenizer

    text = "".join(p.read_text(encoding="utf-8") for p in shakespeare_files())
    limit = int(megabytes * 1e6)
    text = text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
    # the batch: the same text cut at line ends into ~4 KB documents
    lines, doc = [], ""
    for line in text.splitlines(keepends=True):
        doc += line
        if len(doc) >= 4096:
            lines.append(doc)
            doc = ""
    lines += [doc] if doc else []
    mb = len(text.encode("utf-8")) / 1e6

    ranks_path = asset_path("gpt2.tiktoken")
    ours = Tokenizer.from_tiktoken(ranks_path)
    oracle = tiktoken_gpt2(ranks_path)
    raw = ours.backend
    smollm = Tokenizer.from_gguf(asset_path("smollm2"))
    contenders = {
        "lmforge (gpt2 ranks)": (ours.encode, ours.encode_batch),
        "tiktoken (gpt2)": (oracle.encode_ordinary, oracle.encode_ordinary_batch),
        "tokenizers raw (gpt2)": (
            lambda t: raw.encode(t, add_special_tokens=False).ids,
            lambda ts: [e.ids for e in raw.encode_batch(ts, add_special_tokens=False)],
        ),
        "lmforge (smollm2)": (smollm.encode, smollm.encode_batch),
    }
    times = {name: {"single": [], "batch": []} for name in contenders}
    outputs = {}
    for _ in range(repeats):
        for kind, arg in (("single", text), ("batch", lines)):
            for name, fns in contenders.items():  # interleaved: every contender once per repeat
                seconds, ids = timed(lambda f=fns[kind == "batch"], x=arg: f(x))
                times[name][kind].append(seconds)
                outputs[name, kind] = ids
    reference = None
    rows = []
    for name in contenders:
        ids, batch_ids = outputs[name, "single"], outputs[name, "batch"]
        if "gpt2" in name:
            flat = [i for row in batch_ids for i in row]
            reference = reference or (ids, flat)
            assert ids == reference[0] and flat == reference[1], f"{name} gives different ids"
        t_single, t_batch = (statistics.median(times[name][k]) for k in ("single", "batch"))
        rows.append(
            {
                "tokenizer": name,
                "tokens": len(ids),
                "single_MBps": mb / t_single,
                "batch_MBps": mb / t_batch,
                "single_s": t_single,
                "batch_s": t_batch,
                "single_runs_s": times[name]["single"],
                "batch_runs_s": times[name]["batch"],
            }
        )
        print(
            f"  encoded with {name}: single {mb / t_single:.2f} MB/s, batch {mb / t_batch:.2f} MB/s",
            flush=True,
        )
    return [{"megabytes": mb, "documents": len(lines), **r} for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--megabytes", type=float, default=2.0, help="size of the throughput text")
    parser.add_argument("--unigram", action="store_true", help="also train Unigram 8k and 32k (slow)")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    before = machine_info()["load_average"]
    print("training on the Shakespeare corpus ...")
    training = bench_training(args.unigram)
    print("encoding ...")
    encoding = bench_encode(args.repeats, args.megabytes)

    print("\n| algorithm | vocab | train time (s) |\n|---|---:|---:|")
    for r in training:
        print(f"| {r['algorithm']} | {r['vocab_size']:,} | {r['seconds']:.1f} |")
    mb = encoding[0]["megabytes"]
    print(
        f"\n| tokenizer ({mb:.1f} MB of Shakespeare) | tokens | single text MB/s | batch of 4 KB docs MB/s |"
    )
    print("|---|---:|---:|---:|")
    for r in encoding:
        print(f"| {r['tokenizer']} | {r['tokens']:,} | {r['single_MBps']:.2f} | {r['batch_MBps']:.2f} |")
    result = {
        "machine": {**machine_info(), "load_average_before": before},
        "statistic": "median of interleaved repeats (encoding); one run each (training)",
        "command": "python benchmarks/tokenizer.py "
        + " ".join(f"--{k}={v}" for k, v in vars(args).items() if v is not False),
        "training": training,
        "encoding": encoding,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    from lmforge.io.atomic import atomic_write_text

    atomic_write_text(RESULTS, json.dumps(result, indent=2))
    print(f"\nsaved {RESULTS}")


if __name__ == "__main__":
    main()
