"""A preallocated key/value cache that the engine owns and passes to the model.

Layout per layer: (B, n_kv_head, max_len, head_dim). Every row is written at one shared slot, the
clock `length`: a step writes every row's new K/V into slots [length, length + T), and the model
returns views up to length + T; it never advances the cache itself, the caller does, after the
forward. Each row keeps its own fill level through its start slot: row b holds its sequence in slots
[starts[b], length), so its fill level (and the position of its next token) is `length - starts[b]`.
Slots before a row's start are masked out by the engine's attention mask.

- A left-padded batch of prompts is the case starts[b] = padding width of row b.
- A sequence joins a running batch by copying its K/V (computed alone, in a batch-1 cache) into the
  last slots before the clock of a free row (`insert`); it leaves by `release`, which empties its row.
- `relayout` moves every row's filled slots so that they end at a new clock (all rows shift by the
  same number of slots, so their contents and relative order are unchanged): compaction when the clock
  reached the capacity, or growth when a joining sequence is longer than the clock or needs a larger
  capacity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError


@dataclass
class KVCache:
    k: list[torch.Tensor]  # per layer (B, n_kv_head, max_len, head_dim)
    v: list[torch.Tensor]
    length: int = 0  # the shared clock: the slot every row's next token is written to
    starts: torch.Tensor | None = None  # (B,) long, first filled slot of each row (zeros when None)

    def __post_init__(self) -> None:
        if self.starts is None:
            self.starts = torch.zeros(self.k[0].shape[0], dtype=torch.long, device=self.k[0].device)

    @classmethod
    def allocate(
        cls,
        config: ModelConfig,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> KVCache:
        if max_len > config.max_seq_len:
            raise LMForgeError(
                f"cache of {max_len} tokens exceeds the model's context of {config.max_seq_len}"
            )
        shape = (batch_size, config.n_kv_head, max_len, config.head_dim)
        k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        return cls(k, v, 0)

    @staticmethod
    def bytes_per_token(config: ModelConfig, dtype: torch.dtype = torch.float32) -> int:
        """Key + value bytes one token of one sequence takes, over every layer."""
        return 2 * config.n_layer * config.n_kv_head * config.head_dim * dtype.itemsize

    @property
    def batch_size(self) -> int:
        return self.k[0].shape[0]

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    @property
    def fill_levels(self) -> torch.Tensor:
        """(B,) slots each row holds, which is also the position of its next token."""
        return (self.length - self.starts).clamp(min=0)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v (B, n_kv_head, T, hd) at the clock; return the filled views."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise LMForgeError(f"KV cache full: {end} tokens > {self.max_len} allocated")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def crop(self, length: int) -> None:
        """Forget everything after `length` slots (rejected speculative tokens)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot crop a cache of length {self.length} to {length}")
        self.length = length

    def reorder(self, index: torch.Tensor) -> None:
        """Select/reorder batch rows (beam search); `index` may repeat rows."""
        self.k = [t.index_select(0, index) for t in self.k]
        self.v = [t.index_select(0, index) for t in self.v]
        self.starts = self.starts.index_select(0, index)

    def insert(self, row: int, source: KVCache, source_row: int = 0) -> None:
        """Copy `source`'s filled slots of `source_row` into `row`, ending at the clock; the row's old
        contents are forgotten. The clock must be at least the copied sequence's length (`relayout`)."""
        start = int(source.starts[source_row])
        n = source.length - start
        if n > self.length:
            raise ValueError(f"a sequence of {n} slots does not fit before the clock at {self.length}")
        for dst, src in zip(self.k + self.v, source.k + source.v, strict=True):
            dst[row, :, self.length - n : self.length] = src[source_row, :, start : source.length]
        self.starts[row] = self.length - n

    def release(self, rows: int | list[int]) -> None:
        """Empty rows (fill level 0): their slots are masked out and the rows can be reused."""
        self.starts[rows] = self.length

    def relayout(self, length: int, max_len: int | None = None) -> None:
        """Move every row's filled slots so they end at slot `length` (the new clock), each row keeping
        its fill level; with `max_len`, into newly allocated tensors of that capacity."""
        fills = self.fill_levels
        longest = int(fills.max()) if fills.numel() else 0
        capacity = self.max_len if max_len is None else max_len
        if not longest <= length <= capacity:
            raise ValueError(
                f"cannot move rows of up to {longest} slots to end at {length} in {capacity} slots"
            )
        self.k = [move_slots(t, 2, self.length, length, capacity) for t in self.k]
        self.v = [move_slots(t, 2, self.length, length, capacity) for t in self.v]
        self.starts = length - fills
        self.length = length


def move_slots(t: torch.Tensor, dim: int, end: int, new_end: int, capacity: int) -> torch.Tensor:
    """Shift the slots before `end` along `dim` so they end at `new_end` (the oldest slots drop off
    when `new_end < end`); a new tensor when `capacity` differs from the current size, else in place.
    Slots that receive no data keep stale values: callers mask them."""
    keep = min(end, new_end)
    if capacity != t.shape[dim]:
        shape = list(t.shape)
        shape[dim] = capacity
        out = torch.zeros(shape, dtype=t.dtype, device=t.device)
        out.narrow(dim, new_end - keep, keep).copy_(t.narrow(dim, end - keep, keep))
        return out
    if keep and new_end != end:  # source and destination overlap: copy through a temporary
        t.narrow(dim, new_end - keep, keep).copy_(t.narrow(dim, end - keep, keep).clone())
    return t
