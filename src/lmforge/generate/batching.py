"""Continuous batching: requests join one running batch and leave it at any step, each with its own options.

A server receives requests at any time, of any length. Decoding them one at a time wastes the hardware
(on a memory-bound CPU a step over 8 rows costs little more than a step over 1); decoding them in fixed
batches makes every request wait for the longest one. `ContinuousBatcher` keeps one running batch:

```python
from lmforge.generate import ContinuousBatcher
batcher = ContinuousBatcher(lm, max_batch=8)
a = batcher.add("Once upon a time", max_new_tokens=64, do_sample=True, temperature=0.8, seed=1)
b = batcher.add([1, 2, 3], max_new_tokens=8, stop=["\\n"])       # token ids; its own options
while not batcher.idle:
    for event in batcher.step():                                  # one token per running request
        print(event.request_id, repr(event.text), event.finish_reason)
```

- `add(prompt, **options)` validates the options like `generate` does (a bad one raises here) and queues
  the request; `cancel(request_id)` drops it, queued or running.
- `step()` runs one decode step over every running request, then fills the free rows with queued
  requests. The requests admitted in one step are prefilled together (one left-padded forward, up to
  `prefill_tokens` prompt tokens per step; a single request always fits, so a long prompt is never
  starved), so a burst of arrivals waits for one prefill rather than one each. Each takes its first
  token from that prefill, and its keys and values are copied into a free row of the running cache so
  that they end at the cache's shared clock (`Batch.join`); from the next step on it decodes with the
  others. A request that finishes frees its row at once (`Batch.release`). A step runs over the rows up
  to the last running one only (a join takes the lowest free row): a batch made for 16 that serves 8
  steps 8 rows, not 16 (compiled steps: the next power of two from 2, see `step_rows` and `warm_up`).
- Each request has its own `GenerationConfig`, processor pipeline (it sees only its own tokens), seeded
  `torch.Generator` (seeded as a lone run seeds it), `StopChecker` and constraint state: it produces the
  tokens it produces alone, whatever runs beside it (to float rounding: a batched matmul may round
  differently from a single-row one; the tests check token equality).

The cache keeps a fill level per row (`lmforge.generate.cache`). When the clock reaches the capacity,
every row moves to end at the longest running row's length (compaction, `Batch.relayout`); the capacity
doubles, up to the model's context, when compaction would free less than a quarter of it or a new
request needs more room (unless a fixed `capacity` was given, and then a request that needs more is
refused at `add`).

Greedy and sampled decoding are supported, with every processor and output constraint. Beam search,
contrastive search/decoding and speculative decoding advance a request by several rows or tokens at once
and are refused at `add`; so are `num_return_sequences > 1` (add the prompt several times) and per-request
`compile`/`aot` (every request shares the batch's steps: the model's load-time choice decides them).
`step()` is not thread-safe: one loop (a server's scheduler task) calls it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lmforge.errors import LMForgeError
from lmforge.generate.api import Completion, Run, engine_of, prompt_list
from lmforge.generate.engine import Batch, Engine, StopChecker, decode_step_name
from lmforge.generate.search import DecodeOptions, choose, emit_step
from lmforge.generate.stream import DeltaStream


@dataclass
class Event:
    """What one request produced in one `step()`: normally one token, and the text it completed."""

    request_id: int
    token_ids: list[int]
    text: str  # new text; a possible start of a stop string is held back until it is decided
    finish_reason: str | None = None  # "stop" or "length" on the request's last event
    logprobs: list[float] | None = None  # on request: model log-prob of each token
    top_logprobs: list[dict[int, float]] | None = None  # on request: top-n alternatives per token
    completion: Completion | None = None  # on the last event: the whole result, as `generate` gives it

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class _Request:
    """One request's own state: its options, stop rules, constraint, generator and output so far."""

    request_id: int
    prompt: list[int]
    max_new_tokens: int
    stopper: StopChecker
    options: DecodeOptions
    follower: DeltaStream
    row: int | None = None  # its row of the running batch, once it joined
    pending: torch.Tensor | None = None  # (1,) the chosen token the model has not seen yet
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] = field(default_factory=list)
    steps: set[str] = field(default_factory=set)  # the kinds of decode step it went through

    @property
    def finished(self) -> bool:
        return self.stopper.finished[0]


class _Bare:
    """An `Engine` given alone: token-id prompts, no tokenizer, no generation defaults."""

    def __init__(self, engine: Engine):
        self.engine, self.model, self.tokenizer, self.generation_config = engine, engine.model, None, {}


