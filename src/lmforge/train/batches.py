"""Batch sources the Trainer draws from, addressed by a global micro-batch index.

Every batch is a pure function of (seed, index): micro-batch `k` of the run is the same whichever
process draws it and whenever. That makes exact resume need only the step number, and makes N DDP
ranks with accumulation A see exactly the batches one process sees with accumulation N·A
(rank r, micro-step m of step s draws index (s·A + m)·N + r).

A batch is a dict: `input_ids` (B, T) long and `labels` (B, T) long, already aligned with the logits
(`labels[:, t]` is the target for position t; -100 = no loss). Validation sets are fixed lists of
batches, each with the number of UTF-8 bytes its targets decode to (for bits-per-byte).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from lmforge.errors import LMForgeError

IGNORE = -100


class BatchSource(Protocol):
    def batch(self, index: int) -> dict[str, torch.Tensor]: ...


class TokenStream:
    """Several 1-D token arrays (memmapped shards) read as one virtual concatenation."""

    def __init__(self, arrays: Sequence[np.ndarray]):
        self.arrays = [a for a in arrays if len(a)]
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) as int64, across shard boundaries."""
        out = np.empty(length, dtype=np.int64)
        filled = 0
        shard = int(np.searchsorted(self.offsets, start, side="right")) - 1
        pos = start - int(self.offsets[shard])
        while filled < length:
            piece = self.arrays[shard][pos : pos + length - filled]
            out[filled : filled + len(piece)] = piece
            filled += len(piece)
            shard, pos = shard + 1, 0
        return out


def _as_stream(tokens: TokenStream | np.ndarray | Sequence[np.ndarray] | torch.Tensor) -> TokenStream:
    if isinstance(tokens, TokenStream):
        return tokens
    if isinstance(tokens, torch.Tensor):
        return TokenStream([tokens.cpu().numpy()])
    if isinstance(tokens, np.ndarray):
        return TokenStream([tokens])
    return TokenStream(list(tokens))


@dataclass
class CLMBatches:
    """Random windows of seq_len + 1 tokens: inputs are the first seq_len, targets the last seq_len."""

    tokens: Any
    batch_size: int
    seq_len: int
    seed: int = 0

    def __post_init__(self) -> None:
        self.tokens = _as_stream(self.tokens)
        if len(self.tokens) < self.seq_len + 1:
            raise LMForgeError(
                f"the training data has {len(self.tokens)} tokens, fewer than one window of "
                f"seq_len + 1 = {self.seq_len + 1}; use a shorter --seq-len or more data"
            )

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        starts = rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size)
        windows = torch.from_numpy(np.stack([self.tokens.read(int(s), self.seq_len + 1) for s in starts]))
        return {"input_ids": windows[:, :-1].contiguous(), "labels": windows[:, 1:].contiguous()}


class ShardBatches:
    """Adapter over the data pipeline's `CLMBatchSampler` (memory-mapped shards): batch g is its
    global batch g, optionally masked for MLM."""

    def __init__(self, sampler: Any, collator: Any = None, seed: int = 0):
        self.sampler, self.collator, self.seed = sampler, collator, seed

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        x, y = self.sampler.batch(index)
        if self.collator is None:
            return {"input_ids": x, "labels": y}
        ids = torch.cat([x, y[:, -1:]], dim=1)
        generator = torch.Generator().manual_seed(
            int(np.random.default_rng([self.seed, index, 1]).integers(2**62))
        )
        inputs, labels = self.collator(ids, generator=generator)
        return {"input_ids": inputs, "labels": labels}


