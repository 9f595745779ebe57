"""The inference engine: prefill and decode steps over a preallocated KV cache, for a batch of prompts.

The model is pure (`forward(input_ids, positions, cache, attention_mask) -> logits`); the engine owns
everything that changes while generating, in one `Batch`:
- one `KVCache` shared by every row, filled to the same slot count (`cache.length`);
- prompts of different lengths are **left-padded** so every row's next token lands in the same slot;
- each row keeps its own positions (0 at its first real token), so padding never shifts RoPE or learned
  positions, and a 0/1 mask over cache slots hides the padding keys;
- the token id of every slot, which the logits processors read as the sequence so far.
When no row is padded the engine passes `attention_mask=None`, letting attention use its plain causal path.

With `compile=True` the one-token decode step runs the model through `torch.compile` (see
`compiled_forward`): one graph per model in which the batch size and the cache fill level are symbolic,
so it serves every step of every call. An eager SmolLM2 step makes about 4,900 ATen calls (160 per
layer); the compiled step fuses the small ones and leaves mostly the weight reads (README: Generation).
With `aot=True` a batch-1 step skips dynamo altogether: it calls a package compiled ahead of time
(`lmforge.generate.aot`), and other steps take the `compile=True` path.

`StopChecker` decides per row when to stop: stop token ids (EOS and friends), stop strings (checked on the
text decoded so far) and `max_new_tokens`; finished rows keep stepping with padding until all are done.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.errors import LMForgeError
from lmforge.generate.aot import aot_step, serves
from lmforge.generate.cache import KVCache


@dataclass
class Batch:
    """Generation state of B rows sharing one KV cache (slots 0..cache.length-1 are filled)."""

    cache: KVCache
    tokens: torch.Tensor  # (B, capacity) token id in every slot; pad id in padding slots
    slot_mask: torch.Tensor  # (B, capacity) 1 where the slot holds a real token
    next_position: torch.Tensor  # (B,) position of each row's next token
    prompt_slots: int  # slots taken by the left-padded prompts
    padded: bool  # some row has padding: attention needs the mask

    @property
    def length(self) -> int:
        return self.cache.length

    @property
    def size(self) -> int:
        return self.tokens.shape[0]

    @property
    def capacity(self) -> int:
        return self.tokens.shape[1]

    def sequences(self) -> torch.Tensor:
        """(B, length) every slot so far, prompt padding included (what processors see)."""
        return self.tokens[:, : self.length]

    def generated(self) -> torch.Tensor:
        """(B, length - prompt_slots) the tokens generated so far."""
        return self.tokens[:, self.prompt_slots : self.length]

    @torch.inference_mode()
    def reorder(self, index: torch.Tensor) -> None:
        """Select/reorder rows (beam search, candidate expansion); `index` may repeat rows."""
        self.cache.reorder(index)
        self.tokens = self.tokens.index_select(0, index)
        self.slot_mask = self.slot_mask.index_select(0, index)
        self.next_position = self.next_position.index_select(0, index)

    @torch.inference_mode()
    def crop(self, length: int) -> None:
        """Forget slots from `length` on (rejected speculative tokens)."""
        removed = self.length - length
        self.cache.crop(length)
        self.next_position = self.next_position - self.slot_mask[:, length : length + removed].sum(dim=1)
        self.slot_mask[:, length:] = 0


def _forward(model: nn.Module, tokens, positions, cache, attention_mask, rope) -> torch.Tensor:
    extra = {} if rope is None else {"rope": rope}
    return model(tokens, positions=positions, cache=cache, attention_mask=attention_mask, **extra)


_compiled: Any = None


def compiled_forward() -> Any:
    """`model(tokens, positions=..., cache=..., attention_mask=..., rope=...)` under torch.compile, built
    once.

    The model is an argument, so dynamo keeps one entry per model (guarded on it) in a single compiled
    function. `dynamic=True` makes the batch size and the cache fill level symbolic: the first call
    compiles (tens of seconds on a small CPU; inductor keeps its kernels on disk for the next process),
    later steps and later calls reuse the graph. Batch size 1 is specialised, so a first batched call
    compiles once more, and so does a first padded batch (it has a mask). Models of the same shapes
    share a graph. Dynamo's default of 8 graphs per function would be 2-4 models; past it, steps fall
    back to eager with only a warning, so the limit here is 64.

    These settings trim the fixed cost every step repeats (a SmolLM2 step is about 20 ms of weight
    reads on a 2-core CPU, so each 0.5 ms counts; `benchmarks/step_overhead.py` measures them):
    - inductor's `cpp_wrapper`: the graph's ~250 kernel and matmul calls are made from C++, not from a
      generated Python function (the first compile takes about 1.3x as long);
    - floats stay constants (`specialize_float`): under `dynamic=True` dynamo would otherwise make every
      norm's `eps` a 0-d tensor input, 61 more inputs to convert, guard and check on each call;
    - no `size_asserts`: dynamo's guards already check every input's shape and strides before the
      graph runs, the asserts would repeat that for hundreds of tensors;
    - dynamo's recursive dict tags: a module subtree whose dicts are unchanged since the last call
      passes its guards at once (a mutated dict still gets every guard checked). The model's ~3,800
      guards cost about 1 ms a step without them, about 0.4 ms with;
    - RoPE's cos/sin come in as inputs, computed eagerly by the caller (`Engine.step`): inside the
      graph, inductor would recompute them (trigonometry) in every layer's attention loop, once per
      cached key; it keeps reused exp/log/tanh results but not cos/sin. That was 1.4 ms of a
      ~22 ms SmolLM2 step.
    """
    global _compiled
    if _compiled is None:
        options = {"cpp_wrapper": True, "size_asserts": False}
        compiled = torch.compile(_forward, dynamic=True, options=options)
        dynamo = {"specialize_float": True, "use_recursive_dict_tags_for_guards": True, "recompile_limit": 64}
        _compiled = torch._dynamo.config.patch(dynamo)(compiled)
    return _compiled


def check_compiler() -> None:
    """torch.compile on the CPU builds C++ kernels as Python extension modules: fail early, in one
    line, when no compiler or no Python headers are found."""
    import sysconfig

    import torch._inductor.config

    if not _compiler_found(tuple(torch._inductor.config.cpp.cxx)):
        raise LMForgeError(
            "compile=True needs a C++ compiler for torch.compile on the CPU (g++ or clang++; CXX picks "
            "one): install one, or generate without compile"
        )
    include = Path(sysconfig.get_path("include"))
    if not (include / "Python.h").exists():
        raise LMForgeError(
            f"compile=True needs Python's C headers for torch.compile on the CPU, and {include} has no "
            "Python.h: install them (e.g. the python3-dev package), or generate without compile"
        )


@functools.cache
def _compiler_found(search: tuple) -> bool:
    """Whether inductor finds a compiler among `search`; asked once per search list (it runs one)."""
    from torch._inductor import cpp_builder, exc

    try:
        cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        return False
    return True


class Engine:
    """Prefill and decode for one model: allocates the cache, builds positions and masks, steps.

    Args:
        model: a decoder `Transformer` (or anything with the same `forward` and a `config`).
        max_seq_len: context length to enforce; defaults to `model.config.max_seq_len`.
        compile: run one-token decode steps through `compiled_forward` (prefill and multi-token
            verification steps stay eager: their lengths vary, and they run once per call or round).
        aot: run batch-1, unpadded one-token steps through an ahead-of-time compiled package
            (`lmforge.generate.aot`), without dynamo's per-step cost; implies `compile` for the others.
    """

    def __init__(
        self, model: nn.Module, max_seq_len: int | None = None, compile: bool = False, aot: bool = False
    ):
        self.model = model
        self.compile = compile or aot
        self.aot = aot
        self._aot_step = None
        self.config = model.config
        if getattr(self.config, "head", "lm") != "lm" or not getattr(self.config, "causal", True):
            raise LMForgeError("generation needs a causal decoder with an LM head (this model is an encoder)")
        self.max_seq_len = max_seq_len or self.config.max_seq_len
        param = next(model.parameters())
        self.dtype, self.device = param.dtype, param.device
        if self.compile and self.device.type == "cpu":
            check_compiler()
        # a Transformer exposes its trunk and head separately: prefill can skip the head on the prompt
        self._split_head = hasattr(model, "hidden_states") and getattr(model, "lm_head", None) is not None
        self._rope = getattr(model, "rope", None) is not None

    def check_context(
        self, prompts: list[list[int]], max_new_tokens: int, truncate: bool = False
    ) -> list[list[int]]:
        """Refuse (or, with `truncate`, left-truncate) prompts that leave no room for the new tokens."""
        if max_new_tokens >= self.max_seq_len:
            raise LMForgeError(
                f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context of "
                f"{self.max_seq_len} tokens; lower max_new_tokens"
            )
        room = self.max_seq_len - max_new_tokens
        out = []
        for i, ids in enumerate(prompts):
            if not ids:
                raise LMForgeError(f"prompt {i} is empty: give at least one token (e.g. the BOS token)")
            if len(ids) > room:
                if not truncate:
                    raise LMForgeError(
                        f"prompt {i} has {len(ids)} tokens but the context is {self.max_seq_len} and "
                        f"max_new_tokens={max_new_tokens} leaves room for {room}; shorten it, lower "
                        "max_new_tokens, or pass truncate_prompt=True to keep its last tokens"
                    )
                ids = ids[-room:]
            out.append(list(ids))
        return out

    @torch.inference_mode()
    def new_batch(self, prompts: list[list[int]], capacity: int, pad_token_id: int = 0) -> Batch:
        """Allocate the cache for `capacity` slots and lay the prompts out left-padded (not run yet)."""
        B, width = len(prompts), max(len(p) for p in prompts)
        if capacity < width:
            raise ValueError(f"capacity {capacity} is smaller than the longest prompt ({width})")
        capacity = min(capacity, self.max_seq_len)
        tokens = torch.full((B, capacity), pad_token_id, dtype=torch.long, device=self.device)
        slot_mask = torch.zeros((B, capacity), dtype=torch.long, device=self.device)
        for i, ids in enumerate(prompts):
            tokens[i, width - len(ids) : width] = torch.tensor(ids, dtype=torch.long)
            slot_mask[i, width - len(ids) : width] = 1
        cache = KVCache.allocate(self.config, B, capacity, dtype=self.dtype, device=self.device)
        return Batch(
            cache=cache,
            tokens=tokens,
            slot_mask=slot_mask,
            next_position=torch.zeros(B, dtype=torch.long, device=self.device),
            prompt_slots=width,
            padded=any(len(p) != width for p in prompts),
        )

    @torch.inference_mode()
    def prefill(self, batch: Batch) -> torch.Tensor:
        """Run the prompts through the model; return the next-token logits (B, V) of each row.

        Only the last position goes through the LM head (a long prompt would otherwise materialise
        T x V logits that nobody reads)."""
        width = batch.prompt_slots
        real = batch.slot_mask[:, :width]
        positions = (real.cumsum(dim=1) - 1).clamp(min=0)  # 0 at each row's first real token
        mask = batch.slot_mask[:, :width] if batch.padded else None
        args = dict(positions=positions, cache=batch.cache, attention_mask=mask)
        if self._split_head:
            logits = self.model.lm_head(self.model.hidden_states(batch.tokens[:, :width], **args)[:, -1])
        else:
            logits = self.model(batch.tokens[:, :width], **args)[:, -1]
        batch.cache.advance(width)
        batch.next_position = real.sum(dim=1)
        return logits.float()

    @torch.inference_mode()
    def step(self, batch: Batch, tokens: torch.Tensor) -> torch.Tensor:
        """Append `tokens` (B,) or (B, T) to every row; return their logits (B, V) or (B, T, V)."""
        single = tokens.dim() == 1
        if single:
            tokens = tokens[:, None]
        T = tokens.shape[1]
        start, end = batch.length, batch.length + T
        if end > batch.capacity:
            raise LMForgeError(f"generation ran past the allocated {batch.capacity} slots")
        batch.tokens[:, start:end] = tokens
        batch.slot_mask[:, start:end] = 1
        positions = batch.next_position[:, None] + torch.arange(T, device=tokens.device)
        mask = batch.slot_mask[:, :end] if batch.padded else None
        if self.compile and T == 1:
            # the batch's own slots, not the caller's tensor: an inference tensor every time (a plain
            # one would miss the compiled graph's guards and compile it again)
            tokens = batch.tokens[:, start:end]
            rope = self.model.rope(positions, self.dtype) if self._rope else None
            if self.aot and serves(batch.size, batch.padded, end, batch.capacity):
                if self._aot_step is None:  # looked up (and checked) once per engine
                    self._aot_step = aot_step(self.model, self.dtype)
                logits = self._aot_step(tokens, positions, batch.cache, rope)
            else:
                torch._dynamo.mark_static(tokens, 1)  # the token dimension is always 1 here
                logits = compiled_forward()(self.model, tokens, positions, batch.cache, mask, rope)
        else:
            logits = self.model(tokens, positions=positions, cache=batch.cache, attention_mask=mask)
        batch.cache.advance(T)
        batch.next_position = batch.next_position + T
        logits = logits.float()
        return logits[:, 0] if single else logits

    @torch.inference_mode()
    def step_hidden(self, batch: Batch, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `step` for (B,) tokens, but also return the final hidden states (B, C) (contrastive search)."""
        start, end = batch.length, batch.length + 1
        batch.tokens[:, start] = tokens
        batch.slot_mask[:, start] = 1
        mask = batch.slot_mask[:, :end] if batch.padded else None
        h = self.model.hidden_states(
            tokens[:, None], positions=batch.next_position[:, None], cache=batch.cache, attention_mask=mask
        )
        logits = self.model.lm_head(h)
        batch.cache.advance(1)
        batch.next_position = batch.next_position + 1
        return logits[:, 0].float(), h[:, 0].float()

    @torch.inference_mode()
    def prefill_hidden(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `prefill`, but also return the hidden states (B, prompt_slots, C) of the prompt."""
        width = batch.prompt_slots
        real = batch.slot_mask[:, :width]
        positions = (real.cumsum(dim=1) - 1).clamp(min=0)
        mask = real if batch.padded else None
        h = self.model.hidden_states(
            batch.tokens[:, :width], positions=positions, cache=batch.cache, attention_mask=mask
        )
        logits = self.model.lm_head(h[:, -1])
        batch.cache.advance(width)
        batch.next_position = real.sum(dim=1)
        return logits.float(), h.float()


@dataclass
class StopChecker:
    """Per-row stopping rules, fed one token per row per step.

    A row stops on a stop token id (kept in its tokens, not in its text), on a stop string (the text is
    cut where the string starts; the string itself is not returned), or after `max_new_tokens`.
    """

    batch_size: int
    max_new_tokens: int
    stop_token_ids: frozenset[int] = frozenset()
    stop_strings: tuple[str, ...] = ()
    tokenizer: Any = None  # needed for stop strings and text
    finished: list[bool] = field(init=False)
    reasons: list[str | None] = field(init=False)
    counts: list[int] = field(init=False)
    texts: list[str] = field(init=False)  # text decoded so far (stop strings cut off)
    _decoders: list[Any] = field(init=False)

    def __post_init__(self) -> None:
        if self.stop_strings and self.tokenizer is None:
            raise LMForgeError("stop strings need a tokenizer to decode the generated text")
        self.finished = [False] * self.batch_size
        self.reasons = [None] * self.batch_size
        self.counts = [0] * self.batch_size
        self.texts = [""] * self.batch_size
        self._decoders = (
            [self.tokenizer.incremental_decoder() for _ in range(self.batch_size)] if self.tokenizer else []
        )

    @property
    def all_finished(self) -> bool:
        return all(self.finished)

    @property
    def hold_back(self) -> int:
        """Characters a stream must hold back: they may be the start of a stop string."""
        return max((len(s) for s in self.stop_strings), default=1) - 1

    def update(self, tokens: Sequence[int] | Iterable[int]) -> None:
        """Record one token per row (ignored for rows already finished)."""
        for i, token in enumerate(tokens):
            if self.finished[i]:
                continue
            token = int(token)
            self.counts[i] += 1
            if token in self.stop_token_ids:
                self._finish(i, "stop")
            elif self._decoders:
                self._append(i, self._decoders[i].add(token))
            if not self.finished[i] and self.counts[i] >= self.max_new_tokens:
                self._finish(i, "length")
                if self._decoders:
                    self._append(i, self._decoders[i].flush())
            elif self.reasons[i] == "stop" and self._decoders:
                self._append(i, self._decoders[i].flush(), force=True)

    def _append(self, i: int, delta: str, force: bool = False) -> None:
        """Add text to row i; on a stop string, cut the text where it starts and finish the row."""
        if not delta or (self.finished[i] and not force):
            return
        before = self.texts[i]
        text = before + delta
        start = max(0, len(before) - self.hold_back)
        cuts = [c for c in (text.find(s, start) for s in self.stop_strings) if c >= 0]
        if cuts:
            text = text[: min(cuts)]
            if not self.finished[i]:
                self._finish(i, "stop_string")
        self.texts[i] = text

    def _finish(self, i: int, reason: str) -> None:
        self.finished[i] = True
        self.reasons[i] = reason

    def finish_reason(self, i: int) -> str:
        """OpenAI-style: "stop" (stop token or string) or "length"."""
        return "length" if self.reasons[i] == "length" else "stop"