class ContinuousBatcher:
    """Decode many requests in one running batch that they join and leave at any step.

    Args:
        lm: a loaded `LM` (its engine, tokenizer and generation defaults are used), or an `Engine`
            (prompts are then token ids, and there is no text).
        max_batch: rows decoded together; further requests wait in a queue (first come, first served).
        capacity: cache slots per row. None: sized for the requests and grown as needed, up to the
            model's context; a number: fixed, and a request that needs more (prompt + max_new_tokens)
            is refused at `add`.
        prefill_tokens: padded prompt slots prefilled together in one step (rows x longest prompt);
            queued requests beyond it join at the next step. 1 prefills each request alone.
    """

    def __init__(
        self, lm: Any, *, max_batch: int = 8, capacity: int | None = None, prefill_tokens: int = 2048
    ):
        self.lm = _Bare(lm) if isinstance(lm, Engine) else lm
        self.engine = engine_of(self.lm)
        if not isinstance(max_batch, int) or max_batch < 1:
            raise LMForgeError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        if capacity is not None and not 2 <= capacity <= self.engine.max_seq_len:
            raise LMForgeError(
                f"capacity={capacity} must be between 2 and the model's context of {self.engine.max_seq_len}"
            )
        if not isinstance(prefill_tokens, int) or prefill_tokens < 1:
            raise LMForgeError(f"prefill_tokens must be an integer >= 1, got {prefill_tokens!r}")
        self.max_batch, self.fixed_capacity, self.prefill_tokens = max_batch, capacity, prefill_tokens
        self.mode = self.engine.mode()  # the model's load-time choice of decode step
        self.batch: Batch | None = None  # the running batch, allocated by the first request that joins
        self._running: dict[int, _Request] = {}  # row -> request
        self._waiting: deque[_Request] = deque()
        self._next_id = 0

    # -- the queue -------------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Requests decoding in the batch."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Requests queued for a free row."""
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        return not self._running and not self._waiting

    def add(self, prompt: str | Sequence[int], **options: Any) -> int:
        """Queue one prompt (text, or token ids) with its generation options; return its request id.

        The options are `GenerationConfig`'s fields, checked against the model as `generate` checks them:
        a bad option, an over-long prompt or an unsupported strategy raises `LMForgeError` here."""
        prompts, single = prompt_list(prompt)
        if not single:
            raise LMForgeError(
                "add() takes one prompt (text or a list of token ids); call it once per prompt"
            )
        for name in ("draft", "amateur"):
            if name in options:
                raise LMForgeError(f"continuous batching runs greedy or sampled decoding: drop {name}=")
        for name in ("compile", "aot"):
            if options.get(name) is not None:
                raise LMForgeError(
                    f"{name}= is not a per-request option here: the batch's steps are shared, and run as "
                    "the model was loaded (lmforge.load(..., compile=...))"
                )
        with torch.inference_mode():
            run = Run(self.lm, prompts, options, None, None)
        if run.strategy not in ("greedy", "sample"):
            raise LMForgeError(
                f"continuous batching runs greedy or sampled decoding, not {run.strategy.replace('_', ' ')}: "
                "use generate() for it"
            )
        if run.config.num_return_sequences > 1:
            raise LMForgeError(
                "continuous batching returns one sequence per request: add the prompt once per sequence "
                "(with different seeds)"
            )
        ids = run.prompts[0]
        need = len(ids) + run.config.max_new_tokens
        if self.fixed_capacity is not None and need > self.fixed_capacity:
            raise LMForgeError(
                f"the prompt ({len(ids)} tokens) plus max_new_tokens={run.config.max_new_tokens} needs {need} "
                f"cache slots, more than this batcher's capacity of {self.fixed_capacity}"
            )
        constraint = run.constraint(1)
        options_ = DecodeOptions(
            pipeline=run.pipeline(len(ids), constraint),  # it sees only its own tokens: unpadded
            constraint=constraint,
            do_sample=run.config.do_sample,
            generator=run.generator,
            pad_token_id=run.pad,
            logprobs=run.config.logprobs,
            top_logprobs=run.config.top_logprobs or 0,
        )
        stopper = run.stopper(1)
        request_id, self._next_id = self._next_id, self._next_id + 1
        self._waiting.append(
            _Request(
                request_id,
                ids,
                run.config.max_new_tokens,
                stopper,
                options_,
                DeltaStream(stopper, request_id),
            )
        )
        return request_id

    def cancel(self, request_id: int) -> bool:
        """Drop a queued or running request (its row is freed at once); False if it is not here."""
        for request in self._waiting:
            if request.request_id == request_id:
                self._waiting.remove(request)
                return True
        for row, request in self._running.items():
            if request.request_id == request_id:
                self._leave(row)
                return True
        return False

    # -- decoding --------------------------------------------------------------------------------

    def step(self) -> list[Event]:
        """One decode step for every running request, then queued requests into the free rows, prefilled
        together within `prefill_tokens` (each gets its first token from that prefill; the rest wait for
        the next step). Returns one `Event` per request that advanced."""
        events: list[Event] = []
        with torch.inference_mode():
            if self._running:
                self._decode(events)
            if self._waiting and len(self._running) < self.max_batch:
                self._admit(self._next_group(), events)
        return events

    def _next_group(self) -> list[_Request]:
        """The queued requests to prefill together: first come first, while rows are free and the
        padded prompt slots (rows x longest prompt) stay within `prefill_tokens`; at least one."""
        group = [self._waiting.popleft()]
        width = len(group[0].prompt)
        free = self.max_batch - len(self._running)
        while self._waiting and len(group) < free:
            wider = max(width, len(self._waiting[0].prompt))
            if wider * (len(group) + 1) > self.prefill_tokens:
                break
            group.append(self._waiting.popleft())
            width = wider
        return group

    def drain(self) -> Iterator[Event]:
        """Step until every request has finished, yielding each event."""
        while not self.idle:
            yield from self.step()

    def warm_up(self) -> None:
        """Run once every kind of decode step this batcher can take, on a scratch batch of its size:
        compiled steps compile here, not under the first requests (one to two minutes a graph for
        SmolLM2 on two cores, unless inductor's on-disk cache has it). torch.compile makes a graph for
        each combination of: with or without a mask (a row that starts after slot 0), and the clock at
        the cache's last slot or before it (a full-length view of the cache is contiguous, a shorter one
        is not); each row count `step_rows` uses is run. Eager steps run once too, over all rows and one."""
        if self.batch is not None:
            raise LMForgeError("warm_up() runs before the first request")
        capacity = self.fixed_capacity or min(self.engine.max_seq_len, 256)
        batch = self.engine.empty_batch(self.max_batch, capacity, mode=self.mode)
        # eager: a full batch and a lone row (first-call allocations and kernel choices for both)
        counts = compiled_row_counts(self.max_batch) if self.mode.compile else sorted({self.max_batch, 1})
        clocks = (max(2, capacity // 2), capacity - 1) if self.mode.compile else (capacity // 2,)
        with torch.inference_mode():
            for rows in counts:
                for padded in (False, True):
                    for clock in clocks:
                        batch.cache.length = clock
                        batch.cache.starts.zero_()
                        batch.cache.starts[rows - 1] = int(padded)  # a row after slot 0: the mask
                        batch.padded = padded
                        self.engine.step(
                            batch, torch.zeros(rows, dtype=torch.long, device=self.engine.device)
                        )

    def _decode(self, events: list[Event]) -> None:
        batch = self.batch
        self._make_room()
        # rows above the last running one are free: they do not step (a join takes the lowest free row)
        rows = step_rows(max(self._running) + 1, batch.size, batch.mode.compile)
        tokens = torch.zeros(rows, dtype=torch.long, device=self.engine.device)
        for row, request in self._running.items():
            tokens[row] = request.pending[0]
        logits = self.engine.step(batch, tokens)
        end = batch.length
        starts = batch.cache.starts.tolist()
        for row, request in list(self._running.items()):
            request.steps.add(batch.last_step)
            # the request's own tokens, as a lone run's processors see them
            ids = batch.tokens[row : row + 1, starts[row] : end]
            scores = request.options.pipeline(ids, logits[row : row + 1])
            token = choose(scores, request.options.do_sample, request.options.generator)
            events.append(self._emit(request, token, logits[row : row + 1]))
            if request.finished:
                self._leave(row)

    def _admit(self, requests: list[_Request], events: list[Event]) -> None:
        """Prefill requests together (left-padded), take each one's first token with its own
        processors and generator, then move each unfinished one into a free row."""
        prompts = [r.prompt for r in requests]
        group = self.engine.new_batch(
            prompts, max(map(len, prompts)), requests[0].options.pad_token_id, self.mode
        )
        logits = self.engine.prefill(group)
        starts = group.cache.starts.tolist()
        for i, request in enumerate(requests):
            ids = group.tokens[i : i + 1, starts[i] : group.length]  # its own tokens, unpadded
            scores = request.options.pipeline(ids, logits[i : i + 1])
            token = choose(scores, request.options.do_sample, request.options.generator)
            events.append(self._emit(request, token, logits[i : i + 1]))
            if not request.finished:
                self._join(request, group, i)

    def _emit(self, request: _Request, token: torch.Tensor, logits: torch.Tensor) -> Event:
        step = emit_step(token, logits, request.stopper, request.options)
        request.pending = step.tokens
        (delta,) = request.follower.deltas(step)
        request.token_ids += delta.token_ids
        request.logprobs += delta.logprobs or []
        request.top_logprobs += delta.top_logprobs or []
        event = Event(
            request.request_id,
            delta.token_ids,
            delta.text,
            delta.finish_reason,
            delta.logprobs,
            delta.top_logprobs,
        )
        if request.finished:
            options = request.options
            event.completion = Completion(
                text=request.stopper.texts[0],
                token_ids=request.token_ids,
                finish_reason=request.stopper.finish_reason(0),
                prompt_tokens=len(request.prompt),
                logprobs=request.logprobs if options.logprobs else None,
                top_logprobs=request.top_logprobs if options.top_logprobs else None,
                decode_step=decode_step_name(request.steps),
            )
        return event

    # -- rows and slots --------------------------------------------------------------------------

    def _join(self, request: _Request, prefilled: Batch, source_row: int) -> None:
        """Copy a prefilled request (`source_row` of `prefilled`) into a free row, moving the running
        rows first if the clock is before its length or the cache is too small for it."""
        length = prefilled.length - int(prefilled.cache.starts[source_row])
        need = length + request.max_new_tokens
        if self.batch is None:
            capacity = self.fixed_capacity or min(self.engine.max_seq_len, max(need, 256))
            self.batch = self.engine.empty_batch(
                self.max_batch, capacity, request.options.pad_token_id, self.mode
            )
        batch = self.batch
        capacity = batch.capacity
        if need > capacity:  # only without a fixed capacity (add() refused it otherwise)
            capacity = min(self.engine.max_seq_len, max(need, 2 * capacity))
        if batch.length < length or capacity != batch.capacity:
            self._release_free_rows()
            batch.relayout(max(batch.length, length), capacity)
        row = min(set(range(batch.size)) - set(self._running))
        batch.join(row, prefilled, source_row)
        request.row = row
        self._running[row] = request

    def _leave(self, row: int) -> None:
        del self._running[row]
        self.batch.release(row)
        if not self._running:  # an empty batch restarts at slot 0: nothing to move
            self._release_free_rows()
            self.batch.relayout(0)

    def _release_free_rows(self) -> None:
        """Free rows keep stepping (with padding); forget what they wrote, so they hold no slots."""
        free = sorted(set(range(self.batch.size)) - set(self._running))
        if free:
            self.batch.release(free)

    def _make_room(self) -> None:
        """Before a step: when the clock is at the capacity, move every row to end at the longest
        running row's length (and, without a fixed capacity, double it if that frees too little)."""
        batch = self.batch
        if batch.length < batch.capacity:
            return
        self._release_free_rows()
        longest = int(batch.cache.fill_levels.max())
        capacity = batch.capacity
        if self.fixed_capacity is None and capacity - longest < capacity // 4:
            capacity = min(self.engine.max_seq_len, 2 * capacity)
        batch.relayout(longest, capacity)


def step_rows(needed: int, size: int, compiled: bool) -> int:
    """The rows a decode step runs when the first `needed` of a `size`-row batch are in use: those rows
    (eager), or the next power of two from 2 up to `size` (compiled: torch.compile makes one graph for
    every row count from 2, which `warm_up` compiles, and another for exactly one row; a lone request
    steps 2 rows, about what one costs, and saves compiling that one)."""
    if not compiled:
        return needed
    return min(size, 1 << max(1, (needed - 1).bit_length()))


def compiled_row_counts(size: int) -> list[int]:
    """Every row count `step_rows` gives a compiled `size`-row batch, largest first."""
    counts = {step_rows(n, size, True) for n in range(1, size + 1)}
    return sorted(counts, reverse=True)
