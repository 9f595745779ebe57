"""Chunking: exact character spans, the token budget, sentence-level overlap, section boundaries."""

from __future__ import annotations

import pytest

from lmforge.errors import LMForgeError
from lmforge.rag.chunking import chunk_text, units

TEXT = (
    "# Title\n\nFirst sentence is here. Second sentence follows it! Third one asks why?\n\n"
    "A new paragraph starts. It has two sentences.\n\n## Part two\n\nOnly this sentence is in part two. "
    + "word " * 70
    + "end.\n"
)


def test_spans_budget_overlap_and_sections(minilm):
    tok = minilm.tokenizer
    chunks = chunk_text(TEXT, tok, chunk_tokens=16, overlap=6)
    assert len(chunks) > 4
    for c in chunks:
        assert TEXT[c.start : c.end] == c.text  # spans are exact
        assert (
            len(tok.encode(c.text)) <= 16 + 1
        )  # the budget (sentence pieces re-tokenized may differ by one)
    # the heading of part two starts a chunk, and no chunk crosses into it from part one
    starts = [c.start for c in chunks]
    assert TEXT.index("## Part two") in starts
    assert all(not (c.start < TEXT.index("## Part two") < c.end) for c in chunks)
    assert {c.section for c in chunks} == {"Title", "Part two"}
    # overlap: a chunk after another in the same section begins inside it, at a sentence start
    same = [(a, b) for a, b in zip(chunks, chunks[1:]) if a.section == b.section and b.text[0] != "#"]
    assert any(b.start < a.end for a, b in same)
    # the 70-word run-on sentence was cut at token boundaries into pieces within the budget
    long_pieces = [c for c in chunks if "word word" in c.text]
    assert len(long_pieces) >= 4


def test_no_overlap_tiles_the_text(minilm):
    chunks = chunk_text(TEXT, minilm.tokenizer, chunk_tokens=20, overlap=0)
    for a, b in zip(chunks, chunks[1:]):
        assert a.end <= b.start and not TEXT[a.end : b.start].strip()  # only whitespace between


def test_units_follow_sentences_and_paragraphs():
    spans = [TEXT[u.start : u.end] for u in units(TEXT)]
    assert spans[:4] == [
        "# Title",
        "First sentence is here.",
        "Second sentence follows it!",
        "Third one asks why?",
    ]


def test_bad_chunk_settings(minilm):
    with pytest.raises(LMForgeError, match="chunk_tokens"):
        chunk_text(TEXT, minilm.tokenizer, chunk_tokens=4, overlap=0)
    with pytest.raises(LMForgeError, match="overlap"):
        chunk_text(TEXT, minilm.tokenizer, chunk_tokens=32, overlap=30)
