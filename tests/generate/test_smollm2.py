"""The shipped SmolLM2-135M-Instruct end to end, kept short (a few new tokens each): a chat answer, a
streamed answer equal to the generated one, schema-valid JSON, speculative (prompt lookup) output equal to
greedy, and — in the slow suite — greedy tokens equal to transformers' on the same GGUF."""

from __future__ import annotations

import json

import pytest
import torch

import lmforge
from lmforge.generate import chat, generate, stream


@pytest.fixture(scope="module")
def smollm2():
    return lmforge.load("smollm2", dtype=torch.float32, device="cpu")


def ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def test_chat_answers_with_the_chat_template(smollm2):
    out = chat(smollm2, ask("What is the capital of France? Answer in one word."), max_new_tokens=8)
    assert "Paris" in out.text
    assert out.finish_reason == "stop" and out.token_ids[-1] == smollm2.tokenizer.eos_token_id


def test_stream_equals_generate_with_emoji_and_cjk(smollm2):
    prompt = "Translate to Chinese and add an emoji: good morning 🙂 早上好"
    final = generate(smollm2, prompt, max_new_tokens=10)
    deltas = list(stream(smollm2, prompt, max_new_tokens=10))
    assert "".join(d.text for d in deltas) == final.text
    assert all("\ufffd" not in d.text for d in deltas[:-1])


def test_json_schema_output_validates(smollm2):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    out = chat(smollm2, ask("Describe a person as JSON."), json_schema=schema, max_new_tokens=30)
    value = json.loads(out.text)
    assert set(value) == {"name", "age"} and isinstance(value["age"], int) and len(value["name"]) <= 8


def test_prompt_lookup_output_equals_greedy(smollm2):
    messages = ask("Repeat exactly: the quick brown fox jumps over the lazy dog")
    plain = chat(smollm2, messages, max_new_tokens=12)
    looked = chat(smollm2, messages, max_new_tokens=12, prompt_lookup=True)
    assert looked.token_ids == plain.token_ids
    assert looked.stats["acceptance_rate"] > 0


@pytest.mark.slow
def test_greedy_matches_transformers_on_the_same_gguf(smollm2):
    import transformers as tf

    from lmforge.assets import asset_path

    path = asset_path("smollm2")
    hf = tf.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    ids = smollm2.tokenizer.encode("The three primary colours are")
    with torch.no_grad():
        expected = hf.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)[
            0, len(ids) :
        ].tolist()
    assert generate(smollm2, ids, max_new_tokens=16).token_ids == expected
