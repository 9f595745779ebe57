"""nanoGPT's CPU recipe against `lmforge quickstart` at equal training time, on the same split.

The split: the 42 `*_gut.txt` Shakespeare texts sorted by name, joined with blank lines (5,057,280
bytes); train = the first 90%, validation = the last 10% (cut at a character, as nanoGPT's
`prepare.py` does). Both sides are scored the same way: bits/byte over the whole validation text, every
byte once (consecutive windows of the model's context; the first character predicted from a newline).

nanoGPT's side is its README recipe for a CPU, reimplemented here in a few lines (its model: pre-norm
GPT, no biases, tied embeddings, GELU MLP, scaled init of the residual projections; its loop: AdamW
with decay on matrices only, betas (0.9, 0.99), warmup 100 then cosine to 1e-4, clipping at 1.0,
an estimate of train/val loss every 250 iterations over 20 batches), character level:
4 layers x 128 wide, 4 heads, block 64, batch 12, 2,000 iterations, lr 1e-3, dropout 0, fp32.

lmforge's side is `lmforge.quickstart(text=[train], val_text=val, minutes=<nanoGPT's training time>)`
with its defaults otherwise (precision auto: bf16 autocast where the CPU has AMX / AVX-512 BF16).
Tokenizer training and tokenizing are outside both budgets (nanoGPT's `prepare.py` is too).

    python benchmarks/nanogpt.py                  # the full comparison
    python benchmarks/nanogpt.py --iters 200      # a quick check of the script
    python benchmarks/nanogpt.py --default        # also the default quickstart (its own time budget)
    taskset -c 0 python benchmarks/nanogpt.py --default --threads 1   # one core, both sides

Both sides run in this one process, one after the other, with the same threads; the load average is
recorded before and after each (the machine is shared: compare only figures from one run).
Writes benchmarks/results/nanogpt.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import lmforge
from lmforge import hardware
from lmforge.train.batches import IGNORE, whole_text_val_set
from lmforge.train.sources import shakespeare_text

RESULTS = Path(__file__).parent / "results"


# -- nanoGPT's model, written for this comparison ------------------------------------------------


class Block(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(d, bias=False)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_proj = nn.Linear(d, d, bias=False)
        self.ln_2 = nn.LayerNorm(d, bias=False)
        self.fc = nn.Linear(d, 4 * d, bias=False)
        self.mlp_proj = nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(C, dim=2)
        q, k, v = (
            t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v)
        )  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp_proj(F.gelu(self.fc(self.ln_2(x))))


class NanoGPT(nn.Module):
    def __init__(self, vocab: int, block: int, n_layer: int, n_head: int, d: int):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(block, d)
        self.blocks = nn.ModuleList(Block(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d, bias=False)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight  # tied
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def train_nanogpt(train: np.ndarray, vocab: int, args: argparse.Namespace) -> tuple[NanoGPT, float]:
    """nanoGPT's loop with its shakespeare_char settings for the CPU; returns the model and its time."""
    torch.manual_seed(1337)
    model = NanoGPT(vocab, args.block, 4, 4, 128)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3,
        betas=(0.9, 0.99),
    )
    data = torch.from_numpy(train.astype(np.int64))
    g = torch.Generator().manual_seed(1337)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        ix = torch.randint(len(data) - args.block, (12,), generator=g)
        x = torch.stack([data[i : i + args.block] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + args.block] for i in ix])
        return x, y

    def lr_at(it: int) -> float:
        if it < 100:
            return 1e-3 * (it + 1) / 101
        ratio = min(1.0, (it - 100) / (args.iters - 100))
        return 1e-4 + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (1e-3 - 1e-4)

    start = time.perf_counter()
    for it in range(args.iters + 1):
        if it % 250 == 0:  # its periodic estimate (20 batches of train; val would be the same cost)
            model.eval()
            with torch.no_grad():
                for _ in range(2 * 20):
                    x, y = batch()
                    F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
            model.train()
        if it == args.iters:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(it)
        x, y = batch()
        loss = F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if it % 200 == 0:
            print(
                f"  nanoGPT iter {it}: loss {loss.item():.4f} ({time.perf_counter() - start:.0f}s)",
                flush=True,
            )
    return model, time.perf_counter() - start


