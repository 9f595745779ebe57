"""Constrained output: every sampled output of a random-logit "model" matches the choice list / regex /
JSON schema, over many seeds, on a small byte-level BPE vocabulary built here and on SmolLM2's."""

import json
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lmforge.errors import LMForgeError
from lmforge.generate.config import GenerationConfig
from lmforge.generate.constraints import (
    DEAD,
    FINISHED,
    compile_constraint,
    from_config,
    piece_to_bytes,
    token_table,
    token_table_from_gguf,
)
from lmforge.generate.processors import build_pipeline, pick_tokens

CORPUS = [
    '{"name": "Ada", "age": 36, "tags": ["math", "code"], "ok": true}',
    '{"id": 12, "score": -3.5e2, "items": [1, 2, 3], "valid": false, "note": null}',
    "The quick brown fox jumps over the lazy dog. 0123456789 yes no maybe",
    "2024-01-15 2023-12-31 phone: 555-0199, 555-1234 café naïve 東京 😀",
    'red green blue, small medium large; true false null [] {} , : "',
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """A ~400-token byte-level BPE (GPT-2 style), with <eos> as id 0."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    return tok


@pytest.fixture(scope="module")
def table(tokenizer):
    return token_table(tokenizer)


def decode(table, ids) -> str:
    return b"".join(table[i] for i in ids).decode("utf-8")


def sample_constrained(automaton, table, rows: int, seed: int, max_steps: int = 400, **options) -> list[str]:
    """Sample `rows` outputs from random logits through the pipeline + constraint; all must finish."""
    eos = automaton.eos_token_ids
    V = len(table)
    constraint = automaton.new(rows)
    config = GenerationConfig(do_sample=True, **options)
    pipeline = build_pipeline(config, V, eos_token_id=list(eos), prompt_length=1, constraint=constraint)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(rows, 1, dtype=torch.long)
    for _ in range(max_steps):
        scores = torch.randn(rows, V, generator=gen) * 2
        tokens = pick_tokens(pipeline(ids, scores), True, gen)
        constraint.advance(tokens)
        ids = torch.cat([ids, tokens[:, None]], dim=1)
        if all(constraint.is_complete(r) for r in range(rows)):
            break
    assert all(constraint.is_complete(r) for r in range(rows)), "a row did not finish"
    out = []
    for r in range(rows):
        gen_ids = ids[r, 1:].tolist()
        end = next(i for i, t in enumerate(gen_ids) if t in eos)
        assert automaton.accepts(gen_ids[: end + 1])
        out.append(decode(table, gen_ids[:end]))
    return out


# -- a tiny JSON-schema validator (the subset the tests use) -------------------------------------------


def validate(value, schema) -> None:
    if "enum" in schema:
        assert value in schema["enum"], (value, schema)
        return
    t = schema.get("type")
    if t == "object":
        assert isinstance(value, dict)
        props = schema.get("properties", {})
        assert set(value) <= set(props), f"extra keys {set(value) - set(props)}"
        for key in schema.get("required", []):
            assert key in value, f"missing required {key}"
        for key, v in value.items():
            validate(v, props[key])
    elif t == "array":
        assert isinstance(value, list)
        assert len(value) >= schema.get("minItems", 0)
        assert len(value) <= schema.get("maxItems", math.inf)
        for item in value:
            validate(item, schema["items"])
    elif t == "string":
        assert isinstance(value, str)
        assert schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", math.inf)
    elif t == "integer":
        assert isinstance(value, int) and not isinstance(value, bool)
    elif t == "number":
        assert isinstance(value, (int, float)) and not isinstance(value, bool)
    elif t == "boolean":
        assert isinstance(value, bool)
    elif t == "null":
        assert value is None
    else:
        raise AssertionError(f"validator does not know {schema}")


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer"},
        "score": {"type": "number"},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
        "size": {"enum": ["small", "large"]},
        "note": {"type": "null"},
    },
    "required": ["name", "age", "ok"],
}


def test_validator_rejects(table):
    for bad in (
        {"age": 1, "ok": True},
        {"name": "x", "age": "1", "ok": True},
        {"name": "x", "age": 1, "ok": 1},
    ):
        with pytest.raises(AssertionError):
            validate(bad, SCHEMA)


# -- token table ---------------------------------------------------------------------------------------


def test_byte_level_table_round_trips_text(tokenizer, table):
    assert table[0] is None  # <eos> is special: never part of constrained text
    for text in CORPUS + ["unseen wörds ✓ and 🤖 emoji", "  two  spaces\nnewline\ttab"]:
        ids = tokenizer.encode(text).ids
        assert b"".join(table[i] for i in ids) == text.encode("utf-8")
    # some token is a partial UTF-8 character: the table must hold raw bytes, not decoded text
    assert any(t is not None and not _is_utf8(t) for t in table)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(text=st.text(max_size=40))
def test_byte_level_table_round_trips_any_text(tokenizer, table, text):
    ids = tokenizer.encode(text).ids
    assert b"".join(table[i] for i in ids) == text.encode("utf-8")


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_sentencepiece_pieces():
    assert piece_to_bytes("\u2581hello", "sentencepiece") == b" hello"
    assert piece_to_bytes("<0xE6>", "sentencepiece") == b"\xe6"
    assert piece_to_bytes("Ġhi", "byte_level") == b" hi"
    assert piece_to_bytes("Ċ", "byte_level") == b"\n"


def test_metaspace_tokenizer_table():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS * 5, trainers.BpeTrainer(vocab_size=200, special_tokens=["</s>"]))
    table = token_table(tok)
    text = "the quick brown fox"
    ids = tok.encode(text).ids
    assert b"".join(table[i] for i in ids) == b" " + text.encode()


def test_table_from_wrappers(tokenizer, table):
    class Wrapper:
        def __init__(self, t):
            self._tokenizer = t

    assert token_table(Wrapper(tokenizer)) == table
    assert token_table(["a", b"b", ""], vocab_size=4) == [b"a", b"b", None, None]


# -- sampled outputs validate ---------------------------------------------------------------------------


def test_choices(table):
    choices = ["yes", "no", "maybe", "東京", "😀 ok", "1+1=2? (a|b) [c]."]  # regex metacharacters escaped
    automaton = compile_constraint(table, 0, choices=choices)
    seen = set()
    for seed in range(25):
        for text in sample_constrained(automaton, table, rows=4, seed=seed):
            assert text in choices
            seen.add(text)
    assert len(seen) >= 4  # sampling explores the choices, it is not stuck on one


@pytest.mark.parametrize(
    "pattern",
    [
        r"[0-9]{3}-[0-9]{4}",
        r"(red|green|blue)( (small|large))?",
        r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",  # \d is Unicode-aware (any script's digits)
        r"[a-z]+@[a-z]+\.(com|org)",
        r"(-)?(0|[1-9][0-9]*)(\.[0-9]+)?",
    ],
)
def test_regex(table, pattern):
    automaton = compile_constraint(table, 0, regex=pattern)
    outputs = set()
    for seed in range(20):
        for text in sample_constrained(automaton, table, rows=4, seed=seed, max_steps=600):
            assert re.fullmatch(pattern, text), text
            outputs.add(text)
    assert len(outputs) > 5


def test_json_schema(table):
    automaton = compile_constraint(table, 0, json_schema=SCHEMA)
    for seed in range(25):
        for text in sample_constrained(automaton, table, rows=4, seed=seed, max_steps=800):
            validate(json.loads(text), SCHEMA)


def test_json_array_of_objects(table):
    schema = {
        "type": "array",
        "minItems": 1,
        "maxItems": 2,
        "items": {
            "type": "object",
            "properties": {"id": {"type": "integer"}, "valid": {"type": "boolean"}},
            "required": ["id", "valid"],
        },
    }
    automaton = compile_constraint(table, 0, json_schema=schema)
    for seed in range(15):
        for text in sample_constrained(automaton, table, rows=4, seed=seed, max_steps=600):
            validate(json.loads(text), schema)


def test_constraint_with_warpers(table):
    """The mask runs before top-k/top-p: the warpers choose among allowed tokens, never none."""
    automaton = compile_constraint(table, 0, regex=r"[0-9]{2,5}")
    for seed in range(10):
        for text in sample_constrained(
            automaton, table, rows=3, seed=seed, top_k=2, top_p=0.5, temperature=0.7
        ):
            assert re.fullmatch(r"[0-9]{2,5}", text)


def test_eos_only_in_accepting_states(table):
    automaton = compile_constraint(table, [0, 5], regex=r"ab(c)?")
    state = automaton.initial_state
    assert not automaton.allowed(state)[0] and not automaton.allowed(state)[5]
    ids = [i for i, t in enumerate(table) if t == b"ab"] or [i for i, t in enumerate(table) if t == b"a"]
    for i in ids[:1]:
        state = automaton.next_state(state, i)
    if table[ids[0]] == b"a":
        state = automaton.next_state(state, table.index(b"b"))
    assert automaton.is_accepting(state)
    assert automaton.allowed(state)[0] and automaton.allowed(state)[5]
    assert automaton.next_state(state, 5) == FINISHED
    assert automaton.next_state(automaton.initial_state, 0) == DEAD  # EOS before a match


# -- state handling: reorder (beams), rollback (speculative), padding rows -------------------------------


def test_reorder_clone_rollback(table):
    automaton = compile_constraint(table, 0, choices=["abc", "xyz"])
    c = automaton.new(2)
    a, x = table.index(b"a"), table.index(b"x")
    c.advance(torch.tensor([a, x]))
    after_one = c.snapshot()
    c.reorder(torch.tensor([1, 1, 0]))
    assert c.states == [after_one[1], after_one[1], after_one[0]]
    clone = c.clone()
    c.advance([table.index(b"y"), table.index(b"y"), table.index(b"b")])
    assert clone.states != c.states
    c.rollback(1)
    assert c.states == clone.states
    c.rollback(1)
    assert c.states == [automaton.initial_state] * 3
    c.restore(after_one)
    assert c.snapshot() == after_one
    with pytest.raises(ValueError):
        c.rollback(1)


def test_finished_and_dead_rows_are_unconstrained(table):
    automaton = compile_constraint(table, 0, choices=["abc"])
    c = automaton.new(2)
    c.advance([table.index(b"z"), table.index(b"a")])  # row 0 gets a forbidden (padding) token
    scores = torch.zeros(2, len(table))
    masked = c.mask(scores)
    assert torch.isfinite(masked[0]).all()
    assert not torch.isfinite(masked[1]).all() and torch.isfinite(masked[1]).any()
    assert not c.is_complete(0)


def test_mask_falls_back_when_everything_was_filtered(table):
    automaton = compile_constraint(table, 0, regex="a")
    c = automaton.new(1)
    scores = torch.full((1, len(table)), -math.inf)
    scores[0, 7] = 0.0  # an earlier filter kept only a token the constraint forbids
    out = c.mask(scores)
    assert torch.isfinite(out).any() and bool(automaton.allowed(c.states[0])[out[0].argmax()])


# -- from generation options and bad input -----------------------------------------------------------------


def test_from_config(tokenizer):
    class Tok:
        eos_token_id = 0

        def __init__(self):
            self._tokenizer = tokenizer

    assert from_config(GenerationConfig(), Tok(), 400) is None
    factory = from_config(GenerationConfig(choices=["yes", "no"]), Tok(), 400)
    c = factory(3)
    assert c.size == 3 and c.automaton.eos_token_ids == (0,)
    with pytest.raises(LMForgeError, match="tokenizer"):
        from_config(GenerationConfig(regex="a+"), None, 400)
    with pytest.raises(LMForgeError, match="logit_bias"):
        from_config(GenerationConfig(logit_bias={999: 1.0}), Tok(), 400)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"regex": "(ab"}, "cannot compile the output constraint.*missing \\)"),
        ({"regex": "a[b"}, "cannot compile"),
        ({"regex": r"(?=a)b"}, "cannot compile"),  # look-ahead: not a regular language for a DFA
        (
            {"regex": "\u2603{3}"},
            "cannot compile",
        ),  # the vocabulary cannot spell it (no such bytes? see below)
        ({"json_schema": {"type": "foo"}}, "cannot compile json_schema: Unsupported type: foo"),
        ({"json_schema": {"$ref": "#/nope"}}, "cannot compile json_schema"),
        ({"choices": []}, "choices"),
    ],
)
def test_bad_constraints_fail_with_one_line(kwargs, match):
    table = [b"a", b"b", b"c"]  # a vocabulary without the snowman's bytes
    with pytest.raises(LMForgeError, match=match) as info:
        compile_constraint(table, 3, vocab_size=4, **kwargs)
    assert "\n" not in str(info.value)


def test_no_eos_is_an_error():
    with pytest.raises(LMForgeError, match="stop token"):
        compile_constraint([b"a"], [], regex="a")


# -- the real SmolLM2 vocabulary -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_table():
    from lmforge.assets import asset_path

    path = asset_path("smollm2")
    from lmforge.io.gguf import read_metadata

    meta = read_metadata(path)
    return token_table_from_gguf(meta), int(meta["tokenizer.ggml.eos_token_id"])


def test_smollm2_table_from_lmforge_tokenizer(smollm2_table):
    """The table read from lmforge's Tokenizer equals the one from the GGUF pieces, and spells text."""
    from lmforge.assets import asset_path
    from lmforge.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(asset_path("smollm2"))
    table = token_table(tok)
    assert table == smollm2_table[0]
    text = 'Hé, 東京 😀 {"a": [1, 2]}\n\tend'
    assert b"".join(table[i] for i in tok.encode(text)) == text.encode("utf-8")


def test_smollm2_vocabulary(smollm2_table):
    table, eos = smollm2_table
    assert len(table) == 49152 and table[eos] is None and table[0] is None
    assert sum(t is None for t in table) == 17  # the control tokens
    schema = {
        "type": "object",
        "properties": {
            "answer": {"enum": ["yes", "no"]},
            "confidence": {"type": "integer"},
            "flags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2},
        },
        "required": ["answer", "confidence"],
    }
    automaton = compile_constraint(table, eos, json_schema=schema)
    for seed in range(4):
        for text in sample_constrained(automaton, table, rows=4, seed=seed, max_steps=300):
            validate(json.loads(text), schema)
    date = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    automaton = compile_constraint(table, eos, regex=date)
    for text in sample_constrained(automaton, table, rows=8, seed=0):
        assert re.fullmatch(date, text)


# -- every decoding strategy honours the constraint (tiny random models, real engine) ----------------------

STRATEGIES = {
    "greedy": {},
    "sampling": dict(do_sample=True, temperature=1.5, top_k=20, seed=3),
    "beam": dict(num_beams=3, num_return_sequences=2),
    "beam sampling": dict(num_beams=2, do_sample=True, seed=1),
    "contrastive search": dict(penalty_alpha=0.6, top_k=4),
    "prompt lookup": dict(prompt_lookup=True),
    "prompt lookup sampled": dict(prompt_lookup=True, do_sample=True, seed=2),
    "draft model": dict(do_sample=True, seed=4, _draft=True),
    "contrastive decoding": dict(_amateur=True, contrastive_alpha=0.05),
}
BOUNDED_SCHEMA = {
    "type": "object",
    "properties": {
        "size": {"enum": ["small", "large"]},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"enum": ["red", "blue"]}, "maxItems": 2},
    },
    "required": ["size", "ok"],
}


