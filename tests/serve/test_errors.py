"""Every error is answered in OpenAI's envelope {"error": {"message", "type", "param", "code"}} with its
status: 400 naming the parameter, 404 for an unknown model or path, 401 without the API key, 413 for an
oversized body, 429 with Retry-After when the queue is full; and a failing request leaves the others
and the server unharmed."""

from __future__ import annotations

import asyncio
import time

import httpx2 as httpx
import pytest
import torch
from serve_helpers import API_KEY

from lmforge.io.load import resolve_dtype

MESSAGES = [{"role": "user", "content": "hello world"}]


ANY = object()


def check_envelope(response, status: int, param: object = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not ANY:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


CHAT_400 = [
    ({"temperature": -1}, "temperature", None),
    ({"top_p": 2}, "top_p", None),
    ({"max_tokens": 0}, "max_tokens", None),
    ({"max_completion_tokens": 5000}, "max_completion_tokens", "context_length_exceeded"),
    ({"n": 0}, "n", None),
    ({"n": "two"}, "n", None),
    ({"temprature": 0.5}, "temprature", "unknown_parameter"),
    ({"num_beams": 2}, "num_beams", None),
    ({"logit_bias": {"999999": 5}}, "logit_bias", None),
    ({"frequency_penalty": 3}, "frequency_penalty", None),
    ({"stop": [""]}, "stop", None),
    ({"seed": "x"}, "seed", None),
    ({"top_logprobs": 3}, "top_logprobs", None),  # without logprobs: true
    ({"logprobs": True, "top_logprobs": 50}, "top_logprobs", None),
    ({"stream_options": {"include_usage": True}}, "stream_options", None),  # without stream
    ({"response_format": {"type": "xml"}}, "response_format", None),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": 3}}}, "response_format", None),
    ({"regex": "(unclosed"}, "regex", None),
    ({"regex": "a", "choices": ["b"]}, None, None),  # two constraints
    ({"messages": []}, "messages", None),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages", None),
    ({"messages": [{"role": "user", "content": 5}]}, "messages", None),
    ({"messages": [{"role": "user", "content": "word " * 1200}]}, "messages", "context_length_exceeded"),
]


@pytest.mark.parametrize(("extra", "param", "code"), CHAT_400, ids=[str(c[0])[:40] for c in CHAT_400])
def test_bad_chat_parameters_are_400_naming_them(tiny_server, extra, param, code):
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, **extra}
    with tiny_server.http() as http:
        error = check_envelope(http.post("/v1/chat/completions", json=body), 400, param, code)
    assert error["type"] == "invalid_request_error"
    if param == "temprature":
        assert "did you mean temperature" in error["message"]


def test_bad_bodies_and_completion_prompts_are_400(tiny_server):
    with tiny_server.http() as http:
        check_envelope(http.post("/v1/chat/completions", content=b"{not json"), 400, None, "invalid_json")
        check_envelope(http.post("/v1/chat/completions", json=[1, 2]), 400)
        check_envelope(http.post("/v1/chat/completions", json={"model": "tiny"}), 400, "messages")
        check_envelope(http.post("/v1/completions", json={"prompt": []}), 400, "prompt")
        check_envelope(http.post("/v1/completions", json={"prompt": [10**9]}), 400, "prompt")
        check_envelope(http.post("/v1/completions", json={"prompt": "a", "logprobs": 21}), 400, "logprobs")
        more_than_it_holds = {"prompt": ["a"] * 5, "n": 15}  # 75 sequences; 8 rows + 64 queued
        check_envelope(http.post("/v1/completions", json=more_than_it_holds), 400, "n")
        wrong_type = {"prompt": "a", "stop_token_ids": 0.0}  # found by the fuzz: once a TypeError, a 500
        check_envelope(http.post("/v1/completions", json=wrong_type), 400, "stop_token_ids")
        check_envelope(http.post("/tokenize", json={}), 400, "prompt")
        check_envelope(http.post("/detokenize", json={"tokens": [-1]}), 400, "tokens")
        check_envelope(http.post("/v1/embeddings", json={"input": "x"}), 400, "model")  # no embedding model


def test_unknown_models_and_paths_are_404(tiny_server):
    with tiny_server.http() as http:
        error = check_envelope(
            http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}),
            404,
            "model",
            "model_not_found",
        )
        assert "tiny" in error["message"]  # names what the server does serve
        check_envelope(http.get("/v1/nothing-here"), 404, None, "not_found")
        check_envelope(http.get("/v1/chat/completions"), 405, None, "method_not_allowed")


