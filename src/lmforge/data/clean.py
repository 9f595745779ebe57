"""Text cleanup and document quality filters.

`normalize_text` applies Unicode normalization (NFC by default, NFKC to fold compatibility forms such
as ligatures and full-width letters) and removes control characters: line endings become `\\n`, C0/C1
controls other than `\\n`/`\\t` and invisible format characters (zero-width spaces, BOMs, bidi
overrides) are dropped.

`quality_verdict` returns the first rule a document fails with the measured value and threshold
(`quality_check` only its name), or None. The rules follow the
Gopher quality filters (Rae et al. 2021, appendix A) with thresholds in `QualityConfig`:
- length: too few characters or words, or too many characters;
- mean_word_length: mean word length outside [3, 10] characters (word salad, long tokens);
- symbol_ratio: symbols (neither letters, digits nor whitespace) per alphanumeric character;
- hash_ellipsis_ratio: `#` and `...` per word (link farms, truncated lists);
- alpha_words: too few words containing a letter (tables of numbers, code dumps);
- duplicate_lines / duplicate_line_chars: fraction of lines (and of their characters) that repeat
  an earlier line (boilerplate, menus);
- top_ngram: characters covered by the most frequent word 2-, 3- or 4-gram;
- duplicate_ngrams: characters covered by word 5- to 10-grams that occur more than once.
Lines shorter than `min_line_chars` do not count in the line rules: speaker names in a play
("HAMLET.") repeat by nature, and Gopher's paragraphs are longer units than our lines.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lmforge.errors import LMForgeError
from lmforge.options import check_types, option

NormalForm = Literal["NFC", "NFKC", "none"]

_KEEP_CONTROL = {"\n", "\t"}
_WORD = re.compile(r"\S+")


def _is_removable(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return (cat == "Cc" and ch not in _KEEP_CONTROL) or cat == "Cf"


@functools.cache
def _removable_pattern() -> re.Pattern[str]:
    """A character class of every removable code point, built once as ranges."""
    ranges: list[tuple[int, int]] = []
    for c in range(0x110000):
        if _is_removable(chr(c)):
            if ranges and ranges[-1][1] == c - 1:
                ranges[-1] = (ranges[-1][0], c)
            else:
                ranges.append((c, c))
    body = "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges
    )
    return re.compile(f"[{body}]")


def normalize_text(text: str, form: NormalForm = "NFC") -> str:
    """Normalize Unicode to `form` and remove control and invisible format characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if form != "none":
        text = unicodedata.normalize(form, text)
    return _removable_pattern().sub("", text)


@dataclass
class QualityConfig:
    """Thresholds of the quality rules; None switches a rule off (`none` on the command line; a
    list-valued rule is also off when given no values)."""

    min_chars: int | None = option(200, "shortest document kept, in characters")
    max_chars: int | None = option(None, "longest document kept, in characters")
    min_words: int | None = option(30, "fewest words a kept document has")
    min_mean_word_length: float | None = option(3.0, "shortest mean word length, in characters")
    max_mean_word_length: float | None = option(10.0, "longest mean word length, in characters")
    max_symbol_ratio: float | None = option(0.25, "most symbols per alphanumeric character")
    max_hash_ellipsis_ratio: float | None = option(0.1, "most `#` and `...` per word")
    min_alpha_word_fraction: float | None = option(0.8, "least fraction of words with a letter")
    max_duplicate_line_fraction: float | None = option(
        0.3, "most lines (of min_line_chars characters or more) that repeat an earlier line"
    )
    max_duplicate_line_char_fraction: float | None = option(
        0.2, "most characters of lines that repeat an earlier line"
    )
    min_line_chars: int = option(20, "shorter lines do not count in the duplicate-line rules")
    max_top_ngram_fraction: tuple[float, ...] | None = option(
        (0.20, 0.18, 0.16),
        "most characters covered by the most frequent word 2-, 3- and 4-gram (up to three limits; "
        "no values: rule off)",
    )
    max_duplicate_ngram_fraction: tuple[float, ...] | None = option(
        (0.15, 0.14, 0.13, 0.12, 0.11, 0.10),
        "most characters covered by repeated word 5-, 6-, ... 10-grams (up to six limits; no values: rule off)",
    )

    def __post_init__(self) -> None:
        for name in ("max_top_ngram_fraction", "max_duplicate_ngram_fraction"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):  # the command line gives a list; none given: rule off
                setattr(self, name, tuple(value) or None)
        check_types(self)
        for name, most, ns in (
            ("max_top_ngram_fraction", 3, "2..4"),
            ("max_duplicate_ngram_fraction", 6, "5..10"),
        ):
            value = getattr(self, name)
            if value is not None and len(value) > most:
                raise LMForgeError(
                    f"QualityConfig: option {name} takes at most {most} limits (n = {ns}), got {len(value)}"
                )


