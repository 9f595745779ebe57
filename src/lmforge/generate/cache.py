"""A preallocated key/value cache that the engine owns and passes to the model.

Layout per layer: (B, n_kv_head, max_len, head_dim). Every row shares one fill level (`length`);
prompts of different lengths are left-padded and the padding slots are masked with an attention mask.
The model writes new K/V into slots [length, length + T) and returns views up to length + T; it never
advances the cache itself — the caller does, after the forward.
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
    length: int = 0

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

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v (B, n_kv_head, T, hd) at the current fill level; return the filled views."""
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
