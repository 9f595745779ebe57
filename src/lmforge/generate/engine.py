"""The inference engine: prefill and decode steps over a preallocated KV cache, for a batch of prompts.

The model is pure (`forward(input_ids, positions, cache, attention_mask) -> logits`); the engine owns
everything that changes while generating, in one `Batch`:
- one `KVCache` shared by every row: a step writes every row's next token at one shared slot (the
  clock, `cache.length`), and each row's sequence fills the slots from its own start slot to the clock
  (`cache.starts`, see `lmforge.generate.cache`). Prompts of different lengths are left-padded (the
  start is the padding width); a sequence can also join or leave a running batch (`Batch.join`,
  `Batch.release`, `Batch.relayout`: what `lmforge.generate.batching` does for continuous batching);
- each row's positions are its slots counted from its start (0 at its first real token), so padding
  never shifts RoPE or learned positions, and a mask over cache slots hides the other slots;
- the token id of every slot, which the logits processors read as the sequence so far.
When every row starts at slot 0 the engine passes `attention_mask=None`, letting attention use its plain
causal path.

An engine lives as long as its model (`LM.engine`), and owns the compiled decode steps, built on first
use: with `compile="compile"` the one-token decode step runs the model through `torch.compile` (see
`compile_forward`): one graph in which the batch size and the cache fill level are symbolic, so it
serves every step of every call. An eager SmolLM2 step makes about 4,900 ATen calls (160 per layer); the
compiled step fuses the small ones and leaves mostly the weight reads (README: Generation). With
`compile="aot"` a batch-1 step skips dynamo altogether: it calls a package compiled ahead of time
(`lmforge.generate.aot`), and other steps take the compiled path. `compile="auto"` uses the AOT step
when its package is already on disk (no compile to wait for), else eager steps. A call can override the
engine's choice (`Engine.mode(compile=..., aot=...)`); each batch counts which steps ran
(`Batch.decode_step`).

`StopChecker` decides per row when to stop: stop token ids (EOS and friends), stop strings (checked on the
text decoded so far) and `max_new_tokens`; finished rows keep stepping with padding until all are done.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn

from lmforge.errors import LMForgeError
from lmforge.generate.aot import AOTStep, package_kept, serves
from lmforge.generate.cache import KVCache, move_slots

CompileMode = Literal["auto", "eager", "compile", "aot"]
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)
STEP_KINDS = ("aot", "compile", "eager")  # how a decode step ran, in the order `decode_step` names them


def decode_step_name(kinds: Iterable[str]) -> str:
    """ "aot", "compile", "eager", or those that ran "+"-joined (e.g. "aot+compile"); "none" for none."""
    ran = set(kinds)
    return "+".join(kind for kind in STEP_KINDS if kind in ran) or "none"


@dataclass(frozen=True)
class StepMode:
    """How one batch's one-token decode steps run (prefill and multi-token steps are always eager)."""

    aot: bool = False  # batch-1, unpadded steps through the ahead-of-time package
    compile: bool = False  # the other one-token steps through torch.compile


