"""The scheduler: one thread owns the model's `ContinuousBatcher` and keeps the running batch stepping.

Request handlers run on the server's event loop; the batcher is not thread-safe, so they never touch
it. A handler `submit`s one `Ticket` per sequence it wants (n choices = n tickets); the scheduler
thread adds queued tickets to the batcher between steps, calls `step()` while there is work, and hands
each step's events back to the event loop in one call, where every ticket's asyncio queue receives its
own. `cancel` (a client that went away) drops the sequence at the next step, freeing its row.

Failures stay with their request: an option the batcher refuses fails that ticket alone (its handler
answers 400). An exception inside a step cannot be pinned on one row, so the sequences that had
started get an error and the batcher is rebuilt; sequences still waiting are added again to the new
one (they had produced nothing, so they give what they would have given), and the server goes on.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import LMForgeError
from lmforge.generate import ContinuousBatcher
from lmforge.generate.batching import Event
from lmforge.serve.metrics import Metrics

log = logging.getLogger("lmforge.serve")


class QueueFull(LMForgeError):
    """More sequences than the running batch and the queue can hold."""


class Refused(Exception):
    """The batcher refused a ticket's options (`.cause` says why): the request's own fault."""

    def __init__(self, cause: Exception):
        super().__init__(str(cause))
        self.cause = cause


@dataclass(eq=False)
class Ticket:
    """One sequence a handler waits for: its prompt ids and generation options, and the queue its
    events arrive on as `(index, Event)`, or `(index, Exception)` when it failed."""

    prompt: list[int]
    options: dict[str, Any]
    index: int
    events: asyncio.Queue
    arrived: float = field(default_factory=time.perf_counter)
    request_id: int | None = None
    cancelled: bool = False
    done: bool = False
    retries: int = 0
    first_token_at: float | None = None
    last_token_at: float | None = None
    generated: int = 0  # tokens so far


class Scheduler:
    """Owns a `ContinuousBatcher` in a thread of its own; see the module docstring."""

    def __init__(
        self, lm: Any, *, max_batch: int, max_queue: int, metrics: Metrics, prefill_tokens: int = 2048
    ):
        self.lm, self.max_batch, self.max_queue, self.metrics = lm, max_batch, max_queue, metrics
        self.prefill_tokens = prefill_tokens
        self.batcher = self._new_batcher()
        self._inbox: queue.SimpleQueue[tuple[str, Ticket]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = False
        self._tickets: dict[int, Ticket] = {}  # batcher request id -> ticket (queued in it, or running)
        self._active = 0  # tickets submitted and not finished (the 429 limit counts these)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="lmforge-scheduler", daemon=True)
        metrics.max_batch.set(max_batch)

    # -- the event loop's side ---------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    @property
    def active(self) -> int:
        return self._active

    def submit(self, tickets: list[Ticket]) -> None:
        """Queue tickets for the batch (all or none); raise `QueueFull` when they do not fit."""
        with self._lock:
            if self._active + len(tickets) > self.max_batch + self.max_queue:
                raise QueueFull(
                    f"the server is at capacity ({self._active} sequences running or queued, "
                    f"room for {self.max_batch + self.max_queue}); retry shortly"
                )
            self._active += len(tickets)
        for ticket in tickets:
            self._inbox.put(("add", ticket))
        self._wake.set()

    def cancel(self, tickets: list[Ticket]) -> None:
        """Drop tickets that have not finished (their client went away): freed at the next step."""
        for ticket in tickets:
            if not ticket.done:
                ticket.cancelled = True
                self._inbox.put(("cancel", ticket))
        self._wake.set()

    # -- the scheduler thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            self._take_inbox()
            if self.batcher.idle:
                self._update_gauges()
                self._wake.wait()
                continue
            try:
                events = self.batcher.step()
            except Exception as exc:  # noqa: BLE001 - one bad step must not stop the server
                log.exception("a decode step failed; restarting the batch")
                self._recover(exc)
                continue
            self.metrics.steps.inc()
            self._route(events)
            self._update_gauges()

    def _take_inbox(self) -> None:
        while True:
            try:
                kind, ticket = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                self._add(ticket)
            elif ticket.request_id is not None and self._tickets.pop(ticket.request_id, None) is ticket:
                self.batcher.cancel(ticket.request_id)
                self._finish(ticket, "cancelled")

    def _add(self, ticket: Ticket) -> None:
        if ticket.cancelled:
            self._finish(ticket, "cancelled")
            return
        try:
            ticket.request_id = self.batcher.add(ticket.prompt, **ticket.options)
        except Exception as exc:  # noqa: BLE001 - refused options fail this request alone
            self._finish(ticket, "error")
            self._deliver([(ticket, Refused(exc))])
            return
        self._tickets[ticket.request_id] = ticket
        self.metrics.prompt_tokens.inc(len(ticket.prompt))

    def _route(self, events: list[Event]) -> None:
        now = time.perf_counter()
        out: list[tuple[Ticket, Event | Exception]] = []
        for event in events:
            ticket = self._tickets.get(event.request_id)
            if ticket is None:
                continue
            if ticket.first_token_at is None:
                ticket.first_token_at = now
                self.metrics.ttft.observe(now - ticket.arrived)
            else:
                self.metrics.inter_token.observe(now - ticket.last_token_at)
            ticket.last_token_at = now
            ticket.generated += len(event.token_ids)
            self.metrics.generation_tokens.inc(len(event.token_ids))
            if event.finished:
                del self._tickets[event.request_id]
                self._finish(ticket, event.finish_reason)
            out.append((ticket, event))
        self._deliver(out)

    def _finish(self, ticket: Ticket, reason: str) -> None:
        ticket.done = True
        self.metrics.sequences.labels(reason).inc()
        with self._lock:
            self._active -= 1

    def _deliver(self, items: list[tuple[Ticket, Event | Exception]]) -> None:
        """Hand events to the event loop in one call (each ticket's queue gets its own)."""
        if items and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_put_all, items)

    def _recover(self, exc: Exception) -> None:
        """After a failed step: fail the sequences that had started, re-add the waiting ones."""
        tickets = list(self._tickets.values())
        self._tickets.clear()
        self.batcher = self._new_batcher()
        failed = []
        error = LMForgeError(f"generation failed inside the batch: {type(exc).__name__}: {exc}")
        for ticket in tickets:
            ticket.retries += 1
            if ticket.first_token_at is not None or ticket.retries > 1:
                self._finish(ticket, "error")
                failed.append((ticket, error))
            else:
                ticket.request_id = None
                self._inbox.put(("add", ticket))
        self._deliver(failed)

    def _new_batcher(self) -> ContinuousBatcher:
        return ContinuousBatcher(self.lm, max_batch=self.max_batch, prefill_tokens=self.prefill_tokens)

    def _update_gauges(self) -> None:
        m, b = self.metrics, self.batcher
        m.queue_depth.set(b.waiting + self._inbox.qsize())
        m.running.set(b.running)
        batch = b.batch
        if batch is None:
            m.kv_cache_usage.set(0)
            m.kv_cache_bytes.set(0)
            return
        cache = batch.cache
        # a running row holds its prompt and its tokens so far (the newest is fed at the next step)
        used = sum(len(t.prompt) + t.generated - 1 for t in self._tickets.values() if t.generated)
        m.kv_cache_usage.set(used / (batch.size * batch.capacity))
        m.kv_cache_bytes.set(sum(t.numel() * t.element_size() for t in (*cache.k, *cache.v)))


def _put_all(items: list[tuple[Ticket, Event | Exception]]) -> None:
    for ticket, item in items:
        ticket.events.put_nowait((ticket.index, item))