def test_a_failing_request_leaves_the_others_unharmed(tiny_server, tiny_lm):
    good = {"model": "tiny", "messages": MESSAGES, "temperature": 0, "max_tokens": 25}
    bad = [{"regex": "(("}, {"max_tokens": 10**6}, {"logit_bias": {"-4": 1}}, {"json_schema": {"type": 5}}]

    async def run():
        async with httpx.AsyncClient(base_url=tiny_server.url, timeout=60) as http:
            tasks = []
            for extra in bad * 2:
                tasks.append(http.post("/v1/chat/completions", json={**good, **extra}))
                tasks.append(http.post("/v1/chat/completions", json=good))
            return await asyncio.gather(*tasks)

    responses = asyncio.run(run())
    expected = tiny_lm.chat(MESSAGES, max_new_tokens=25, aot=False).text
    for i, response in enumerate(responses):
        if i % 2:
            assert response.json()["choices"][0]["message"]["content"] == expected
        else:
            check_envelope(response, 400, ANY)
    with tiny_server.http() as http:
        assert http.get("/health").status_code == 200


# -- the limits server: API key, one row, a one-request queue, 4 KiB bodies --------------------------


def test_the_api_key_is_required_where_it_is_set(limits_server):
    import openai

    body = {"messages": MESSAGES, "max_tokens": 2}
    with httpx.Client(base_url=limits_server.url, timeout=30) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
            error = check_envelope(
                http.post("/v1/chat/completions", json=body, headers=headers), 401, None, "invalid_api_key"
            )
            assert error["type"] == "authentication_error"
        check_envelope(http.get("/v1/models"), 401)
        health = http.get("/health")  # probes and scrapes need no key
        assert health.status_code == 200
        # the default dtype is the hardware's choice (bfloat16 on a CPU with AMX / AVX-512 BF16 where the
        # probe measures it faster), made the same way as in this process
        assert health.json()["dtype"] == str(resolve_dtype("auto", torch.device("cpu"))).removeprefix(
            "torch."
        )
        assert http.get("/metrics").status_code == 200
        ok = http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
        assert ok.status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=limits_server.base_url, api_key="wrong", max_retries=0).models.list()
    assert limits_server.client().models.list().data  # the right key


def test_an_oversized_body_is_413(limits_server):
    body = {"messages": [{"role": "user", "content": "x" * 5000}]}
    with limits_server.http() as http:
        check_envelope(http.post("/v1/chat/completions", json=body), 413, None, "request_too_large")

        def chunks():  # no Content-Length: the limit holds while the body streams in
            yield b'{"messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}]}'

        check_envelope(http.post("/v1/completions", content=chunks()), 413, None, "request_too_large")


def test_a_full_queue_is_429_with_retry_after(limits_server):
    """One row and a one-request queue: a long request runs, a second waits, a third is refused; once
    the first two are closed the server takes requests again."""
    long = {"messages": MESSAGES, "max_tokens": 1000, "ignore_eos": True, "stream": True}

    async def run():
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=limits_server.url, headers=headers, timeout=60) as http:
            async with http.stream("POST", "/v1/chat/completions", json=long) as running:
                assert running.status_code == 200
                lines = running.aiter_lines()
                await anext(lines)  # it runs
                waiting = asyncio.create_task(
                    http.post("/v1/chat/completions", json={**long, "stream": False})
                )
                for _ in range(100):  # until the second one is queued
                    if limits_server.metrics()["lmforge_queue_depth"] >= 1 or waiting.done():
                        break
                    await asyncio.sleep(0.05)
                refused = await http.post(
                    "/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 2}
                )
                waiting.cancel()
            return refused

    refused = asyncio.run(run())
    check_envelope(refused, 429, None, "queue_full")
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    deadline = time.monotonic() + 30
    while (
        limits_server.metrics()["lmforge_running_sequences"] or limits_server.metrics()["lmforge_queue_depth"]
    ):
        assert time.monotonic() < deadline, "the closed requests kept their row"
        time.sleep(0.1)
    reply = limits_server.client().chat.completions.create(
        model=limits_server.model, messages=MESSAGES, max_tokens=2
    )
    assert reply.choices[0].finish_reason == "length"
