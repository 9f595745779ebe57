"""Training throughput and quality for nanoGPT's Shakespeare-size GPT on the CPU, fp32.

Model: 6 layers, 6 heads, 384 wide, 256 context (preset gpt-nano), a 4096-token byte-level BPE
trained on the Shakespeare corpus, shards from `lmforge prepare`. Measures
- tokens/s and MFU (model FLOPs per token x tokens/s over a measured fp32 matmul peak), steady state;
- peak resident memory of the process while training;
- validation bits-per-byte reached after a fixed number of training minutes.

    python benchmarks/train.py                    # 5-minute quality run
    python benchmarks/train.py --minutes 2 --throughput-steps 6

Prints a Markdown table and writes benchmarks/results/train.json. The tokenizer and shards are cached
in --work between runs. CPU figures depend on what else the machine runs: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import time
from pathlib import Path

import torch

from lmforge.config import ModelConfig
from lmforge.data.loaders import CLMBatchSampler
from lmforge.data.pipeline import PrepareOptions, prepare
from lmforge.model import Transformer
from lmforge.tokenizer import Tokenizer
from lmforge.tokenizer.train import train_tokenizer
from lmforge.train.batches import ShardBatches, ValSet
from lmforge.train.logging import read_log
from lmforge.train.trainer import TrainConfig, Trainer, flops_per_token, measured_peak_flops

RESULTS = Path(__file__).parent / "results"


def data(work: Path, vocab_size: int) -> tuple[Tokenizer, Path]:
    tok_dir, data_dir = work / f"tokenizer-{vocab_size}", work / f"data-{vocab_size}"
    if (tok_dir / "tokenizer.json").is_file():
        tok = Tokenizer.from_dir(tok_dir)
    else:
        tok = train_tokenizer(["shakespeare"], "bpe", vocab_size, show_progress=False, output=tok_dir)
    if not (data_dir / "manifest.json").is_file():
        prepare(["shakespeare"], tok, data_dir, PrepareOptions(seed=0), tokenizer_source=str(tok_dir))
    return tok, data_dir


def val_set(data_dir: Path, tok: Tokenizer, batch_size: int, seq_len: int, batches: int) -> ValSet:
    sampler = CLMBatchSampler(data_dir, "val", batch_size, seq_len, mode="sequential")
    out = ValSet([], [])
    for g in range(min(batches, sampler.batches_per_epoch())):
        x, y = sampler.batch(g)
        out.batches.append({"input_ids": x, "labels": y})
        out.num_bytes.append(sum(len(tok.decode(row.tolist()).encode("utf-8")) for row in y))
    return out


def build(tok: Tokenizer, seed: int) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(ModelConfig.preset("gpt-nano", vocab_size=tok.vocab_size))
    model.init_weights(seed)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training time for the bits-per-byte run")
    parser.add_argument("--throughput-steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-train"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    tok, data_dir = data(args.work, args.vocab_size)
    prep_s = time.perf_counter() - t0
    sampler_args = {"batch_size": args.batch_size, "seq_len": args.seq_len, "seed": 0}
    train = ShardBatches(CLMBatchSampler(data_dir, "train", mode="random", **sampler_args))
    val = val_set(data_dir, tok, args.batch_size, args.seq_len, 16)
    load_start = os.getloadavg()[0]
    peak = measured_peak_flops(torch.device("cpu"), torch.float32, seconds=1.0)
    quiet = {"progress": False, "tensorboard": False, "device": "cpu", "lr": args.lr, "seq_len": args.seq_len}

    # 1. throughput: steady-state steps (the first two are warm-up and not counted)
    run = args.work / "throughput"
    shutil.rmtree(run, ignore_errors=True)
    model = build(tok, 0)
    cfg = TrainConfig(
        steps=args.throughput_steps, batch_size=args.batch_size, warmup_steps=0, eval_every=0, **quiet
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Trainer(model, cfg, train, run).fit()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    steps = [r for r in read_log(run / "log.jsonl") if r["kind"] == "train"][2:]
    seconds = sum(args.batch_size * args.seq_len / r["tokens_per_s"] for r in steps)
    tokens_per_s = len(steps) * args.batch_size * args.seq_len / seconds
    fpt = flops_per_token(model, args.seq_len)
    mfu = tokens_per_s * fpt / peak

    # 2. quality: train for a fixed time with a schedule sized to it, then validate
    run = args.work / "quality"
    shutil.rmtree(run, ignore_errors=True)
    step_s = args.batch_size * args.seq_len / tokens_per_s
    n_steps = max(10, int(args.minutes * 60 / step_s))
    cfg = TrainConfig(
        steps=n_steps,
        batch_size=args.batch_size,
        warmup_steps=min(100, n_steps // 10),
        eval_every=0,
        eval_batches=16,
        max_minutes=args.minutes,
        **quiet,
    )
    summary = Trainer(build(tok, 0), cfg, train, run, val, tok).fit()

    result = {
        "model": "gpt-nano (6 layers, 6 heads, 384 wide, 256 context)",
        "parameters": build(tok, 0).num_parameters(),
        "vocab_size": tok.vocab_size,
        "batch": f"{args.batch_size} x {args.seq_len} tokens",
        "precision": "fp32",
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_average_1m_start": load_start,
        "load_average_1m_end": os.getloadavg()[0],
        "matmul_peak_gflops": peak / 1e9,
        "flops_per_token": fpt,
        "tokens_per_s": tokens_per_s,
        "mfu": mfu,
        "peak_rss_mb": rss_peak,
        "rss_before_training_mb": rss_before,
        "quality_minutes": args.minutes,
        "quality_steps": summary["steps"],
        "quality_tokens": summary["steps"] * args.batch_size * args.seq_len,
        "val_bits_per_byte": summary["val"].get("bits_per_byte"),
        "val_loss": summary["val"].get("loss"),
        "data_prep_s": prep_s,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train.json").write_text(json.dumps(result, indent=2))
    print("| metric | value |\n|---|---|")
    rows = [
        (
            "model",
            f"{result['model']}, {result['parameters'] / 1e6:.1f}M params, vocab {result['vocab_size']}",
        ),
        ("batch", result["batch"]),
        (
            "threads / load average",
            f"{result['threads']} / {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end",
        ),
        ("measured fp32 matmul peak", f"{peak / 1e9:.1f} GFLOP/s"),
        ("training throughput", f"{tokens_per_s:,.0f} tokens/s"),
        ("MFU", f"{100 * mfu:.1f}%"),
        ("peak RSS", f"{rss_peak:,.0f} MB (before training: {rss_before:,.0f} MB)"),
        (
            f"val bits/byte after {args.minutes:g} min",
            f"{result['val_bits_per_byte']:.3f} ({summary['steps']} steps)",
        ),
    ]
    for k, v in rows:
        print(f"| {k} | {v} |")
    print(f"\nwrote {RESULTS / 'train.json'}")


if __name__ == "__main__":
    main()
