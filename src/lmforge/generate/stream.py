"""Streaming: turn decoding steps into text deltas.

Text comes from the tokenizer's incremental detokenizer (inside `StopChecker`), so a multi-byte
character split over several tokens (emoji, CJK) is emitted once it is complete. While a stop string
could still be forming, its possible start is held back, so the deltas always concatenate to exactly the
final text of `generate`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from lmforge.generate.engine import Batch, StopChecker
from lmforge.generate.search import Step


@dataclass
class Delta:
    """A piece of one sequence's output: new text and the token(s) that produced it."""

    text: str
    index: int = 0  # which returned sequence (prompt-major, num_return_sequences per prompt)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None  # model log-prob of each token (on request)
    top_logprobs: list[dict[int, float]] | None = None  # top-n alternatives per token (on request)
    finish_reason: str | None = None  # set on the last delta of a sequence: "stop" or "length"
    decode_step: str | None = None  # set on the last delta: which decode step ran (`Completion.decode_step`)


class DeltaStream:
    """Follows one group of rows (one `StopChecker`) and emits what each row added at every step."""

    def __init__(self, stopper: StopChecker, first_index: int = 0, batch: Batch | None = None):
        self.stopper = stopper
        self.first_index = first_index
        self.batch = batch  # the rows' batch: its decode steps go on each row's last delta
        self.emitted = [0] * stopper.batch_size
        self.done = [False] * stopper.batch_size

    def deltas(self, step: Step) -> Iterator[Delta]:
        hold = self.stopper.hold_back
        for row, active in enumerate(step.active):
            if not active or self.done[row]:
                continue
            text = self.stopper.texts[row]
            finished = self.stopper.finished[row]
            safe = len(text) if finished else max(self.emitted[row], len(text) - hold)
            delta = Delta(
                text=text[self.emitted[row] : safe],
                index=self.first_index + row,
                token_ids=[int(step.tokens[row])],
            )
            self.emitted[row] = safe
            if step.logprobs is not None:
                delta.logprobs = [float(step.logprobs[row])]
            if step.top_ids is not None:
                delta.top_logprobs = [
                    dict(zip(step.top_ids[row].tolist(), step.top_logprobs[row].tolist(), strict=True))
                ]
            if finished:
                delta.finish_reason = self.stopper.finish_reason(row)
                delta.decode_step = self.batch.decode_step if self.batch is not None else None
                self.done[row] = True
            yield delta
