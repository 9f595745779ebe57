"""Training all three algorithms, their round trips, inputs and bad input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.assets import shakespeare_files
from lmforge.errors import LMForgeError
from lmforge.tokenizer import Tokenizer
from lmforge.tokenizer.train import iter_documents, resolve_inputs, train_tokenizer

CORPUS = shakespeare_files()[0].read_text(encoding="utf-8")[:40000]
HELD_OUT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer"


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "play.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained_bpe(tmp_path_factory, corpus_file):
    out = tmp_path_factory.mktemp("bpe")
    train_tokenizer([corpus_file], algorithm="bpe", vocab_size=600, show_progress=False, output=out)
    return Tokenizer.from_dir(out)


@pytest.mark.parametrize("algorithm", ["bpe", "wordpiece", "unigram"])
def test_trained_tokenizer_loads_back_and_round_trips(algorithm, corpus_file, tmp_path):
    tok = train_tokenizer(
        [corpus_file], algorithm=algorithm, vocab_size=600, show_progress=False, output=tmp_path
    )
    assert {p.name for p in tmp_path.iterdir()} == {"tokenizer.json", "tokenizer_config.json"}
    again = Tokenizer.from_dir(tmp_path)
    assert again.fingerprint == tok.fingerprint
    assert again.vocab_size <= 600
    ids = again.encode(HELD_OUT)
    assert ids == tok.encode(HELD_OUT)
    expected = HELD_OUT.lower() if algorithm == "wordpiece" else HELD_OUT
    decoded = again.decode(ids)
    if algorithm == "wordpiece":  # WordPiece keeps no whitespace: only the characters must come back
        assert "".join(decoded.split()) == "".join(expected.split())
    else:
        assert decoded == expected


def test_bpe_loads_in_transformers(trained_bpe, tmp_path):
    from transformers import AutoTokenizer

    trained_bpe.save(tmp_path)
    ref = AutoTokenizer.from_pretrained(str(tmp_path))
    assert ref(HELD_OUT, add_special_tokens=False)["input_ids"] == trained_bpe.encode(HELD_OUT)
    assert ref.eos_token == "<|endoftext|>"


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_trained_bpe_round_trips_any_unicode(trained_bpe, text):
    assert trained_bpe.decode(trained_bpe.encode(text)) == text


def test_wordpiece_specials_and_post_processor(corpus_file):
    tok = train_tokenizer([corpus_file], algorithm="wordpiece", vocab_size=500, show_progress=False)
    vocab = tok.get_vocab()
    assert [vocab[t] for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]] == [0, 1, 2, 3, 4]
    ids = tok.encode("Hello there", add_special_tokens=True)
    assert ids[0] == vocab["[CLS]"] and ids[-1] == vocab["[SEP]"]
    assert tok.pad_token_id == 0 and tok.unk_token_id == 1
    assert tok.encode("東", add_special_tokens=False) == [vocab["[UNK]"]]
    cased = train_tokenizer(
        [corpus_file], algorithm="wordpiece", vocab_size=500, lowercase=False, show_progress=False
    )
    assert cased.decode(cased.encode("KING")) != "king"


def test_unigram_is_metaspace_with_bos(corpus_file):
    tok = train_tokenizer([corpus_file], algorithm="unigram", vocab_size=500, show_progress=False)
    assert tok.encode("the king", add_special_tokens=True)[0] == tok.bos_token_id
    assert all(p.startswith("▁") for p in tok.tokenize("the king").tokens[:1])


def test_inputs_directory_jsonl_and_extra_specials(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("alpha beta gamma " * 50)
    (tmp_path / "docs" / "skip.bin").write_bytes(b"\x00\x01")
    rows = [{"body": "delta epsilon " * 20, "id": i} for i in range(5)]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    tok = train_tokenizer(
        [tmp_path / "docs", f"{tmp_path / 'data.jsonl'}:body"],
        vocab_size=300,
        extra_special_tokens=["<|im_start|>", "<|im_end|>"],
        show_progress=False,
    )
    vocab = tok.get_vocab()
    assert "Ġalpha" in vocab and "Ġdelta" in vocab
    assert tok.encode("<|im_start|>", allow_special=True) == [vocab["<|im_start|>"]]
    with pytest.raises(LMForgeError, match="no field 'text'"):
        train_tokenizer([tmp_path / "data.jsonl"], vocab_size=300, show_progress=False)


def test_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + b"hello world " * 30)
    (document,) = iter_documents(resolve_inputs([path]))
    assert document.startswith("hello world")


def test_non_utf8_bytes_are_replaced_with_a_warning(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café naïve ".encode("latin-1") * 30)
    with pytest.warns(UserWarning, match="60 invalid UTF-8 byte sequence"):
        tok = train_tokenizer([path], vocab_size=300, show_progress=False)
    assert "\ufffd" in tok.decode(tok.encode("caf\ufffd"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inputs": []}, "no training input"),
        ({"inputs": ["/no/such/file.txt"]}, "not found"),
        ({"inputs": ["EMPTYDIR"]}, "no text files"),
        ({"inputs": ["EMPTYFILE"]}, "has no text"),
        ({"inputs": ["BLANKFILE"]}, "has no text"),
        ({"inputs": ["CORPUS"], "vocab_size": 100}, "smaller than 256 bytes"),
        ({"inputs": ["CORPUS"], "algorithm": "wordpiece", "vocab_size": 30}, "smaller than the alphabet"),
        ({"inputs": ["CORPUS"], "algorithm": "unigram", "vocab_size": 20}, "smaller than the alphabet"),
        (
            {"inputs": ["CORPUS"], "algorithm": "sentencepiece"},
            "option algorithm must be one of 'bpe', 'wordpiece', 'unigram'",
        ),
        ({"inputs": ["CORPUS"], "special_tokens": {"start": "<s>"}}, "bad special token"),
        ({"inputs": ["BADJSONL:text"]}, "not valid JSON"),
    ],
)
def test_bad_input_is_one_line_error(tmp_path, corpus_file, kwargs, message):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    names = {
        "EMPTYDIR": tmp_path / "empty_dir",
        "EMPTYFILE": tmp_path / "empty.txt",
        "BLANKFILE": tmp_path / "blank.txt",
        "CORPUS": corpus_file,
        "BADJSONL:text": f"{tmp_path / 'bad.jsonl'}:text",
    }
    kwargs = dict(kwargs)
    kwargs["inputs"] = [names.get(str(i), i) for i in kwargs["inputs"]]
    with pytest.raises(LMForgeError, match=message) as info:
        train_tokenizer(show_progress=False, **kwargs)
    assert "\n" not in str(info.value)


def test_shakespeare_train_source_leaves_out_the_held_out_play():
    from lmforge.assets import HELD_OUT_PLAY
    from lmforge.tokenizer.train import resolve_inputs

    names = [s.path.name for s in resolve_inputs(["shakespeare-train"])]
    assert len(names) == 41 and HELD_OUT_PLAY not in names
