"""GenerationConfig: validation names the bad option in one line; from_dict/from_hf; loose CLI forms."""

import json
import math

import pytest

from lmforge.errors import LMForgeError
from lmforge.generate.config import GenerationConfig


def test_defaults_are_greedy_and_valid():
    c = GenerationConfig()
    assert not c.do_sample and c.num_beams == 1 and c.constraint_kind is None
    c.validate(vocab_size=10)


@pytest.mark.parametrize(
    "options,name",
    [
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": -0.1}, "top_p"),
        ({"top_p": math.nan}, "top_p"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"typical_p": 0}, "typical_p"),
        ({"min_p": 1.2}, "min_p"),
        ({"top_k": -1}, "top_k"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"frequency_penalty": 3}, "frequency_penalty"),
        ({"presence_penalty": -2.5}, "presence_penalty"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 4, "min_new_tokens": 5}, "min_new_tokens"),
        ({"num_beams": 0}, "num_beams"),
        ({"no_repeat_ngram_size": -2}, "no_repeat_ngram_size"),
        ({"early_stopping": "sometimes"}, "early_stopping"),
        ({"logit_bias": {"x": 1}}, "logit_bias"),
        ({"logit_bias": [1, 2]}, "logit_bias"),
        ({"bad_words_ids": [1, 2]}, "bad_words_ids"),
        ({"bad_words_ids": "[[1, 2"}, "bad_words_ids"),
        ({"bad_words_ids": [[]]}, "bad_words_ids"),
        ({"allowed_token_ids": ["a"]}, "allowed_token_ids"),
        ({"stop": [""]}, "stop"),
        ({"choices": "yes"}, "choices"),
        ({"choices": []}, "choices"),
        ({"json_schema": "{not json"}, "json_schema"),
        ({"json_schema": [1]}, "json_schema"),
        ({"seed": 1.5}, "seed"),
        ({"penalty_alpha": -1}, "penalty_alpha"),
    ],
)
def test_bad_option_is_one_line_naming_it(options, name):
    with pytest.raises(LMForgeError) as info:
        GenerationConfig(**options)
    message = str(info.value)
    assert name in message and "\n" not in message


@pytest.mark.parametrize(
    "options,name",
    [
        ({"logit_bias": {100: 1.0}}, "logit_bias"),
        ({"logit_bias": {-1: 1.0}}, "logit_bias"),
        ({"bad_words_ids": [[1, 2], [100]]}, "bad_words_ids"),
        ({"allowed_token_ids": [3, 100]}, "allowed_token_ids"),
        ({"allowed_token_ids": []}, "allowed_token_ids"),
        ({"stop_token_ids": [100]}, "stop_token_ids"),
    ],
)
def test_token_ids_checked_against_vocabulary(options, name):
    c = GenerationConfig(**options)  # fine without a vocabulary
    with pytest.raises(LMForgeError, match=f"{name}.*(outside the vocabulary|empty)"):
        c.validate(vocab_size=100)


def test_one_constraint_at_most():
    with pytest.raises(LMForgeError, match="one output constraint"):
        GenerationConfig(regex="a+", choices=["a"])
    assert GenerationConfig(regex="a+").constraint_kind == "regex"


def test_loose_forms_are_normalised():
    c = GenerationConfig(
        logit_bias={"5": "-100"},
        bad_words_ids="[[1, 2], [3]]",
        early_stopping="true",
        json_schema='{"type": "integer"}',
        stop="###",
    )
    assert c.logit_bias == {5: -100.0}
    assert c.bad_words_ids == [[1, 2], [3]]
    assert c.early_stopping is True
    assert c.json_schema == {"type": "integer"}
    assert c.stop == ["###"]
    assert GenerationConfig(early_stopping="never").early_stopping == "never"


def test_temperature_zero_means_greedy():
    assert GenerationConfig(do_sample=True, temperature=0).do_sample is False


def test_from_dict_refuses_unknown_keys():
    c = GenerationConfig.from_dict({"top_k": 5, "do_sample": True})
    assert c.top_k == 5 and c.do_sample
    with pytest.raises(LMForgeError, match="unknown option.*top_q"):
        GenerationConfig.from_dict({"top_q": 0.9})


def test_from_hf_generation_config(tmp_path):
    hf = {
        "bos_token_id": 1,
        "eos_token_id": [2, 0],
        "pad_token_id": 2,
        "max_length": 2048,
        "do_sample": True,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": None,
        "repetition_penalty": 1.1,
        "sequence_bias": [[[7], -2.0], [[8, 9], -1.0]],
        "suppress_tokens": [11],
        "transformers_version": "4.42.3",
        "stop_strings": "###",
    }
    c = GenerationConfig.from_hf(hf, max_new_tokens=16)
    assert (c.do_sample, c.temperature, c.top_p, c.top_k, c.repetition_penalty) == (True, 0.2, 0.9, 0, 1.1)
    assert c.max_new_tokens == 16
    assert c.logit_bias == {7: -2.0, 11: -math.inf}
    assert c.stop == ["###"]
    (tmp_path / "generation_config.json").write_text(json.dumps(hf))
    assert GenerationConfig.from_hf(tmp_path) == GenerationConfig.from_hf(hf)
    assert GenerationConfig.from_hf(hf, temperature=0.7).temperature == 0.7  # explicit options win
    assert GenerationConfig.from_hf({}, top_k=None, seed=None).top_k == 0  # None keeps the default
    with pytest.raises(LMForgeError, match="unknown option.*temprature.*did you mean temperature"):
        GenerationConfig.from_hf(hf, temprature=0.7)
    with pytest.raises(LMForgeError, match="cannot read generation config"):
        GenerationConfig.from_hf(tmp_path / "missing.json")


def test_replace_validates():
    c = GenerationConfig(top_p=0.5)
    assert c.replace(top_p=0.8).top_p == 0.8
    with pytest.raises(LMForgeError, match="top_p"):
        c.replace(top_p=2.0)


def test_every_field_declares_its_help():
    import dataclasses

    undocumented = [f.name for f in dataclasses.fields(GenerationConfig) if not f.metadata.get("help")]
    assert not undocumented


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(max_new_tokens="8"), "max_new_tokens must be an integer, got '8'"),
        (dict(do_sample="yes"), "do_sample must be true or false"),
        (dict(stop_token_ids=["a"]), "stop_token_ids"),
        (dict(stop_token_ids=0.0), "invalid generation option stop_token_ids=0.0: give a list"),
        (dict(allowed_token_ids=3), "invalid generation option allowed_token_ids=3: give a list"),
    ],
)
def test_wrong_types_name_the_field_and_type(values, message):
    with pytest.raises(LMForgeError, match=message):
        GenerationConfig(**values)