@dataclass
class Batch:
    """Generation state of B rows sharing one KV cache: row b's sequence fills slots
    [cache.starts[b], cache.length)."""

    cache: KVCache
    tokens: torch.Tensor  # (B, capacity) token id in every slot; pad id (or stale ids) outside a row
    prompt_slots: int  # slots taken by the left-padded prompts
    padded: bool  # some row starts after slot 0: attention needs the mask
    mode: StepMode = StepMode()
    step_counts: Counter = field(default_factory=Counter)  # one-token decode steps by kind (STEP_KINDS)
    last_step: str | None = None  # the kind of the latest step
    aot_checked: bool = False  # the engine's AOT runner was checked against the model for this batch
    # (B, P, C) input vectors standing in the first P slots of each row's prompt (a VLM's image prefix);
    # those slots hold the pad id in `tokens`. Read by prefill only: later steps see them in the cache.
    prefix_embeds: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return self.cache.length

    @property
    def size(self) -> int:
        return self.tokens.shape[0]

    @property
    def capacity(self) -> int:
        return self.tokens.shape[1]

    @property
    def next_position(self) -> torch.Tensor:
        """(B,) position of each row's next token: its fill level."""
        return self.cache.fill_levels

    @property
    def decode_step(self) -> str:
        """Which decode steps ran: "aot", "compile", "eager", "+"-joined when several did (e.g.
        "aot+compile"), "none" when the batch was only prefilled."""
        return decode_step_name(kind for kind, n in self.step_counts.items() if n)

    def valid_slots(self, end: int | None = None) -> torch.Tensor:
        """(B, end) True at each row's own slots among the first `end` (default: the clock)."""
        end = self.length if end is None else end
        return torch.arange(end, device=self.tokens.device)[None, :] >= self.cache.starts[:, None]

    @torch.inference_mode()
    def reorder(self, index: torch.Tensor) -> None:
        """Select/reorder rows (beam search, candidate expansion); `index` may repeat rows."""
        self.cache.reorder(index)
        self.tokens = self.tokens.index_select(0, index)

    @torch.inference_mode()
    def crop(self, length: int) -> None:
        """Forget slots from `length` on (rejected speculative tokens)."""
        self.cache.crop(length)

    @torch.inference_mode()
    def relayout(self, length: int, capacity: int | None = None) -> None:
        """Move every row's slots so they end at slot `length` (the new clock), in place or, with
        `capacity`, into a cache of that many slots; every row keeps its tokens and positions."""
        end, capacity = self.length, capacity or self.capacity
        self.cache.relayout(length, capacity)
        self.tokens = move_slots(self.tokens, 1, end, length, capacity)
        self._check_padding()

    @torch.inference_mode()
    def join(self, row: int, source: Batch, source_row: int = 0) -> None:
        """Put `source_row` of another batch of the same model (a sequence prefilled alone) into `row`,
        ending at the clock; its next token then goes to the clock's slot like every row's."""
        start, end = int(source.cache.starts[source_row]), source.length
        self.cache.insert(row, source.cache, source_row)
        self.tokens[row, self.length - (end - start) : self.length] = source.tokens[source_row, start:end]
        self._check_padding()

    def head(self, rows: int) -> Batch:
        """The first `rows` rows as a batch of their own sharing this one's tensors: a step on it writes
        here (`follow` then takes its clock and step counts)."""
        cache = self.cache
        starts = cache.starts[:rows]
        return Batch(
            cache=KVCache([t[:rows] for t in cache.k], [t[:rows] for t in cache.v], cache.length, starts),
            tokens=self.tokens[:rows],
            prompt_slots=self.prompt_slots,
            padded=bool(starts.any()),
            mode=self.mode,
            aot_checked=self.aot_checked,
        )

    def follow(self, head: Batch) -> None:
        """After steps on `head(rows)`: the clock, step counts and checks it moved on."""
        self.cache.length = head.cache.length
        self.step_counts.update(head.step_counts)
        self.last_step, self.aot_checked = head.last_step, head.aot_checked

    @torch.inference_mode()
    def release(self, rows: int | list[int]) -> None:
        """Empty rows: their slots are masked out from now on and a `join` can reuse them."""
        self.cache.release(rows)
        self._check_padding()

    def _check_padding(self) -> None:
        self.padded = bool(self.cache.starts.any())


def _forward(model: nn.Module, tokens, positions, cache, attention_mask, rope) -> torch.Tensor:
    extra = {} if rope is None else {"rope": rope}
    return model(tokens, positions=positions, cache=cache, attention_mask=attention_mask, **extra)


