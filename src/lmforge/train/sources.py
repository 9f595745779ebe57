"""Where a run's batches come from: prepared shards (causal or masked LM), chat JSONL (instruction
tuning, loss on assistant tokens only) or text (continued pretraining).

Each builder returns `Batches`: the training source (batch k a pure function of (seed, k), see
batches.py), the fixed validation set (None when the data holds too little for one batch) and a line
saying what was read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmforge.data.loaders import CLMBatchSampler, MLMCollator, pack_documents
from lmforge.errors import LMForgeError
from lmforge.train import sft
from lmforge.train.batches import (
    BatchSource,
    CLMBatches,
    SFTBatches,
    ShardBatches,
    ValSet,
    clm_val_set,
    mlm_val_set,
    sft_val_set,
    shard_val_set,
)
from lmforge.train.trainer import TrainConfig


@dataclass
class Batches:
    train: BatchSource
    val: ValSet | None
    description: str


def shard_batches(
    data: str | Path, tokenizer: Any, config: TrainConfig, collator: MLMCollator | None = None
) -> Batches:
    """Random windows of the train split; validation on the first windows of the val split. With an
    MLM `collator` the windows are masked (validation with its own fixed masking seed)."""
    # a masked row is a whole window (inputs + the last target) of seq_len tokens
    window = config.seq_len - 1 if collator is not None else config.seq_len
    args = {"batch_size": config.batch_size, "seq_len": window, "seed": config.seed}
    sampler = CLMBatchSampler(data, split="train", mode="random", fingerprint=tokenizer.fingerprint, **args)
    description = f"{sampler.tokens:,} train tokens of {data}"
    try:
        if collator is None:
            val = shard_val_set(data, config.batch_size, window, config.eval_batches, tokenizer)
        else:
            masked = CLMBatchSampler(data, split="val", mode="sequential", **args)
            source = ShardBatches(masked, collator, config.seed + 1)
            val = mlm_val_set(source, min(config.eval_batches, masked.batches_per_epoch()))
    except LMForgeError as exc:
        val, description = None, f"{description} (no validation: {exc})"
    return Batches(ShardBatches(sampler, collator, config.seed), val, description)


def chat_batches(path: str | Path, tokenizer: Any, config: TrainConfig, val_fraction: float) -> Batches:
    """Conversations cut to seq_len + 1 tokens; the first `val_fraction` held out for validation
    (none held out: validation on the training conversations)."""
    examples = sft.build_examples(tokenizer, sft.read_chat_jsonl(path), config.seq_len + 1)
    n_val = int(len(examples) * val_fraction)
    train, held_out = examples[n_val:] or examples, examples[:n_val]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return Batches(
        SFTBatches(train, config.batch_size, pad, config.seed),
        sft_val_set(held_out or train, config.batch_size, pad),
        f"{len(train)} conversations",
    )


def text_batches(inputs: list[str], tokenizer: Any, config: TrainConfig, val_fraction: float) -> Batches:
    """The documents packed into one token stream; its last `val_fraction` held out for validation."""
    from lmforge.data.corpus import read_corpus

    ids = torch.tensor(pack_documents(tokenizer, (d.text for d in read_corpus(inputs))), dtype=torch.long)
    n_val = int(len(ids) * val_fraction)
    train = ids[: len(ids) - n_val]
    val = None
    if n_val > config.seq_len:
        held_out = ids[len(ids) - n_val :]
        val = clm_val_set(held_out, config.batch_size, config.seq_len, config.eval_batches, tokenizer)
    return Batches(
        CLMBatches(train, config.batch_size, config.seq_len, config.seed),
        val,
        f"{len(train):,} tokens of text",
    )
