"""tiktoken rank files, SentencePiece .model files and llama-type GGUF vocabularies, each against the
library that defines the format."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.assets import asset_path, shakespeare_files
from lmforge.errors import LMForgeError
from lmforge.tokenizer import Tokenizer

PLAY = shakespeare_files()[2].read_text(encoding="utf-8")
EXTRA = ["  Hello  world!\n\n  x  \t\n", "123456 1,000.5", "naïve café 日本語 🎭👩‍👩‍👧", "don't WON'T I'll"]


@pytest.fixture(scope="module")
def gpt2_pair():
    """Ours from the rank file, and tiktoken's own gpt2 encoding: its constructor in
    tiktoken_ext.openai_public gives the pattern, special tokens and vocabulary size, and only the ranks
    it would download are read from the same local file."""
    import tiktoken
    import tiktoken.load
    from tiktoken_ext import openai_public

    path = asset_path("gpt2.tiktoken")
    ranks = tiktoken.load.load_tiktoken_bpe(str(path))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(openai_public, "data_gym_to_mergeable_bpe_ranks", lambda **_: ranks)
        spec = openai_public.gpt2()
    return Tokenizer.from_tiktoken(path), tiktoken.Encoding(**spec)


def test_gpt2_ranks_match_tiktoken_on_a_corpus(gpt2_pair):
    tok, oracle = gpt2_pair
    assert tok.vocab_size == oracle.n_vocab == 50257
    assert tok.encode(PLAY) == oracle.encode_ordinary(PLAY)
    lines = PLAY.splitlines()[:2000] + EXTRA
    assert tok.encode_batch(lines) == oracle.encode_ordinary_batch(lines)
    text = "end of doc<|endoftext|>next"
    assert tok.encode(text, allow_special=True) == oracle.encode(text, allowed_special="all")
    assert tok.eos_token_id == 50256


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=50))
def test_gpt2_ranks_match_tiktoken_on_random_text(gpt2_pair, text):
    tok, oracle = gpt2_pair
    assert tok.encode(text) == oracle.encode_ordinary(text)
    assert tok.decode(tok.encode(text)) == text


def test_bad_rank_file(tmp_path):
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("IQ== 0\nnot-base64 1\n")
    with pytest.raises(LMForgeError, match="bad.tiktoken:2"):
        Tokenizer.from_tiktoken(bad)


def _train_spm(tmp_path, model_type: str, **options) -> str:
    import sentencepiece as spm

    prefix = tmp_path / f"spm_{model_type}"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(PLAY.splitlines()[:3000]),
        model_prefix=str(prefix),
        vocab_size=600,
        model_type=model_type,
        minloglevel=2,
        **options,
    )
    return f"{prefix}.model"


HELD_OUT = shakespeare_files()[4].read_text(encoding="utf-8").splitlines()[200:500] + EXTRA


@pytest.mark.parametrize(
    ("model_type", "options"),
    [
        ("bpe", {"byte_fallback": True}),
        ("unigram", {}),
        ("bpe", {"user_defined_symbols": ["<|user|>"], "byte_fallback": True}),
    ],
)
def test_sentencepiece_model_matches_sentencepiece(tmp_path, model_type, options):
    import sentencepiece as spm

    path = _train_spm(tmp_path, model_type, **options)
    oracle = spm.SentencePieceProcessor(model_file=path)
    tok = Tokenizer.from_sentencepiece(path)
    lines = [line for line in HELD_OUT if line.strip()]
    for line in lines + ["a <|user|> b"]:
        assert tok.encode(line) == oracle.encode(line), line
    assert tok.unk_token_id == oracle.unk_id()
    assert tok.bos_token_id == oracle.bos_id()
    for line in lines[:50]:
        ids = tok.encode(line)
        if oracle.unk_id() not in ids:  # SentencePiece renders <unk> as " ⁇ "
            assert tok.decode(ids) == oracle.decode(ids)


def test_llama_type_gguf_vocabulary_matches_sentencepiece(tmp_path):
    """Build GGUF metadata the way llama.cpp's converter does for a SentencePiece BPE model."""
    import sentencepiece as spm

    path = _train_spm(
        tmp_path,
        "bpe",
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
    )
    oracle = spm.SentencePieceProcessor(model_file=path)
    types = []
    for i in range(oracle.get_piece_size()):
        kind = 1
        if oracle.is_unknown(i):
            kind = 2
        elif oracle.is_control(i):
            kind = 3
        elif oracle.is_byte(i):
            kind = 6
        types.append(kind)
    meta = {
        "general.architecture": "llama",
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [oracle.id_to_piece(i) for i in range(oracle.get_piece_size())],
        "tokenizer.ggml.scores": [oracle.get_score(i) for i in range(oracle.get_piece_size())],
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": oracle.bos_id(),
        "tokenizer.ggml.eos_token_id": oracle.eos_id(),
        "tokenizer.ggml.unknown_token_id": oracle.unk_id(),
    }
    tok = Tokenizer.from_gguf_metadata(meta)
    for line in HELD_OUT:
        if line.strip():
            assert tok.encode(line) == oracle.encode(line), line
    # llama-type vocabularies add BOS by default
    assert tok.encode("hi there", add_special_tokens=True) == [oracle.bos_id(), *oracle.encode("hi there")]
    assert tok.decode(tok.encode("héllo 🎭 world")) == "héllo 🎭 world"


def test_load_any_dispatch(tmp_path):
    assert Tokenizer.load("gpt2.tiktoken").vocab_size == 50257
    assert Tokenizer.load(asset_path("minilm") / "vocab.txt").token_to_id("[CLS]") == 101
    with pytest.raises(LMForgeError, match="not found"):
        Tokenizer.load("gpt2")
    (tmp_path / "x.bin").write_bytes(b"\0")
    with pytest.raises(LMForgeError, match="unknown tokenizer file type"):
        Tokenizer.load(tmp_path / "x.bin")
    (tmp_path / "x.model").write_bytes(io.BytesIO(b"garbage").read())
    with pytest.raises(LMForgeError, match="SentencePiece"):
        Tokenizer.load(tmp_path / "x.model")


@pytest.fixture(scope="module")
def spm_tok(tmp_path_factory):
    return Tokenizer.from_sentencepiece(_train_spm(tmp_path_factory.mktemp("spm"), "bpe", byte_fallback=True))


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_sentencepiece_stream_equals_decode(spm_tok, data):
    """Byte-fallback tokens (<0xF0> ...) and the dummy-prefix strip, streamed one token at a time."""
    pieces = spm_tok.encode("héllo 🎭 東京 world")
    ids = data.draw(
        st.lists(st.one_of(st.integers(0, spm_tok.vocab_size - 1), st.sampled_from(pieces)), max_size=30)
    )
    decoder = spm_tok.incremental_decoder()
    streamed = "".join(decoder.add(i) for i in ids) + decoder.flush()
    assert streamed == spm_tok.decode(ids)
