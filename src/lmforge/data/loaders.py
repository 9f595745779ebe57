"""Batches for training from prepared shards: causal-LM windows, MLM masking, document packing.

```python
from lmforge.data.loaders import CLMBatchSampler, MLMCollator, check_tokenizer

sampler = CLMBatchSampler("data/shakespeare", split="train", batch_size=16, seq_len=256,
                          mode="random", seed=0, rank=0, world_size=1, fingerprint=tok.fingerprint)
x, y = sampler.next_batch()          # (B, T) int64 each; y is x shifted left by one token
state = sampler.state_dict()         # {"index": ..., ...}: save it with the trainer state
sampler.load_state_dict(state)       # the next batch is exactly the one that would have come
collate = MLMCollator.for_tokenizer(tok, whole_word=False)   # or MLMCollator(mask_token_id=..., ...)
inputs, labels = collate(x, generator=torch.Generator().manual_seed(step))
```

`CLMBatchSampler` reads windows of `seq_len + 1` tokens from the memory-mapped shards (a window never
crosses a shard; documents inside a window are separated by EOS, as in nanoGPT's packing).
- `mode="random"`: window starts drawn uniformly over every valid start of every shard;
- `mode="sequential"`: the non-overlapping windows `[k·seq_len, k·seq_len + seq_len + 1)` of each
  shard in order, wrapping around (use it for validation);
Batch number g (0, 1, 2, ...) is a pure function of (seed, g), so the state is one counter and resume
is exact. With `world_size` W, rank r takes batches r, r + W, r + 2W, ...: W ranks with one micro-batch
each see the same examples as one process with gradient accumulation W.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lmforge.data.shards import open_split, read_manifest
from lmforge.errors import LMForgeError


def check_tokenizer(data_dir: str | Path, fingerprint: str, vocab_size: int | None = None) -> dict[str, Any]:
    """Fail with a clear error when the shards were made with another tokenizer than the model's;
    returns the manifest."""
    manifest = read_manifest(data_dir)
    made_with = manifest["tokenizer"]
    if made_with["fingerprint"] != fingerprint:
        raise LMForgeError(
            f"shards in {data_dir} were made with another tokenizer (fingerprint {made_with['fingerprint'][:12]}, "
            f"vocab {made_with['vocab_size']}) than the model's ({fingerprint[:12]}"
            + (f", vocab {vocab_size}" if vocab_size is not None else "")
            + f"): run `lmforge prepare ... --tokenizer <the model's tokenizer> --output {data_dir}` again"
        )
    if vocab_size is not None and made_with["vocab_size"] > vocab_size:
        raise LMForgeError(
            f"shards in {data_dir} use {made_with['vocab_size']} token ids but the model has only {vocab_size}"
        )
    return manifest


class CLMBatchSampler:
    """Deterministic, resumable (input, target) batches of `seq_len` tokens from prepared shards.

    Args:
        data_dir: directory written by `lmforge prepare`.
        split: "train" or "val".
        batch_size: rows per batch (per rank).
        seq_len: tokens per row; each row reads `seq_len + 1` tokens.
        mode: "random" windows or "sequential" non-overlapping windows.
        seed: seeds the random windows.
        rank, world_size: this process's share of the batches (see module docstring).
        fingerprint: when given, the shards must have been made with this tokenizer.
        device: where the returned tensors live.
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str = "train",
        batch_size: int = 8,
        seq_len: int = 256,
        mode: Literal["random", "sequential"] = "random",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        fingerprint: str | None = None,
        device: str | torch.device = "cpu",
    ):
        if mode not in ("random", "sequential"):
            raise LMForgeError(f"mode must be 'random' or 'sequential', got {mode!r}")
        if batch_size < 1 or seq_len < 1:
            raise LMForgeError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
        if not 0 <= rank < world_size:
            raise LMForgeError(f"rank {rank} is not in [0, world_size={world_size})")
        self.manifest = (
            check_tokenizer(data_dir, fingerprint) if fingerprint is not None else read_manifest(data_dir)
        )
        self.shards = [s for s in open_split(data_dir, split) if len(s) >= seq_len + 1]
        if not self.shards:
            longest = max((len(s) for s in open_split(data_dir, split)), default=0)
            raise LMForgeError(
                f"the '{split}' split of {data_dir} has no shard of seq_len + 1 = {seq_len + 1} tokens "
                f"(longest: {longest}): lower --seq-len or prepare more data"
            )
        self.data_dir, self.split = str(data_dir), split
        self.batch_size, self.seq_len, self.mode, self.seed = batch_size, seq_len, mode, seed
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        lengths = np.array([len(s) for s in self.shards], dtype=np.int64)
        # random: valid starts per shard; sequential: whole windows per shard.
        self._starts = np.cumsum(lengths - seq_len)
        self._windows = np.cumsum((lengths - 1) // seq_len)
        self.index = rank  # global number of the next batch this rank returns

    @property
    def tokens(self) -> int:
        return int(sum(len(s) for s in self.shards))

    def batches_per_epoch(self) -> int:
        """Sequential batches (over all ranks) that cover every window once."""
        return max(int(self._windows[-1]) // self.batch_size, 1)

    def _window_starts(self, g: int) -> list[tuple[int, int]]:
        """(shard, offset) of each row of global batch g."""
        if self.mode == "random":
            rng = np.random.default_rng([self.seed, g])
            flat = rng.integers(0, int(self._starts[-1]), size=self.batch_size)
        else:
            flat = (g * self.batch_size + np.arange(self.batch_size)) % int(self._windows[-1])
        bounds = self._starts if self.mode == "random" else self._windows
        shard = np.searchsorted(bounds, flat, side="right")
        local = flat - np.concatenate([[0], bounds])[shard]
        if self.mode == "sequential":
            local = local * self.seq_len
        return list(zip(shard.tolist(), local.tolist()))

    def batch(self, g: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Global batch number g: (inputs, targets), each (batch_size, seq_len) int64."""
        rows = np.stack(
            [
                np.asarray(self.shards[s][o : o + self.seq_len + 1], dtype=np.int64)
                for s, o in self._window_starts(g)
            ]
        )
        data = torch.from_numpy(rows)
        x, y = data[:, :-1], data[:, 1:]
        if self.device.type != "cpu":
            return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return x.contiguous(), y.contiguous()

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.batch(self.index)
        self.index += self.world_size
        return x, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """Everything that fixes the batches to come; JSON-serializable."""
        return {
            "index": self.index,
            "seed": self.seed,
            "mode": self.mode,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "rank": self.rank,
            "world_size": self.world_size,
            "split": self.split,
            "tokens": self.tokens,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where `state` was taken; refuses a state from a differently configured sampler."""
        mine = self.state_dict()
        diff = [k for k in mine if k != "index" and k in state and state[k] != mine[k]]
        if diff:
            detail = ", ".join(f"{k}: saved {state[k]!r} vs now {mine[k]!r}" for k in diff)
            raise LMForgeError(f"data sampler state does not match this run ({detail})")
        self.index = int(state["index"])


def pack_documents(tokenizer: Any, texts: Iterable[str]) -> list[int]:
    """The documents' tokens in one stream, each followed by EOS (when the tokenizer has one), as in
    nanoGPT's packing: training windows then cut across document boundaries."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for tokens in tokenizer.encode_batch(list(texts)):
        ids.extend(tokens)
        if eos is not None:
            ids.append(eos)
    return ids


def word_continuation_table(vocab: dict[str, int], vocab_size: int | None = None) -> np.ndarray:
    """bool[vocab_size]: True for tokens that continue the previous token's word (for whole-word
    masking). WordPiece marks continuations with a leading `##`; byte-level BPE (`Ġ`) and
    SentencePiece (`▁`) mark word starts instead, so there a token continues a word when it has no
    marker and starts with a letter or digit."""
    size = vocab_size if vocab_size is not None else max(vocab.values()) + 1
    table = np.zeros(size, dtype=bool)
    wordpiece = any(tok.startswith("##") for tok in vocab)
    for tok, idx in vocab.items():
        if idx >= size:
            continue
        if wordpiece:
            table[idx] = tok.startswith("##") and len(tok) > 2
        else:
            table[idx] = bool(tok) and tok[0] not in "Ġ▁" and tok[0].isalnum()
    return table


class MLMCollator:
    """BERT masking: select `mlm_probability` of the maskable tokens (or whole words); of those, 80%
    become `mask_token_id`, 10% a random non-special token, 10% stay. Labels hold the original id at
    selected positions and -100 elsewhere. Special tokens (and padding) are never selected.

    Args:
        mask_token_id: id of the mask token.
        vocab_size: ids of random replacements are drawn below this.
        special_token_ids: ids never selected nor drawn as replacements (CLS, SEP, PAD, EOS, ...).
        mlm_probability: selection rate.
        whole_word: select whole words; needs `continuation` (see `word_continuation_table`).
        continuation: bool table over the vocabulary, True where a token continues a word.
    """

    def __init__(
        self,
        mask_token_id: int,
        vocab_size: int,
        special_token_ids: Iterable[int] = (),
        mlm_probability: float = 0.15,
        whole_word: bool = False,
        continuation: Sequence[bool] | np.ndarray | None = None,
    ):
        if not 0.0 < mlm_probability < 1.0:
            raise LMForgeError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        if whole_word and continuation is None:
            raise LMForgeError("whole-word masking needs the tokenizer's word-continuation table")
        self.mask_token_id, self.vocab_size, self.mlm_probability = mask_token_id, vocab_size, mlm_probability
        self.special = torch.zeros(vocab_size, dtype=torch.bool)
        ids = sorted(set(special_token_ids) | {mask_token_id})
        self.special[torch.tensor(ids, dtype=torch.long)] = True
        self.replacements = torch.nonzero(~self.special).squeeze(1)  # ids a random replacement may take
        self.whole_word = whole_word
        self.continuation = (
            torch.as_tensor(np.asarray(continuation, dtype=bool)) if continuation is not None else None
        )

    @classmethod
    def for_tokenizer(
        cls, tokenizer: Any, whole_word: bool = False, mlm_probability: float = 0.15
    ) -> MLMCollator:
        """The collator for a tokenizer's mask token, specials and (for whole words) vocabulary."""
        mask = tokenizer.special_tokens.get("mask_token")
        mask_id = tokenizer.token_to_id(mask) if mask else tokenizer.token_to_id("[MASK]")
        if mask_id is None:
            raise LMForgeError("masked-LM pretraining needs a tokenizer with a mask token ([MASK])")
        continuation = (
            word_continuation_table(tokenizer.get_vocab(), tokenizer.vocab_size) if whole_word else None
        )
        return cls(
            mask_token_id=mask_id,
            vocab_size=tokenizer.vocab_size,
            special_token_ids=tokenizer.all_special_ids,
            mlm_probability=mlm_probability,
            whole_word=whole_word,
            continuation=continuation,
        )

    def __call__(
        self, input_ids: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked inputs, labels) for `input_ids` (B, T); the input is not modified."""
        ids = input_ids.to("cpu", torch.long)
        maskable = ~self.special[ids]  # (B, T)
        if self.whole_word:
            # A word starts at a maskable token that does not continue the previous maskable token.
            cont = self.continuation[ids] & maskable
            cont[:, 0] = False
            cont[:, 1:] &= maskable[:, :-1]
            word_start = maskable & ~cont
            word_id = torch.cumsum(word_start.long(), dim=1) - 1  # (B, T) word number within each row
            pick = (
                torch.rand(ids.shape, generator=generator) < self.mlm_probability
            )  # one draw per word start
            picked_words = torch.zeros(ids.shape, dtype=torch.bool)
            rows, cols = torch.nonzero(word_start & pick, as_tuple=True)
            picked_words[rows, word_id[rows, cols]] = True
            selected = maskable & torch.gather(picked_words, 1, word_id.clamp(min=0))
        else:
            selected = maskable & (torch.rand(ids.shape, generator=generator) < self.mlm_probability)
        labels = torch.where(selected, ids, torch.full_like(ids, -100))
        action = torch.rand(ids.shape, generator=generator)
        to_mask = selected & (action < 0.8)
        to_random = selected & (action >= 0.8) & (action < 0.9)
        random_ids = self.replacements[torch.randint(len(self.replacements), ids.shape, generator=generator)]
        masked = torch.where(to_mask, torch.full_like(ids, self.mask_token_id), ids)
        masked = torch.where(to_random, random_ids, masked)
        return masked.to(input_ids.device), labels.to(input_ids.device)
