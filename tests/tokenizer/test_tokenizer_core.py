"""The Tokenizer API: directories, saving, special tokens, truncation and padding."""

from __future__ import annotations

import json

import pytest

from lmforge.assets import asset_path, shakespeare_files
from lmforge.errors import LMForgeError
from lmforge.tokenizer import Tokenizer

LINES = [
    "To be, or not to be, that is the question:",
    "Whether 'tis nobler in the mind to suffer",
    "  The slings and arrows of outrageous fortune,",
    "Ça, naïve café — 東京 🎭",
]


def test_minilm_dir_matches_transformers(minilm_tok):
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(asset_path("minilm")))
    lines = shakespeare_files()[1].read_text(encoding="utf-8").splitlines()[:400] + LINES
    for line in lines:
        assert minilm_tok.encode(line, add_special_tokens=True) == ref(line)["input_ids"], line
    assert minilm_tok.pad_token_id == ref.pad_token_id == 0
    assert minilm_tok.special_tokens["cls_token"] == "[CLS]"
    assert (minilm_tok.cls_token_id, minilm_tok.sep_token_id, minilm_tok.mask_token_id) == (
        ref.cls_token_id,
        ref.sep_token_id,
        ref.mask_token_id,
    )
    assert set(minilm_tok.all_special_ids) == set(ref.all_special_ids)
    # the file asks for padding to 128; lmforge pads only when asked
    assert len(minilm_tok.encode("hello", add_special_tokens=True)) == 3


def test_save_round_trip_and_transformers_reads_it(smollm_tok, hf_smollm, tmp_path):
    smollm_tok.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"tokenizer.json", "tokenizer_config.json"}
    again = Tokenizer.from_dir(tmp_path)
    assert again.fingerprint == smollm_tok.fingerprint
    assert again.chat_template == smollm_tok.chat_template
    assert (again.bos_token_id, again.eos_token_id, again.pad_token_id) == (1, 2, 2)
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(tmp_path))
    for line in LINES:
        assert ref(line, add_special_tokens=False)["input_ids"] == smollm_tok.encode(line)
    messages = [{"role": "user", "content": "Hi there"}]
    assert ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        hf_smollm.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    )


def test_save_is_atomic_on_failure(smollm_tok, tmp_path, monkeypatch):
    smollm_tok.save(tmp_path)
    before = (tmp_path / "tokenizer.json").read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(LMForgeError, match="disk full"):
        smollm_tok.save(tmp_path)
    assert (tmp_path / "tokenizer.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]


def test_vocab_txt_only_dir(tmp_path, minilm_tok):
    (tmp_path / "vocab.txt").write_text((asset_path("minilm") / "vocab.txt").read_text(encoding="utf-8"))
    tok = Tokenizer.from_dir(tmp_path)
    for line in LINES:
        assert tok.encode(line, add_special_tokens=True) == minilm_tok.encode(line, add_special_tokens=True)
    assert tok.decode(tok.encode("Hello, world!")) == "hello, world!"


def test_fingerprint_separates_tokenizers(smollm_tok, minilm_tok):
    assert smollm_tok.fingerprint != minilm_tok.fingerprint
    assert len(smollm_tok.fingerprint) == 16


def test_truncation_keeps_special_tokens(minilm_tok):
    ids = minilm_tok.encode("one two three four five six", add_special_tokens=True, max_length=4)
    assert len(ids) == 4
    assert ids[0] == minilm_tok.token_to_id("[CLS]") and ids[-1] == minilm_tok.token_to_id("[SEP]")
    left = minilm_tok.encode("one two three four five six", max_length=2, truncation_side="left")
    assert minilm_tok.decode(left) == "five six"
    with pytest.raises(LMForgeError, match="no room"):
        minilm_tok.encode("x", add_special_tokens=True, max_length=2)


def test_batch_padding_and_mask(smollm_tok):
    rows = smollm_tok.encode_batch(["a", "a b c d"], padding=True)
    assert len(rows[0]) == len(rows[1]) and rows[0][1:] == [smollm_tok.pad_token_id] * (len(rows[0]) - 1)
    ids, mask = smollm_tok.pad([[5], [6, 7, 8]], side="left")
    assert ids == [[2, 2, 5], [6, 7, 8]] and mask == [[0, 0, 1], [1, 1, 1]]
    fixed = smollm_tok.encode_batch(["a", "a b c d e f g"], padding="max_length", max_length=5)
    assert [len(r) for r in fixed] == [5, 5]


def test_offsets_point_into_the_text(smollm_tok):
    text = "Hello, wide world"
    enc = smollm_tok.tokenize(text)
    assert [text[a:b] for a, b in enc.offsets] == ["Hello", ",", " wide", " world"]
    assert enc.tokens == ["Hello", ",", "Ġwide", "Ġworld"]


def test_bad_inputs(smollm_tok, tmp_path):
    with pytest.raises(LMForgeError, match="out of range"):
        smollm_tok.decode([10**6])
    with pytest.raises(LMForgeError, match="must be a str"):
        smollm_tok.encode(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(LMForgeError, match="lone surrogate"):
        smollm_tok.encode("a\ud800")
    with pytest.raises(LMForgeError, match="lone surrogate"):
        smollm_tok.encode_batch(["ok", "a\ud800"])
    with pytest.raises(LMForgeError, match="no tokenizer.json"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(LMForgeError, match="not a valid tokenizer.json"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text(smollm_tok.backend.to_str())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<nope>"}))
    with pytest.raises(LMForgeError, match="not in the vocabulary"):
        Tokenizer.from_dir(tmp_path)