def bits_per_byte(model: nn.Module, ids: np.ndarray, context_id: int, block: int, val_bytes: int) -> float:
    token_bytes = np.ones(int(ids.max()) + 2, dtype=np.int64)  # characters: ASCII text, one byte each
    val = whole_text_val_set(ids, 64, block, token_bytes, context_id)
    assert sum(val.num_bytes) == val_bytes
    nats = 0.0
    model.eval()
    with torch.no_grad():
        for b in val.batches:
            logits = model(b["input_ids"])
            nats += float(
                F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]),
                    b["labels"].reshape(-1),
                    ignore_index=IGNORE,
                    reduction="sum",
                )
            )
    return nats / math.log(2) / val_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--work", default="runs/bench-nanogpt")
    parser.add_argument("--default", action="store_true", help="also run the default quickstart")
    parser.add_argument("--out", default=str(RESULTS / "nanogpt.json"))
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads for both sides (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    text = shakespeare_text()
    cut = int(len(text) * 0.9)
    train_text, val_text = text[:cut], text[cut:]
    (work / "train.txt").write_text(train_text, encoding="utf-8")
    (work / "val.txt").write_text(val_text, encoding="utf-8")
    val_bytes = len(val_text.encode("utf-8"))
    print(f"{hardware.describe()}\nsplit: {len(train_text):,} train / {val_bytes:,} validation bytes")

    chars = sorted(set(text))  # nanoGPT's prepare.py: the vocabulary of the whole text
    stoi = {c: i for i, c in enumerate(chars)}
    train_ids = np.array([stoi[c] for c in train_text], dtype=np.uint16)
    val_ids = np.array([stoi[c] for c in val_text], dtype=np.uint16)

    record: dict = {
        "machine": hardware.machine(),
        "split_bytes": {"train": len(train_text), "val": val_bytes},
    }
    load_before = os.getloadavg()
    model, seconds = train_nanogpt(train_ids, len(chars), args)
    bpb = bits_per_byte(model, val_ids, stoi["\n"], args.block, val_bytes)
    record["nanogpt"] = {
        "recipe": f"char-level, 4 layers x 128, 4 heads, block {args.block}, batch 12, {args.iters} iters, fp32",
        "train_s": seconds,
        "bits_per_byte": bpb,
        "load_average": [load_before, os.getloadavg()],
    }
    print(f"nanoGPT: {seconds:.0f} s, {bpb:.3f} bits/byte over the whole validation text")

    load_before = os.getloadavg()
    result = lmforge.quickstart(
        text=[str(work / "train.txt")],
        val_text=work / "val.txt",
        minutes=seconds / 60,
        out=work / "quickstart",
        samples=0,
    )
    record["quickstart_equal_time"] = {
        "command": f"lmforge quickstart --text train.txt --val-text val.txt --minutes {seconds / 60:.3f}",
        "train_s": result.elapsed_s,
        "steps": result.steps,
        "precision": result.precision,
        "bits_per_byte": result.val["bits_per_byte"],
        "ratio_to_nanogpt": result.val["bits_per_byte"] / bpb,
        "load_average": [load_before, os.getloadavg()],
    }
    print(
        f"quickstart ({result.precision}, {result.elapsed_s:.0f} s): {result.val['bits_per_byte']:.3f} bits/byte "
        f"= {result.val['bits_per_byte'] / bpb:.2f}x nanoGPT's"
    )
    if args.default:
        load_before = os.getloadavg()
        default = lmforge.quickstart(
            text=[str(work / "train.txt")], val_text=work / "val.txt", out=work / "quickstart", samples=0
        )
        record["quickstart_default"] = {
            "command": "lmforge quickstart --text train.txt --val-text val.txt",
            "total_s": default.total_s,
            "train_s": default.elapsed_s,
            "precision": default.precision,
            "bits_per_byte": default.val["bits_per_byte"],
            "load_average": [load_before, os.getloadavg()],
        }
        print(
            f"default quickstart ({default.total_s / 60:.1f} min): {default.val['bits_per_byte']:.3f} bits/byte"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
