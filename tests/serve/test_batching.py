"""Batching changes nothing: concurrent requests share the running batch (fewer steps than tokens) and
each returns exactly what it returns alone; a client that goes away mid-stream frees its row at the
next step (the metrics show it) while the others finish."""

from __future__ import annotations

import asyncio
import time

PROMPTS = [
    "hello world",
    "the quick brown fox",
    "to be or not to be, that is the question",
    "fine thanks",
    "a",
    "jumps over the lazy dog and then some more words to make it long",
    "how are you?",
    '{"name": "Ada"',
    "question",
    "x y z",
    "and you",
    "brown dog",
    "be",
    "world, how",
    "the lazy",
    "thanks, and you? fine",
]


def test_sixteen_concurrent_greedy_requests_each_give_their_lone_text(tiny_server, tiny_lm):
    lengths = [4 + 2 * i for i in range(16)]  # 4..34 new tokens: requests leave at different steps
    before = tiny_server.metrics()

    async def one(client, i):
        messages = [{"role": "user", "content": PROMPTS[i]}]
        args = dict(model="tiny", messages=messages, temperature=0, max_tokens=lengths[i])
        if i % 2:  # half of them stream
            stream = await client.chat.completions.create(**args, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        reply = await client.chat.completions.create(**args)
        return reply.choices[0].message.content

    async def run():
        async with tiny_server.async_client() as client:
            return await asyncio.gather(*(one(client, i) for i in range(16)))

    texts = asyncio.run(run())
    after = tiny_server.metrics()
    for i, text in enumerate(texts):
        alone = tiny_lm.chat([{"role": "user", "content": PROMPTS[i]}], max_new_tokens=lengths[i], aot=False)
        assert text == alone.text, i
    steps = after["lmforge_batch_steps_total"] - before["lmforge_batch_steps_total"]
    tokens = after["lmforge_generation_tokens_total"] - before["lmforge_generation_tokens_total"]
    assert tokens == sum(lengths)
    assert steps < tokens / 3  # many requests advanced in each step: they were batched


def test_a_client_that_leaves_mid_stream_frees_its_row(tiny_server, tiny_lm):
    before = tiny_server.metrics()
    long = dict(model="tiny", max_tokens=1000, temperature=0, extra_body={"ignore_eos": True}, stream=True)
    others = [{"role": "user", "content": p} for p in PROMPTS[:3]]

    async def run():
        async with tiny_server.async_client() as client:
            stream = await client.chat.completions.create(
                messages=[{"role": "user", "content": "go on"}], **long
            )
            seen = 0
            async for _ in stream:
                seen += 1
                if seen == 5:
                    break
            tasks = [
                client.chat.completions.create(model="tiny", messages=[m], temperature=0, max_tokens=20)
                for m in others
            ]
            await stream.close()  # the client goes away mid-stream
            return await asyncio.gather(*tasks)

    replies = asyncio.run(run())
    for message, reply in zip(others, replies):
        assert reply.choices[0].message.content == tiny_lm.chat([message], max_new_tokens=20, aot=False).text
    deadline = time.monotonic() + 30
    while True:
        after = tiny_server.metrics()
        cancelled = after['lmforge_sequences_finished_total{reason="cancelled"}'] - before.get(
            'lmforge_sequences_finished_total{reason="cancelled"}', 0
        )
        if cancelled == 1 and after["lmforge_running_sequences"] == 0:
            break
        assert time.monotonic() < deadline, "the cancelled request kept its row"
        time.sleep(0.05)
    generated = after["lmforge_generation_tokens_total"] - before["lmforge_generation_tokens_total"]
    assert generated < 1000  # the long one stopped well before its 1000 tokens
    assert after["lmforge_kv_cache_usage_ratio"] == 0