@dataclass
class SFTBatches:
    """Examples (token ids, loss mask) drawn in a seeded random order, right-padded per batch.

    Epochs are permutations: index k belongs to epoch k·B // n, so every example is seen once per
    epoch. A causal model needs no attention mask for right padding (real tokens never see it).
    """

    examples: Sequence[tuple[list[int], list[bool]]]
    batch_size: int
    pad_token_id: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.examples:
            raise LMForgeError("no training examples")

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        n = len(self.examples)
        picks = []
        for j in range(index * self.batch_size, (index + 1) * self.batch_size):
            picks.append(int(self._order(j // n)[j % n]))
        return collate_sft([self.examples[i] for i in picks], self.pad_token_id)


def collate_sft(
    examples: Sequence[tuple[list[int], list[bool]]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad examples; `labels[t] = ids[t + 1]` where token t + 1 is trained on, else -100."""
    width = max(len(ids) for ids, _ in examples) - 1
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, (ids, mask) in enumerate(examples):
        t = torch.tensor(ids, dtype=torch.long)
        m = torch.tensor(mask, dtype=torch.bool)
        input_ids[row, : len(ids) - 1] = t[:-1]
        labels[row, : len(ids) - 1] = torch.where(m[1:], t[1:], torch.full_like(t[1:], IGNORE))
    return {"input_ids": input_ids, "labels": labels}


@dataclass
class ValSet:
    """A fixed list of validation batches; `num_bytes[i]` is the UTF-8 size of batch i's targets (0 when
    unknown, e.g. masked LM)."""

    batches: list[dict[str, torch.Tensor]]
    num_bytes: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.batches)


def clm_val_set(tokens: Any, batch_size: int, seq_len: int, max_batches: int, tokenizer=None) -> ValSet:
    """Consecutive non-overlapping windows from the start of the validation tokens (every target token
    counted once), grouped into at most `max_batches` batches."""
    stream = _as_stream(tokens)
    n_windows = min((len(stream) - 1) // seq_len, batch_size * max_batches)
    if n_windows < 1:
        raise LMForgeError(
            f"the validation data has {len(stream)} tokens, fewer than one window of {seq_len + 1}"
        )
    windows = torch.from_numpy(np.stack([stream.read(i * seq_len, seq_len + 1) for i in range(n_windows)]))
    batches, num_bytes = [], []
    for i in range(0, n_windows, batch_size):
        w = windows[i : i + batch_size]
        batches.append({"input_ids": w[:, :-1].contiguous(), "labels": w[:, 1:].contiguous()})
        if tokenizer is not None:
            num_bytes.append(sum(len(tokenizer.decode(row.tolist()).encode("utf-8")) for row in w[:, 1:]))
    return ValSet(batches, num_bytes)


def shard_val_set(
    data_dir: str | Path, batch_size: int, seq_len: int, max_batches: int, tokenizer=None
) -> ValSet:
    """The first sequential windows of a prepared directory's val split (a window never crosses a
    shard), at most `max_batches` batches; raises LMForgeError when the split has no full window."""
    from lmforge.data.loaders import CLMBatchSampler

    sampler = CLMBatchSampler(
        data_dir, split="val", batch_size=batch_size, seq_len=seq_len, mode="sequential"
    )
    batches, num_bytes = [], []
    for g in range(min(max_batches, sampler.batches_per_epoch())):
        x, y = sampler.batch(g)
        batches.append({"input_ids": x, "labels": y})
        if tokenizer is not None:
            num_bytes.append(sum(len(tokenizer.decode(row.tolist()).encode("utf-8")) for row in y))
    return ValSet(batches, num_bytes)


def mlm_val_set(source: Any, max_batches: int) -> ValSet:
    """Masked batches from a source seeded apart from training (fixed across evaluations)."""
    return ValSet([source.batch(i) for i in range(max_batches)])


def sft_val_set(
    examples: Sequence[tuple[list[int], list[bool]]], batch_size: int, pad_token_id: int
) -> ValSet:
    return ValSet(
        [collate_sft(examples[i : i + batch_size], pad_token_id) for i in range(0, len(examples), batch_size)]
    )


def whole_text_val_set(
    ids: Any, batch_size: int, seq_len: int, token_bytes: np.ndarray, context_id: int
) -> ValSet:
    """Validation over a whole text, every token (so every byte) scored exactly once: the text's tokens
    after one `context_id` token (so its first token is predicted too), cut into consecutive
    non-overlapping windows; the last, partial window is padded with unlabelled positions.
    `token_bytes[id]` is the UTF-8 length of token `id`, so `num_bytes` sums to the text's size."""
    stream = np.concatenate([[context_id], np.asarray(ids, dtype=np.int64)])
    n_targets = len(stream) - 1
    if n_targets < 1:
        raise LMForgeError("the validation text has no tokens")
    n_windows = -(-n_targets // seq_len)
    inputs = np.zeros((n_windows, seq_len), dtype=np.int64)
    labels = np.full((n_windows, seq_len), IGNORE, dtype=np.int64)
    for w in range(n_windows):
        chunk = stream[w * seq_len : w * seq_len + seq_len + 1]
        inputs[w, : len(chunk) - 1] = chunk[:-1]
        labels[w, : len(chunk) - 1] = chunk[1:]
    batches, num_bytes = [], []
    for i in range(0, n_windows, batch_size):
        x, y = torch.from_numpy(inputs[i : i + batch_size]), torch.from_numpy(labels[i : i + batch_size])
        batches.append({"input_ids": x, "labels": y})
        num_bytes.append(int(token_bytes[y[y != IGNORE].numpy()].sum()))
    return ValSet(batches, num_bytes)
