"""Constrained output under every strategy: with a real BPE tokenizer and a random tiny model (which
would never produce valid text on its own), every output of greedy, sampling (many seeds), beam search,
contrastive search/decoding and speculative decoding matches the regex / parses under the schema."""

from __future__ import annotations

import json
import re

import pytest
from generate_helpers import tiny_checkpoint, tiny_model

import lmforge
from lmforge.generate import generate
from lmforge.lm import LM

STRATEGIES = {
    "greedy": {},
    "beam": dict(num_beams=3, num_return_sequences=2),
    "contrastive_search": dict(penalty_alpha=0.5, top_k=4),
    "contrastive_decoding": dict(amateur=True),
    "speculative": dict(draft=True, do_sample=True, seed=3),
    "prompt_lookup": dict(prompt_lookup=True),
}


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return lmforge.load(tiny_checkpoint(tmp_path_factory.mktemp("c") / "ckpt", seed=4))


def options_for(lm, name):
    options = dict(STRATEGIES[name])
    for role in ("amateur", "draft"):
        if options.pop(role, False):
            model = tiny_model("llama", seed=9, scale=8.0, n_layer=1, vocab_size=lm.config.vocab_size)
            options[role] = LM(model, lm.tokenizer, {})
    return options


def outputs(result):
    return [c.text for c in (result if isinstance(result, list) else [result])]


PATTERN = r"(cat|dog)s? [0-9]{1,3}"


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_regex_holds_for_every_strategy(lm, name):
    for text in outputs(generate(lm, "hello", regex=PATTERN, max_new_tokens=16, **options_for(lm, name))):
        assert re.fullmatch(PATTERN, text), text


def test_sampled_outputs_validate_across_seeds(lm):
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer"}, "tag": {"enum": ["a", "bb"]}},
        "required": ["ok", "n", "tag"],
    }
    for seed in range(12):
        out = generate(lm, "hi", json_schema=schema, do_sample=True, seed=seed, max_new_tokens=100, top_k=50)
        assert out.finish_reason == "stop"
        value = json.loads(out.text)
        assert isinstance(value["ok"], bool) and isinstance(value["n"], int) and value["tag"] in ("a", "bb")


def test_choices_with_batched_rows_of_different_lengths(lm):
    out = generate(
        lm,
        ["hi", "how are you, fine?"],
        choices=["yes", "no", "maybe"],
        do_sample=True,
        seed=1,
        num_return_sequences=3,
    )
    assert all(c.text in ("yes", "no", "maybe") for c in out) and len(out) == 6


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(regex="(["), "cannot compile"),
        (dict(json_schema={"type": "no-such-type"}), "json_schema|schema"),
    ],
)
def test_bad_constraint_is_a_one_line_error_before_decoding(lm, options, message):
    calls = []
    handle = lm.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(lmforge.LMForgeError, match=message) as info:
            generate(lm, "hello", max_new_tokens=4, **options)
    finally:
        handle.remove()
    assert "\n" not in str(info.value) and not calls
