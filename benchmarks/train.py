"""Training throughput of lmforge's Trainer against nanoGPT's training loop, same model, data and threads.

The model is nanoGPT's Shakespeare size (6 layers, 6 heads, 384 wide, 256 context) with nanoGPT's
choices (pre-norm, LayerNorm without bias, no linear biases, exact GELU, learned positions, tied
embeddings), a 4096-token byte-level BPE trained on Shakespeare and shards from `lmforge prepare`;
batch 8 x 256 tokens. Each side trains on the same batches:

- nanoGPT: its loop (benchmarks/nanogpt.py's copy of its model; AdamW with decay on matrices, clipping
  at 1.0, `set_to_none`), fp32 as nanoGPT runs on a CPU (its autocast is for CUDA only), eager and with
  `torch.compile` (its default `compile=True`);
- lmforge: `Trainer` with its defaults (precision auto: bf16 autocast where the CPU has AMX / AVX-512
  BF16 and the probe finds it faster), then `--precision fp32` (nanoGPT's precision), then compiled.

Tokens/s are steady state (warm-up steps not counted); MFU = model FLOPs per token x tokens/s over the
measured matmul peak of the dtype the side computes in (cached per machine by lmforge.hardware).

    python benchmarks/train.py                      # 30 timed steps a side
    python benchmarks/train.py --steps 6 --no-compile

Prints a Markdown table and writes benchmarks/results/train.json with the CPU model, its flags and the
load average (compare only figures from one run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from lmforge import hardware  # noqa: E402
from lmforge.config import ModelConfig  # noqa: E402
from lmforge.data.loaders import CLMBatchSampler  # noqa: E402
from lmforge.data.pipeline import PrepareOptions, prepare  # noqa: E402
from lmforge.model import Transformer  # noqa: E402
from lmforge.tokenizer import Tokenizer  # noqa: E402
from lmforge.tokenizer.train import train_tokenizer  # noqa: E402
from lmforge.train.batches import ShardBatches  # noqa: E402
from lmforge.train.logging import read_log  # noqa: E402
from lmforge.train.trainer import TrainConfig, Trainer, flops_per_token  # noqa: E402
from nanogpt import NanoGPT  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SHAPE = {"n_layer": 6, "n_head": 6, "d_model": 384}
NANOGPT_CHOICES = {  # nanoGPT's GPT (bias=False) in lmforge's ModelConfig fields
    "mlp": "gelu",
    "qkv_bias": False,
    "attn_out_bias": False,
    "mlp_bias": False,
    "norm_bias": False,
    "position": "learned",
    "tie_embeddings": True,
}


def data(work: Path, vocab_size: int) -> tuple[Tokenizer, Path]:
    tok_dir, data_dir = work / f"tokenizer-{vocab_size}", work / f"data-{vocab_size}"
    if (tok_dir / "tokenizer.json").is_file():
        tok = Tokenizer.from_dir(tok_dir)
    else:
        tok = train_tokenizer(["shakespeare"], "bpe", vocab_size, show_progress=False, output=tok_dir)
    if not (data_dir / "manifest.json").is_file():
        prepare(["shakespeare"], tok, data_dir, PrepareOptions(seed=0), tokenizer_source=str(tok_dir))
    return tok, data_dir


def nanogpt_side(batches: ShardBatches, vocab: int, args: argparse.Namespace, compiled: bool) -> dict:
    """nanoGPT's training step on the shared batches; steady-state seconds per step."""
    torch.manual_seed(0)
    model = NanoGPT(vocab, args.seq_len, SHAPE["n_layer"], SHAPE["n_head"], SHAPE["d_model"])
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.99))
    forward = torch.compile(model) if compiled else model
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        b = batches.batch(step)
        logits = forward(b["input_ids"])
        loss = F.cross_entropy(logits.reshape(-1, vocab), b["labels"].reshape(-1), ignore_index=-1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # nanoGPT reads the loss every step for its log
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    # its Linear weights (tied head included) + attention, as flops_per_token counts an lmforge model
    fpt = flops_per_token(model, args.seq_len) + 12 * SHAPE["n_layer"] * SHAPE["d_model"] * args.seq_len
    return {"precision": "fp32", "seconds_per_step": sorted(times)[len(times) // 2], "flops_per_token": fpt}


def lmforge_side(batches: ShardBatches, vocab: int, args: argparse.Namespace, **train: object) -> dict:
    """lmforge's Trainer (log every step, its monitors on) on the shared batches."""
    torch.manual_seed(0)
    config = ModelConfig.preset(
        "gpt-nano", vocab_size=vocab, max_seq_len=args.seq_len, **SHAPE, **NANOGPT_CHOICES
    )
    model = Transformer(config)
    model.init_weights(0)
    run = args.work / "throughput"
    shutil.rmtree(run, ignore_errors=True)
    cfg = TrainConfig(
        steps=args.warmup + args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        lr=args.lr,
        warmup_steps=0,
        eval_every=0,
        progress=False,
        tensorboard=False,
        device="cpu",
        **train,
    )
    trainer = Trainer(model, cfg, batches, run)
    trainer.fit()
    records = [r for r in read_log(run / "log.jsonl") if r["kind"] == "train"][args.warmup :]
    times = sorted(args.batch_size * args.seq_len / r["tokens_per_s"] for r in records)
    return {
        "precision": trainer.precision,
        "seconds_per_step": times[len(times) // 2],
        "flops_per_token": flops_per_token(model, args.seq_len),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=4, help="untimed first steps per side")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled sides")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-train"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=RESULTS / "train.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(hardware.describe(), flush=True)
    tok, data_dir = data(args.work, args.vocab_size)
    sampler = CLMBatchSampler(data_dir, "train", args.batch_size, args.seq_len, mode="random", seed=0)
    batches = ShardBatches(sampler)
    load_start = os.getloadavg()
    sides = {
        "nanogpt": lambda: nanogpt_side(batches, tok.vocab_size, args, compiled=False),
        "lmforge": lambda: lmforge_side(batches, tok.vocab_size, args),
        "lmforge_fp32": lambda: lmforge_side(batches, tok.vocab_size, args, precision="fp32"),
    }
    if not args.no_compile:
        sides["nanogpt_compiled"] = lambda: nanogpt_side(batches, tok.vocab_size, args, compiled=True)
        sides["lmforge_compiled"] = lambda: lmforge_side(batches, tok.vocab_size, args, compile=True)
    results = {}
    for name, run in sides.items():
        r = run()
        r["tokens_per_s"] = args.batch_size * args.seq_len / r["seconds_per_step"]
        r["peak_flops"] = hardware.matmul_flops(r["precision"])
        r["mfu"] = r["tokens_per_s"] * r["flops_per_token"] / r["peak_flops"]
        results[name] = r
        print(
            f"  {name}: {r['tokens_per_s']:,.0f} tokens/s ({r['precision']}), MFU {r['mfu']:.1%}", flush=True
        )
    best_nanogpt = max(v["tokens_per_s"] for k, v in results.items() if k.startswith("nanogpt"))
    record = {
        "machine": hardware.machine(),
        "model": "nanoGPT's Shakespeare GPT: 6 layers, 6 heads, 384 wide, 256 context, bias=False, tied",
        "parameters": sum(p.numel() for p in NanoGPT(tok.vocab_size, args.seq_len, 6, 6, 384).parameters()),
        "vocab_size": tok.vocab_size,
        "batch": f"{args.batch_size} x {args.seq_len} tokens",
        "timed_steps": args.steps,
        "load_average": [load_start, os.getloadavg()],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sides": results,
        "lmforge_default_over_best_nanogpt": results["lmforge"]["tokens_per_s"] / best_nanogpt,
        "lmforge_fp32_over_nanogpt_eager": results["lmforge_fp32"]["tokens_per_s"]
        / results["nanogpt"]["tokens_per_s"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print("\n| side | precision | tokens/s | MFU (of that dtype's peak) |\n|---|---|---|---|")
    for name, r in results.items():
        peak = f"{r['peak_flops'] / 1e9:,.0f} GFLOP/s"
        print(f"| {name} | {r['precision']} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} of {peak} |")
    print(
        f"\nlmforge default / best nanoGPT: {record['lmforge_default_over_best_nanogpt']:.2f}x; "
        f"lmforge fp32 / nanoGPT eager: {record['lmforge_fp32_over_nanogpt_eager']:.2f}x\nwrote {args.out}"
    )


if __name__ == "__main__":
    main()
