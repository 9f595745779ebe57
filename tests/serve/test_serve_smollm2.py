"""The server on the real SmolLM2-135M-Instruct (GGUF) with all-MiniLM-L6-v2 embeddings: replies equal
`LM.chat` in this process, streamed equal whole, usage equals the tokenizer's counts, a JSON-schema
reply validates, and /v1/embeddings equals `LM.embed`."""

from __future__ import annotations

import base64
import json

import jsonschema_rs
import numpy as np
import pytest
import torch

MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.fixture(scope="module")
def minilm():
    import lmforge

    return lmforge.load("minilm")


def test_chat_is_smollm2s_own_reply_streamed_or_whole(smollm2_server, smollm2):
    """The server reads float32 weights in oneDNN's packed layout (--pack-weights, the default), the
    `smollm2` fixture in this process the plain ones: the same greedy reply."""
    with smollm2_server.http() as http:
        health = http.get("/health").json()
    layers = 30 * (960 * 576 + 576 * 576 + 3072 * 576 + 576 * 1536) + 49152 * 576  # and the tied head
    assert health["dtype"] == "float32" and health["packed_weights_mb"] == round(layers * 4 / 2**20, 1)
    client = smollm2_server.client()
    args = dict(model="smollm2", messages=MESSAGES, temperature=0, max_tokens=24)
    whole = client.chat.completions.create(**args)
    alone = smollm2.chat(MESSAGES, max_new_tokens=24, aot=False)
    assert whole.choices[0].message.content == alone.text
    assert "Paris" in alone.text
    prompt_ids = smollm2.tokenizer.encode_chat(MESSAGES, add_generation_prompt=True)
    assert whole.usage.prompt_tokens == len(prompt_ids)
    assert whole.usage.completion_tokens == len(alone.token_ids)
    stream = client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == alone.text
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_a_json_schema_reply_validates(smollm2_server):
    reply = smollm2_server.client().chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Describe a person named Ada who is 36, as JSON."}],
        temperature=0,
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
    )
    assert reply.choices[0].finish_reason == "stop"
    person = json.loads(reply.choices[0].message.content)
    jsonschema_rs.validate(PERSON, person)


def test_embeddings_equal_lm_embed(smollm2_server, minilm):
    texts = ["A cat sits on the mat.", "Paris is the capital of France.", "Stock prices fell sharply."]
    client = smollm2_server.client()
    reply = client.embeddings.create(model="minilm", input=texts)
    got = torch.tensor([d.embedding for d in reply.data])
    assert [d.index for d in reply.data] == [0, 1, 2]
    assert torch.allclose(got, minilm.embed(texts), atol=1e-5)
    counted = sum(len(minilm.tokenizer.encode(t, add_special_tokens=True)) for t in texts)
    assert reply.usage.prompt_tokens == counted == reply.usage.total_tokens
    one = client.embeddings.create(model="minilm", input=texts[0], encoding_format="base64")
    raw = one.data[0].embedding
    vector = np.frombuffer(base64.b64decode(raw), dtype="<f4") if isinstance(raw, str) else np.array(raw)
    assert np.allclose(vector, minilm.embed(texts[0]).numpy(), atol=1e-5)
    models = {m.id for m in client.models.list().data}
    assert models == {"smollm2", "minilm"}


@pytest.mark.slow  # "any JSON object" compiles over the 49,152-token vocabulary (tens of seconds)
def test_a_json_object_reply_is_an_object(smollm2_server):
    reply = smollm2_server.client().chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Give the capital of France as a JSON object."}],
        temperature=0,
        max_tokens=80,
        response_format={"type": "json_object"},
    )
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content), dict)
