"""Token-aware chunking with overlap that respects sections, paragraphs and sentences.

A document is cut into *units* (sentences, each inside a paragraph, each inside a Markdown section;
HTML arrives here with its headings already written as Markdown ones), each with its character span.
Units are packed greedily into chunks of at most `chunk_tokens` encoder tokens; a section heading
always starts a new chunk; the next chunk starts with the trailing units of the one before that fit in
`overlap` tokens (sentence-level overlap, as LlamaIndex's SentenceSplitter does). A single sentence
longer than a chunk is cut at token boundaries (the tokenizer's character offsets). Every chunk's text
is exactly `document.text[start:end]`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lmforge.errors import LMForgeError

_HEADING = re.compile(r"^#{1,6}[ \t]+\S.*$", re.M)
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
# a sentence ends at . ! ? (and closing quotes/brackets) followed by whitespace, or at a line break
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n")


@dataclass
class Chunk:
    start: int
    end: int
    text: str
    section: str
    tokens: int


@dataclass
class _Unit:
    start: int
    end: int
    section: str
    new_section: bool  # first unit of a section: a chunk boundary


def _spans(text: str, pattern: re.Pattern, start: int, end: int) -> list[tuple[int, int]]:
    """The pieces of text[start:end] between matches of `pattern`, without surrounding whitespace."""
    out, pos = [], start
    for m in pattern.finditer(text, start, end):
        out.append((pos, m.start()))
        pos = m.end()
    out.append((pos, end))
    spans = []
    for a, b in out:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            spans.append((a, b))
    return spans


def units(text: str) -> list[_Unit]:
    """Sentences with their section, in order; a heading line is a unit of its own."""
    heads = [(m.start(), m.end(), m.group(0).lstrip("#").strip()) for m in _HEADING.finditer(text)]
    bounds = [(0, "")] + [(h[0], h[2]) for h in heads]
    out: list[_Unit] = []
    for i, (start, title) in enumerate(bounds):
        end = bounds[i + 1][0] if i + 1 < len(bounds) else len(text)
        first = True
        for pa, pb in _spans(text, _PARAGRAPH, start, end):
            for sa, sb in _spans(text, _SENTENCE_END, pa, pb):
                out.append(_Unit(sa, sb, title, first and i > 0))
                first = False
    return out


def chunk_text(text: str, tokenizer, chunk_tokens: int, overlap: int) -> list[Chunk]:
    """Chunks of `text` measured in `tokenizer` tokens (no special tokens counted)."""
    if chunk_tokens < 8:
        raise LMForgeError(f"chunk_tokens must be at least 8, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens // 2 + 1:
        raise LMForgeError(
            f"overlap must be between 0 and half of chunk_tokens ({chunk_tokens}), got {overlap}"
        )
    us = units(text)
    if not us:
        return []
    counts = [len(ids) for ids in tokenizer.encode_batch([text[u.start : u.end] for u in us])]
    pieces: list[tuple[_Unit, int]] = []  # (unit, tokens), long sentences already cut
    for u, n in zip(us, counts):
        if n <= chunk_tokens:
            pieces.append((u, n))
            continue
        offsets = tokenizer.tokenize(text[u.start : u.end]).offsets
        first = True
        for i in range(0, n, chunk_tokens - overlap if overlap else chunk_tokens):
            a = u.start + offsets[i][0]
            j = min(i + chunk_tokens, n)
            b = u.start + offsets[j - 1][1]
            pieces.append((_Unit(a, b, u.section, u.new_section and first), j - i))
            first = False
            if j == n:
                break
    chunks: list[Chunk] = []
    current: list[tuple[_Unit, int]] = []

    def flush() -> None:
        if current:
            a, b = current[0][0].start, current[-1][0].end
            chunks.append(Chunk(a, b, text[a:b], current[-1][0].section, sum(n for _, n in current)))

    for unit, n in pieces:
        total = sum(m for _, m in current)
        if current and (unit.new_section or total + n > chunk_tokens):
            flush()
            carry: list[tuple[_Unit, int]] = []
            if overlap and not unit.new_section:
                kept = 0
                for prev in reversed(current):
                    if kept + prev[1] > overlap or kept + prev[1] + n > chunk_tokens:
                        break
                    carry.insert(0, prev)
                    kept += prev[1]
                if len(carry) == len(current):  # never repeat a whole chunk
                    carry = carry[1:]
            current = carry
        current.append((unit, n))
    flush()
    return chunks
