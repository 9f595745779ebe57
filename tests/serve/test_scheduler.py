"""The scheduler in-process, where a decode step can be made to fail: the sequences that had started get
the error, the ones still waiting are added again and give their lone tokens, and the scheduler goes on
serving; the queue limit is all-or-nothing for a request's tickets."""

from __future__ import annotations

import asyncio

import pytest

from lmforge.errors import LMForgeError
from lmforge.lm import LM
from lmforge.serve.metrics import Metrics
from lmforge.serve.scheduler import QueueFull, Scheduler, Ticket
from tiny import tiny_model


@pytest.fixture(scope="module")
def lm():
    return LM(tiny_model("llama", seed=3), None, {}, compile="eager")


async def collect(queue: asyncio.Queue, count: int) -> dict:
    """Each ticket's completion (or exception) by index, once `count` of them ended."""
    results: dict = {}
    while len(results) < count:
        index, item = await queue.get()
        if isinstance(item, Exception):
            results[index] = item
        elif item.finished:
            results[index] = item.completion
    return results


def test_a_failed_step_fails_the_started_sequences_and_keeps_the_waiting_ones(lm):
    metrics = Metrics()
    scheduler = Scheduler(lm, max_batch=1, max_queue=4, metrics=metrics)
    real_step, calls = scheduler.batcher.step, [0]

    def flaky_step():
        calls[0] += 1
        if calls[0] == 3:  # the first ticket has started; the second waits for the row
            raise RuntimeError("boom")
        return real_step()

    scheduler.batcher.step = flaky_step

    async def run():
        scheduler.start(asyncio.get_running_loop())
        queue: asyncio.Queue = asyncio.Queue()
        scheduler.submit([Ticket([1, 2, 3], {"max_new_tokens": 30}, 0, queue)])
        scheduler.submit([Ticket([4, 5], {"max_new_tokens": 5}, 1, queue)])
        first = await collect(queue, 2)
        again = Ticket([6], {"max_new_tokens": 4}, 2, queue)  # the scheduler still serves
        scheduler.submit([again])
        return first | await collect(queue, 1)

    try:
        results = asyncio.run(run())
    finally:
        scheduler.stop()
    assert isinstance(results[0], LMForgeError) and "boom" in str(results[0])
    assert results[1].token_ids == lm.generate([4, 5], max_new_tokens=5, aot=False).token_ids
    assert results[2].token_ids == lm.generate([6], max_new_tokens=4, aot=False).token_ids
    assert metrics.sequences.labels("error")._value.get() == 1
    assert scheduler.active == 0


def test_the_queue_limit_takes_a_request_whole_or_not_at_all(lm):
    scheduler = Scheduler(lm, max_batch=2, max_queue=1, metrics=Metrics())
    queue: asyncio.Queue = asyncio.Queue()
    tickets = [Ticket([1], {"max_new_tokens": 2}, i, queue) for i in range(4)]
    with pytest.raises(QueueFull, match="room for 3"):
        scheduler.submit(tickets)
    assert scheduler.active == 0
    scheduler.submit(tickets[:3])
    assert scheduler.active == 3
    with pytest.raises(QueueFull):
        scheduler.submit(tickets[3:])


@pytest.mark.slow  # compiles the tiny model's decode graphs (about 20 s)
def test_a_warmed_up_compiled_batch_never_compiles_again_while_serving(monkeypatch):
    """After `warm_up`, requests of any length joining and leaving at random run on the graphs it
    compiled: a recompile mid-serve would stall every stream for seconds. Compiled steps run a power
    of two of rows from 2 (up to the batch's size), eager ones the rows up to the last running one."""
    import random

    import torch._dynamo

    from lmforge.serve.app import warm_up

    lm = LM(tiny_model("llama", seed=3), None, {}, compile="compile")
    scheduler = Scheduler(lm, max_batch=6, max_queue=4, metrics=Metrics())
    warm_up(lm, scheduler)
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    stepped, step = [], lm.engine.step
    monkeypatch.setattr(
        lm.engine, "step", lambda batch, tokens: stepped.append(len(tokens)) or step(batch, tokens)
    )
    batcher, rng, running = scheduler.batcher, random.Random(0), set()
    for _ in range(200):
        if rng.random() < 0.5 and batcher.running + batcher.waiting < 8:
            prompt = [1 + rng.randrange(50) for _ in range(rng.randint(1, 40))]
            batcher.add(prompt, max_new_tokens=rng.randint(1, 30), ignore_eos=True)
        if not batcher.idle:
            running.add(batcher.running)
            batcher.step()
    events = list(batcher.drain())
    assert running >= {1, 2, 3, 4, 5, 6} and events  # every row count came up
    assert set(stepped) == {2, 4, 6}  # the row counts warm_up compiled, each of them used
    assert lm.engine.step_counts["eager"] == 0 and lm.engine.step_counts["compile"] > 50