RULES = (
    "length",
    "mean_word_length",
    "symbol_ratio",
    "hash_ellipsis_ratio",
    "alpha_words",
    "duplicate_lines",
    "duplicate_line_chars",
    "top_ngram",
    "duplicate_ngrams",
)


_ALNUM = re.compile(r"[^\W_]+")
_SYMBOL = re.compile(r"(?:[^\w\s]|_)+")
_ALPHA_WORD = re.compile(r"\S*[^\W\d_]\S*")  # a whitespace-separated word with at least one letter


def symbol_ratio(text: str) -> float:
    """Symbols (not alphanumeric, not whitespace) per alphanumeric character."""
    alnum = sum(map(len, _ALNUM.findall(text)))  # runs, not single characters: far fewer objects
    symbols = sum(map(len, _SYMBOL.findall(text)))
    return symbols / max(alnum, 1)


def duplicate_line_stats(text: str, min_line_chars: int = 0) -> tuple[float, float]:
    """(fraction of lines, fraction of line characters) that repeat an earlier line."""
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if len(line) >= max(min_line_chars, 1)]
    if not lines:
        return 0.0, 0.0
    seen: set[str] = set()
    dup_lines = dup_chars = 0
    for line in lines:
        if line in seen:
            dup_lines += 1
            dup_chars += len(line)
        seen.add(line)
    return dup_lines / len(lines), dup_chars / sum(len(line) for line in lines)


def _ngram_hashes(word_ids: np.ndarray, n: int) -> np.ndarray:
    """A 64-bit polynomial hash of every word n-gram (collisions are negligible at corpus sizes)."""
    h = np.zeros(len(word_ids) - n + 1, dtype=np.uint64)
    for k in range(n):
        h = h * np.uint64(1_000_003) + word_ids[k : len(word_ids) - n + 1 + k]
    return h


class WordStats:
    """Words of a document as integer ids and lengths, for the n-gram repetition rules."""

    def __init__(self, words: list[str]):
        vocab: dict[str, int] = {}
        self.ids = np.array([vocab.setdefault(w, len(vocab)) for w in words], dtype=np.uint64)
        self.lengths = np.array([len(w) for w in words], dtype=np.int64)
        self.total_chars = max(int(self.lengths.sum()), 1)

    def top_ngram_char_fraction(self, n: int) -> float:
        """Characters in all occurrences of the most frequent n-gram, over characters in all words."""
        if len(self.ids) < n:
            return 0.0
        _, first, counts = np.unique(_ngram_hashes(self.ids, n), return_index=True, return_counts=True)
        best = int(np.argmax(counts))
        if counts[best] < 2:
            return 0.0
        start = int(first[best])
        return float(counts[best] * self.lengths[start : start + n].sum()) / self.total_chars

    def duplicate_ngram_char_fraction(self, n: int) -> float:
        """Characters of words covered by any n-gram occurring more than once, over characters in all
        words (a word counts once even when several duplicate n-grams overlap it)."""
        if len(self.ids) < n:
            return 0.0
        _, inverse, counts = np.unique(_ngram_hashes(self.ids, n), return_inverse=True, return_counts=True)
        starts = counts[inverse] > 1
        # Word i is covered when some duplicate n-gram starts in [i - n + 1, i].
        delta = np.zeros(len(self.ids) + 1, dtype=np.int64)
        idx = np.flatnonzero(starts)
        np.add.at(delta, idx, 1)
        np.add.at(delta, idx + n, -1)
        covered = np.cumsum(delta[:-1]) > 0
        return float(self.lengths[covered].sum()) / self.total_chars


