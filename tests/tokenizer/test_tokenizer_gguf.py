"""The tokenizer embedded in a GGUF file, against transformers' reading of the same file."""

from __future__ import annotations

import pytest

from lmforge.assets import asset_path, shakespeare_files
from lmforge.errors import LMForgeError
from lmforge.io.gguf import read_metadata
from lmforge.tokenizer import Tokenizer


def test_read_gguf_metadata_plain_values():
    meta = read_metadata(asset_path("smollm2"))
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert len(meta["tokenizer.ggml.tokens"]) == 49152
    assert all(isinstance(t, str) for t in meta["tokenizer.ggml.tokens"][:100])
    assert isinstance(meta["tokenizer.ggml.bos_token_id"], int)
    assert isinstance(meta["tokenizer.chat_template"], str)


def test_smollm2_ids_match_transformers_on_a_whole_play(smollm_tok, hf_smollm):
    play = shakespeare_files()[0]
    lines = play.read_text(encoding="utf-8").splitlines()
    assert len(lines) > 1000
    expected = hf_smollm(lines, add_special_tokens=False)["input_ids"]
    got = smollm_tok.encode_batch(lines)
    mismatched = [line for line, a, b in zip(lines, expected, got, strict=True) if a != b]
    assert not mismatched, f"{len(mismatched)} lines differ, first: {mismatched[0]!r}"
    # and the whole play as one text, digits, odd whitespace and non-ASCII included
    text = play.read_text(encoding="utf-8")[:20000] + "\n  Year 1623, price £12.50 — ça va? 日本語 🎭\t\n"
    assert smollm_tok.encode(text) == hf_smollm(text, add_special_tokens=False)["input_ids"]
    assert smollm_tok.decode(smollm_tok.encode(text)) == text


def test_smollm2_special_tokens(smollm_tok, hf_smollm):
    assert smollm_tok.vocab_size == len(hf_smollm)
    assert smollm_tok.bos_token_id == hf_smollm.bos_token_id
    assert smollm_tok.eos_token_id == hf_smollm.eos_token_id
    assert smollm_tok.pad_token_id == hf_smollm.pad_token_id
    text = "<|im_start|>user\nhi<|im_end|>"
    # allowed: matched as special tokens, exactly as transformers does
    assert (
        smollm_tok.encode(text, allow_special=True) == hf_smollm(text, add_special_tokens=False)["input_ids"]
    )
    # default: plain text, no special id anywhere
    plain = smollm_tok.encode(text)
    assert smollm_tok.token_to_id("<|im_start|>") not in plain
    assert smollm_tok.token_to_id("<|im_end|>") not in plain
    assert smollm_tok.decode(plain) == text


def test_gguf_without_tokenizer_is_a_clear_error():
    with pytest.raises(LMForgeError, match="no tokenizer"):
        Tokenizer.from_gguf_metadata({"general.architecture": "llama"})
    with pytest.raises(LMForgeError, match="not supported"):
        Tokenizer.from_gguf_metadata({"tokenizer.ggml.model": "rwkv", "tokenizer.ggml.tokens": ["a"]})
