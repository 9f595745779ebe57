"""Train/val split and token shards: round trip through the tokenizer, worker-count independence."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_helpers import paragraph

from lmforge.data.shards import open_split, read_manifest, split_train_val, token_dtype, write_split
from lmforge.errors import LMForgeError


def test_split_is_seeded_document_level_and_sized():
    mask = split_train_val(200, 0.1, seed=7)
    assert mask.sum() == 20
    assert np.array_equal(mask, split_train_val(200, 0.1, seed=7))
    assert not np.array_equal(mask, split_train_val(200, 0.1, seed=8))
    assert split_train_val(3, 0.01, seed=0).sum() == 1  # at least one validation document
    assert split_train_val(2, 0.9, seed=0).sum() == 1  # never all of them
    assert split_train_val(5, 0.0, seed=0).sum() == 0
    with pytest.raises(LMForgeError, match="val-fraction"):
        split_train_val(5, 1.0, seed=0)


def test_dtype_by_vocab_size():
    assert token_dtype(50_000) == np.uint16
    assert token_dtype(65_536) == np.uint16
    assert token_dtype(65_537) == np.uint32


def _write(tmp_path, tok, texts, workers, shard_tokens=10**9):
    entry = write_split(texts, tok, tmp_path, "train", workers=workers, shard_tokens=shard_tokens)
    manifest = {
        "format": "lmforge-shards",
        "version": 1,
        "dtype": token_dtype(tok.vocab_size).name,
        "splits": {"train": entry},
        "tokenizer": {"fingerprint": tok.fingerprint, "vocab_size": tok.vocab_size},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return entry


def test_shards_round_trip_and_eos_separation(tmp_path, tiny_tok):
    texts = [paragraph(i, 30 + i) for i in range(25)]
    entry = _write(tmp_path, tiny_tok, texts, workers=1, shard_tokens=500)
    assert len(entry["shards"]) > 1
    assert entry["documents"] == 25 and sum(s["documents"] for s in entry["shards"]) == 25
    assert entry["bytes"] == sum(len(t.encode()) for t in texts)
    tokens = np.concatenate([np.asarray(m) for m in open_split(tmp_path, "train")])
    assert tokens.dtype == np.uint16 and tokens.size == entry["tokens"]
    eos = tiny_tok.eos_token_id
    expected = [i for t in texts for i in [*tiny_tok.encode(t), eos]]
    assert tokens.tolist() == expected
    # every shard ends at a document boundary
    for shard in open_split(tmp_path, "train"):
        assert shard[-1] == eos
    pieces = np.split(tokens, np.flatnonzero(tokens == eos) + 1)[:-1]
    assert [tiny_tok.decode(p[:-1].tolist()) for p in pieces] == texts


def test_workers_do_not_change_the_bytes(tmp_path, tiny_tok):
    from lmforge.data import shards

    texts = [paragraph(i, 200) for i in range(300)]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    old = shards._chunks
    shards._chunks = lambda texts, chunk_chars: old(texts, 5000)  # many chunks so both workers get work
    try:
        _write(a, tiny_tok, texts, workers=1)
        _write(b, tiny_tok, texts, workers=2)
    finally:
        shards._chunks = old
    assert (a / "train_000.bin").read_bytes() == (b / "train_000.bin").read_bytes()


def test_truncated_shard_and_bad_manifest_are_errors(tmp_path, tiny_tok):
    _write(tmp_path, tiny_tok, [paragraph(1)], workers=1)
    path = tmp_path / "train_000.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(LMForgeError, match="missing or truncated"):
        open_split(tmp_path, "train")
    with pytest.raises(LMForgeError, match="no 'val' split"):
        open_split(tmp_path, "val")
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(LMForgeError, match="not an lmforge-shards"):
        read_manifest(tmp_path)
    with pytest.raises(LMForgeError, match="no manifest.json"):
        read_manifest(tmp_path / "elsewhere")


class BigVocab:
    """A stand-in tokenizer with ids above uint16: one id per character, offset past 65535."""

    vocab_size = 70_000
    eos_token_id = 69_999
    fingerprint = "big"

    def encode_batch(self, texts):
        return [[66_000 + ord(c) % 1000 for c in t] for t in texts]


def test_large_vocabularies_use_uint32(tmp_path):
    tok = BigVocab()
    entry = _write(tmp_path, tok, ["abc", "de"], workers=1)
    assert entry["tokens"] == 7
    (shard,) = open_split(tmp_path, "train")
    assert shard.dtype == np.uint32
    assert shard.tolist() == [66_097, 66_098, 66_099, 69_999, 66_100, 66_101, 69_999]