def top_ngram_char_fraction(words: list[str], n: int) -> float:
    """Characters in all occurrences of the most frequent word n-gram, over characters in all words."""
    return WordStats(words).top_ngram_char_fraction(n)


def duplicate_ngram_char_fraction(words: list[str], n: int) -> float:
    """Characters of words covered by n-grams occurring more than once, over characters in all words."""
    return WordStats(words).duplicate_ngram_char_fraction(n)


@dataclass(frozen=True)
class Verdict:
    """Why a document failed: the rule, the measured value and the threshold it crossed."""

    rule: str
    value: float
    limit: float
    detail: str = ""

    def describe(self) -> str:
        return f"{self.detail or self.rule} = {self.value:.3g} (limit {self.limit:.3g})"


def quality_verdict(text: str, config: QualityConfig) -> Verdict | None:
    """The first rule `text` fails (see `RULES`) with the measured value, or None when it passes all."""
    c = config
    words = _WORD.findall(text)
    n_chars = len(text.strip())
    if c.min_chars is not None and n_chars < c.min_chars:
        return Verdict("length", n_chars, c.min_chars, "characters")
    if c.max_chars is not None and n_chars > c.max_chars:
        return Verdict("length", n_chars, c.max_chars, "characters")
    if c.min_words is not None and len(words) < c.min_words:
        return Verdict("length", len(words), c.min_words, "words")
    if not words:
        return None
    mean_len = sum(len(w) for w in words) / len(words)
    if c.min_mean_word_length is not None and mean_len < c.min_mean_word_length:
        return Verdict("mean_word_length", mean_len, c.min_mean_word_length)
    if c.max_mean_word_length is not None and mean_len > c.max_mean_word_length:
        return Verdict("mean_word_length", mean_len, c.max_mean_word_length)
    if c.max_symbol_ratio is not None and (ratio := symbol_ratio(text)) > c.max_symbol_ratio:
        return Verdict("symbol_ratio", ratio, c.max_symbol_ratio)
    if c.max_hash_ellipsis_ratio is not None:
        hashes = (text.count("#") + text.count("...") + text.count("…")) / len(words)
        if hashes > c.max_hash_ellipsis_ratio:
            return Verdict("hash_ellipsis_ratio", hashes, c.max_hash_ellipsis_ratio)
    if c.min_alpha_word_fraction is not None:
        alpha = len(_ALPHA_WORD.findall(text)) / len(words)
        if alpha < c.min_alpha_word_fraction:
            return Verdict("alpha_words", alpha, c.min_alpha_word_fraction)
    if c.max_duplicate_line_fraction is not None or c.max_duplicate_line_char_fraction is not None:
        line_frac, char_frac = duplicate_line_stats(text, c.min_line_chars)
        if c.max_duplicate_line_fraction is not None and line_frac > c.max_duplicate_line_fraction:
            return Verdict("duplicate_lines", line_frac, c.max_duplicate_line_fraction)
        if c.max_duplicate_line_char_fraction is not None and char_frac > c.max_duplicate_line_char_fraction:
            return Verdict("duplicate_line_chars", char_frac, c.max_duplicate_line_char_fraction)
    if c.max_top_ngram_fraction is None and c.max_duplicate_ngram_fraction is None:
        return None
    stats = WordStats([w.lower() for w in words])
    if c.max_top_ngram_fraction is not None:
        for n, limit in zip((2, 3, 4), c.max_top_ngram_fraction):
            if (frac := stats.top_ngram_char_fraction(n)) > limit:
                return Verdict("top_ngram", frac, limit, f"top {n}-gram share")
    if c.max_duplicate_ngram_fraction is not None:
        for n, limit in zip(range(5, 11), c.max_duplicate_ngram_fraction):
            if (frac := stats.duplicate_ngram_char_fraction(n)) > limit:
                return Verdict("duplicate_ngrams", frac, limit, f"duplicated {n}-gram share")
    return None


def quality_check(text: str, config: QualityConfig) -> str | None:
    """Name of the first rule `text` fails (see `RULES`), or None when it passes all of them."""
    verdict = quality_verdict(text, config)
    return None if verdict is None else verdict.rule