def compile_forward() -> Callable[..., torch.Tensor]:
    """`model(tokens, positions=..., cache=..., attention_mask=..., rope=...)` under torch.compile; each
    engine builds one on its first compiled step.

    The model is an argument, and dynamo keeps its graphs on `_forward`'s code, so every engine's
    compiled function shares them (guarded on the model): a second engine over a model of the same
    shapes reuses the graph. `dynamic=True` makes the batch size and the cache fill level symbolic: the
    first call compiles (tens of seconds on a small CPU; inductor keeps its kernels on disk for the next
    process), later steps and later calls reuse the graph. Batch size 1 is specialised, so a first
    batched call compiles once more, and so does a first padded batch (it has a mask). Dynamo's default
    of 8 graphs per function would be 2-4 models; past it, steps fall back to eager with only a warning,
    so the limit here is 64.

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
    options = {"cpp_wrapper": True, "size_asserts": False}
    compiled = torch.compile(_forward, dynamic=True, options=options)
    dynamo = {"specialize_float": True, "use_recursive_dict_tags_for_guards": True, "recompile_limit": 64}
    # no duck sizing: a batch size that happens to equal another size when traced (the KV heads, the
    # clock) would tie the two, and the graph would compile again when they differ
    no_duck = torch.fx.experimental._config.patch(use_duck_shape=False)
    return no_duck(torch._dynamo.config.patch(dynamo)(compiled))


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
        compile: how one-token decode steps run unless a call says otherwise (prefill and multi-token
            verification steps stay eager: their lengths vary, and they run once per call or round):
            "eager"; "compile" (torch.compile, `compile_forward`); "aot" (batch-1, unpadded steps through
            an ahead-of-time compiled package, `lmforge.generate.aot`, the others compiled); "auto"
            (the AOT step when its package is already on disk, else eager).
    """

    def __init__(self, model: nn.Module, max_seq_len: int | None = None, compile: CompileMode = "eager"):
        if compile not in COMPILE_MODES:
            raise LMForgeError(f"unknown compile mode {compile!r}; use one of {', '.join(COMPILE_MODES)}")
        self.model = model
        self.compile_mode = compile
        self.config = model.config
        if getattr(self.config, "head", "lm") != "lm" or not getattr(self.config, "causal", True):
            raise LMForgeError("generation needs a causal decoder with an LM head (this model is an encoder)")
        self.max_seq_len = max_seq_len or self.config.max_seq_len
        # a Transformer exposes its trunk and head separately: prefill can skip the head on the prompt
        self._split_head = hasattr(model, "hidden_states") and getattr(model, "lm_head", None) is not None
        self._rope = getattr(model, "rope", None) is not None
        self.compiled_forward: Callable[..., torch.Tensor] | None = None  # built on the first compiled step
        self.aot_step: AOTStep | None = None  # loaded (or compiled) on the first AOT step
        self.step_counts: Counter = Counter()  # one-token decode steps by kind, over the engine's life

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def aot_ready(self) -> bool:
        """Whether a batch-1 AOT step is at hand without compiling: loaded already, or kept on disk."""
        if self.aot_step is not None and self.aot_step.current(self.model, self.dtype):
            return True
        return package_kept(self.model, self.dtype)

    def mode(self, compile: bool | None = None, aot: bool | None = None) -> StepMode:
        """The decode steps of one call: the engine's choice, with a call's `compile`/`aot` on top
        (None keeps the engine's; `aot=True` also compiles the steps the package does not serve)."""
        default_aot = self.compile_mode == "aot" or (self.compile_mode == "auto" and self.aot_ready())
        use_aot = default_aot if aot is None else aot
        use_compile = compile if compile is not None else bool(aot) or self.compile_mode in ("compile", "aot")
        needs_compiler = use_compile or (use_aot and not self.aot_ready())
        if needs_compiler and self.device.type == "cpu":
            check_compiler()
        return StepMode(aot=use_aot, compile=use_compile)

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
    def new_batch(
        self,
        prompts: list[list[int]],
        capacity: int,
        pad_token_id: int = 0,
        mode: StepMode | None = None,
        prefix_embeds: torch.Tensor | None = None,
    ) -> Batch:
        """Allocate the cache for `capacity` slots and lay the prompts out left-padded (not run yet);
        `mode` (default: the engine's) says how its one-token steps run. With `prefix_embeds` (B, P, C),
        the first P ids of each prompt are placeholders whose slots prefill fills with those vectors."""
        if prefix_embeds is not None:
            P = prefix_embeds.shape[1]
            if prefix_embeds.shape[0] != len(prompts) or any(len(p) < P for p in prompts):
                raise ValueError(
                    f"prefix_embeds {tuple(prefix_embeds.shape)} does not fit {len(prompts)} prompts"
                )
        width = max(len(p) for p in prompts)
        if capacity < width:
            raise ValueError(f"capacity {capacity} is smaller than the longest prompt ({width})")
        batch = self.empty_batch(len(prompts), capacity, pad_token_id, mode)
        for i, ids in enumerate(prompts):
            batch.tokens[i, width - len(ids) : width] = torch.tensor(ids, dtype=torch.long)
        batch.cache.starts = torch.tensor([width - len(p) for p in prompts], device=self.device)
        batch.prompt_slots = width
        batch.padded = any(len(p) != width for p in prompts)
        if prefix_embeds is not None:
            batch.prefix_embeds = prefix_embeds.to(device=self.device, dtype=self.dtype)
        return batch

    @torch.inference_mode()
    def empty_batch(
        self, rows: int, capacity: int, pad_token_id: int = 0, mode: StepMode | None = None
    ) -> Batch:
        """A batch of `rows` empty rows with a cache of `capacity` slots (rows fill up by `Batch.join`)."""
        capacity = min(capacity, self.max_seq_len)
        device = self.device
        return Batch(
            cache=KVCache.allocate(self.config, rows, capacity, dtype=self.dtype, device=device),
            tokens=torch.full((rows, capacity), pad_token_id, dtype=torch.long, device=device),
            prompt_slots=0,
            padded=False,
            mode=mode if mode is not None else self.mode(),
        )

    @torch.inference_mode()
    def prefill(self, batch: Batch) -> torch.Tensor:
        """Run the prompts through the model; return the next-token logits (B, V) of each row.

        Only the last position goes through the LM head (a long prompt would otherwise materialise
        T x V logits that nobody reads)."""
        width = batch.prompt_slots
        ids, args = self._prefill_args(batch)
        if self._split_head:
            logits = self.model.lm_head(self.model.hidden_states(ids, **args)[:, -1])
        else:
            logits = self.model(ids, **args)[:, -1]
        batch.cache.advance(width)
        return logits.float()

    def _prefill_args(self, batch: Batch) -> tuple[torch.Tensor | None, dict[str, Any]]:
        """The prompt slots' token ids and the forward's keyword arguments; with a prefix of vectors,
        ids are None and `inputs_embeds` holds every slot's input vector (the prefix's in its slots)."""
        width = batch.prompt_slots
        slots = torch.arange(width, device=batch.tokens.device)
        positions = (slots[None, :] - batch.cache.starts[:, None]).clamp(min=0)  # 0 at a row's first token
        mask = batch.valid_slots(width) if batch.padded else None
        args = dict(positions=positions, cache=batch.cache, attention_mask=mask)
        if batch.prefix_embeds is None:
            return batch.tokens[:, :width], args
        prefix = batch.prefix_embeds  # (B, P, C)
        x = self.model.tok_emb(batch.tokens[:, :width])  # (B, width, C)
        where = batch.cache.starts[:, None] + torch.arange(prefix.shape[1], device=x.device)  # (B, P)
        x = x.scatter(1, where[..., None].expand_as(prefix), prefix.to(x.dtype))
        return None, dict(args, inputs_embeds=x)

    @torch.inference_mode()
    def step(self, batch: Batch, tokens: torch.Tensor) -> torch.Tensor:
        """Append `tokens` (B,) or (B, T) to every row; return their logits (B, V) or (B, T, V).

        Tokens for fewer rows than the batch has, R < B, step the first R rows only: the others (free
        rows of a continuous batch) keep what they hold and are masked out until a sequence joins."""
        whole = batch
        if tokens.shape[0] < batch.size:
            batch = batch.head(tokens.shape[0])
        single = tokens.dim() == 1
        if single:
            tokens = tokens[:, None]
        T = tokens.shape[1]
        start, end = batch.length, batch.length + T
        if end > batch.capacity:
            raise LMForgeError(f"generation ran past the allocated {batch.capacity} slots")
        batch.tokens[:, start:end] = tokens
        positions = batch.next_position[:, None] + torch.arange(T, device=tokens.device)
        mask = batch.valid_slots(end) if batch.padded else None
        kind = "eager"
        if T == 1 and batch.mode.aot and serves(batch.size, batch.padded, end, batch.capacity):
            kind = "aot"
        elif T == 1 and batch.mode.compile:
            kind = "compile"
        if kind == "eager":
            logits = self.model(tokens, positions=positions, cache=batch.cache, attention_mask=mask)
        else:
            # the batch's own slots, not the caller's tensor: an inference tensor every time (a plain
            # one would miss the compiled graph's guards and compile it again)
            tokens = batch.tokens[:, start:end]
            rope = self.model.rope(positions, self.dtype) if self._rope else None
            if kind == "aot":
                logits = self._aot_step(batch)(tokens, positions, batch.cache, rope)
            else:
                if self.compiled_forward is None:
                    self.compiled_forward = compile_forward()
                torch._dynamo.mark_static(tokens, 1)  # the token dimension is always 1 here
                logits = self.compiled_forward(self.model, tokens, positions, batch.cache, mask, rope)
        self._count(batch, kind)
        batch.cache.advance(T)
        if batch is not whole:
            whole.follow(batch)
        logits = logits.float()
        return logits[:, 0] if single else logits

    def _aot_step(self, batch: Batch) -> AOTStep:
        """The engine's AOT runner, checked once per batch against the model (moved tensors, another
        dtype or thread count need a new one)."""
        if not batch.aot_checked:
            if self.aot_step is None or not self.aot_step.current(self.model, self.dtype):
                self.aot_step = AOTStep(self.model, self.dtype)
            batch.aot_checked = True
        return self.aot_step

    def _count(self, batch: Batch, kind: str) -> None:
        batch.step_counts[kind] += 1
        batch.last_step = kind
        self.step_counts[kind] += 1

    @torch.inference_mode()
    def step_hidden(self, batch: Batch, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `step` for (B,) tokens, but also return the final hidden states (B, C) (contrastive search)."""
        start, end = batch.length, batch.length + 1
        if end > batch.capacity:
            raise LMForgeError(f"generation ran past the allocated {batch.capacity} slots")
        batch.tokens[:, start] = tokens
        mask = batch.valid_slots(end) if batch.padded else None
        h = self.model.hidden_states(
            tokens[:, None], positions=batch.next_position[:, None], cache=batch.cache, attention_mask=mask
        )
        logits = self.model.lm_head(h)
        self._count(batch, "eager")
        batch.cache.advance(1)
        return logits[:, 0].float(), h[:, 0].float()

    @torch.inference_mode()
    def prefill_hidden(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `prefill`, but also return the hidden states (B, prompt_slots, C) of the prompt."""
        ids, args = self._prefill_args(batch)
        h = self.model.hidden_states(ids, **args)
        logits = self.model.lm_head(h[:, -1])
        batch.cache.advance(batch.prompt_slots)
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