@pytest.fixture(scope="module")
def tiny_lms(tokenizer):
    from generate_helpers import tiny_model
    from tokenizers import Tokenizer as Backend

    from lmforge.lm import LM
    from lmforge.tokenizer import Tokenizer

    tok = Tokenizer(Backend.from_str(tokenizer.to_str()), {"eos_token": "<eos>"})
    V = tokenizer.get_vocab_size()
    target = LM(tiny_model("llama", seed=0, scale=3.0, vocab_size=V), tok, {}, source="tiny")
    small = LM(tiny_model("llama", seed=1, scale=3.0, vocab_size=V, n_layer=1), tok, {}, source="tiny-small")
    return target, small


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("kind", ["regex", "json_schema"])
def test_every_strategy_honours_the_constraint(tiny_lms, strategy, kind):
    from lmforge.generate import generate

    target, small = tiny_lms
    options = dict(STRATEGIES[strategy])
    extra = {"draft": small if options.pop("_draft", False) else None}
    extra["amateur"] = small if options.pop("_amateur", False) else None
    pattern = r"[0-9]{3}-(red|blue)[a-z]{0,3}"
    constraint = {"regex": pattern} if kind == "regex" else {"json_schema": BOUNDED_SCHEMA}
    out = generate(target, ["Hello", "the quick brown"], max_new_tokens=60, **constraint, **options, **extra)
    assert out and all(c.finish_reason == "stop" for c in out)
    for c in out:
        if kind == "regex":
            assert re.fullmatch(pattern, c.text), c.text
        else:
            validate(json.loads(c.text), BOUNDED_SCHEMA)


def test_table_from_decode_only_tokenizer(byte_tokenizer):
    """A tokenizer with only `decode` (the engine tests' byte tokenizer): ASCII bytes are exact, bytes
    that are part of a UTF-8 character are left out instead of being guessed as U+FFFD."""
    table = token_table(byte_tokenizer)
    assert table[ord("a")] == b"a" and table[0x7F] == b"\x7f"
    assert table[0xC3] is None and table[256] is None  # partial character; BOS decodes to ""
    automaton = compile_constraint(table, byte_tokenizer.eos_token_id, regex="[a-c]{2}")
    assert automaton.accepts([ord("a"), ord("c"), byte_tokenizer.eos_token_id])


def test_table_prefers_token_bytes():
    class Tok:
        vocab_size = 3
        all_special_ids = [2]

        def token_bytes(self, i):
            return [b"\xe6", b"\x9d\xb1", b"<s>"][i]

    assert token_table(Tok()) == [b"\xe6", b"\x9d\xb1", None]
