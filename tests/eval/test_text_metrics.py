"""Text metrics equal their reference implementations (sacrebleu, rouge-score, nltk METEOR)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from lmforge.errors import LMForgeError
from lmforge.eval.bootstrap import bootstrap_ci
from lmforge.eval.metrics import text

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "house",
    "red",
    "blue",
    "quickly",
    "ran",
    "jumped",
    "over",
    ",",
    ".",
    "running",
    "houses",
]


def random_corpus(n: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    rng = random.Random(seed)

    def sent() -> str:
        return " ".join(rng.choices(WORDS, k=rng.randint(2, 14)))

    return [sent() for _ in range(n)], [sent() for _ in range(n)], [sent() for _ in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sacrebleu_parity(seed: int) -> None:
    preds, refs, refs2 = random_corpus(40, seed)
    # make some overlap so the scores are not all near zero
    preds = [p if i % 3 else r for i, (p, r) in enumerate(zip(preds, refs))]
    assert text.bleu(preds, refs) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-9)
    multi = [[a, b] for a, b in zip(refs, refs2)]
    assert text.bleu(preds, multi) == pytest.approx(
        sacrebleu.corpus_bleu(preds, [refs, refs2]).score, abs=1e-9
    )
    assert text.chrf(preds, refs) == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score, abs=1e-9)
    assert text.chrf(preds, refs, word_order=2) == pytest.approx(
        sacrebleu.corpus_chrf(preds, [refs], word_order=2).score, abs=1e-9
    )
    assert text.ter(preds, refs) == pytest.approx(sacrebleu.corpus_ter(preds, [refs]).score, abs=1e-9)
    assert text.ter(preds, multi) == pytest.approx(sacrebleu.corpus_ter(preds, [refs, refs2]).score, abs=1e-9)


def test_variable_number_of_references_matches_sacrebleu_none_padding() -> None:
    preds, refs, refs2 = random_corpus(10, 5)
    multi = [[a, b] if i % 2 else [a] for i, (a, b) in enumerate(zip(refs, refs2))]
    stream2 = [b if i % 2 else None for i, b in enumerate(refs2)]
    assert text.bleu(preds, multi) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs, stream2]).score)


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_parity(use_stemmer: bool) -> None:
    preds, refs, refs2 = random_corpus(30, 3)
    preds = [p.replace(" . ", " .\n") for p in preds]  # sentences for rougeLsum
    refs = [r.replace(" . ", " .\n") for r in refs]
    scorer = rouge_scorer.RougeScorer(list(text.ROUGE_TYPES), use_stemmer=use_stemmer)
    got = text.rouge(preds, refs, use_stemmer=use_stemmer)
    for t in text.ROUGE_TYPES:
        expected = [scorer.score(r, p)[t] for p, r in zip(preds, refs)]
        assert got[t] == pytest.approx(np.mean([s.fmeasure for s in expected]), abs=1e-12)
        assert got[f"{t}_recall"] == pytest.approx(np.mean([s.recall for s in expected]), abs=1e-12)
    multi = text.rouge(preds, [[a, b] for a, b in zip(refs, refs2)], use_stemmer=use_stemmer)
    expected = [scorer.score_multi([a, b], p)["rouge1"].fmeasure for p, a, b in zip(preds, refs, refs2)]
    assert multi["rouge1"] == pytest.approx(np.mean(expected), abs=1e-12)


def test_meteor_matches_nltk_reference_value() -> None:
    # No skip: `make setup` installs Debian's wordnet-base, and without it meteor() raises (next test).
    hyp = "It is a guide to action which ensures that the military always obeys the commands of the party"
    refs = [
        "It is a guide to action that ensures that the military will forever heed Party commands",
        "It is the guiding principle which guarantees the military forces always being under the command of the Party",
        "It is the practical guide for the army always to heed the directions of the party",
    ]
    # nltk's documented value for this example (nltk/test/meteor.doctest) is 0.6944.
    assert text.meteor([hyp], [refs]) == pytest.approx(0.6944, abs=5e-5)
    # WordNet synonyms count: "couch" matches "sofa" only through a synset, and nltk weighs a synonym
    # match like an exact one, so the score equals the identical sentence's; "table" does not match.
    identical = text.meteor(["the sofa is red"], ["the sofa is red"])
    assert text.meteor(["the couch is red"], ["the sofa is red"]) == pytest.approx(identical, abs=1e-12)
    assert text.meteor(["the table is red"], ["the sofa is red"]) < identical - 0.3


def test_meteor_without_wordnet_is_an_error_not_a_score(tmp_path, monkeypatch) -> None:
    """With no WordNet database anywhere METEOR refuses (naming the package to install) instead of
    scoring exact matches only."""
    import nltk.data

    monkeypatch.delenv("LMFORGE_WORDNET", raising=False)
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.setattr(text, "WORDNET_DIRS", (str(tmp_path),))
    text.load_wordnet.cache_clear()
    try:
        with pytest.raises(LMForgeError, match="wordnet-base"):
            text.meteor(["the couch is red"], ["the sofa is red"])
    finally:
        text.load_wordnet.cache_clear()


def test_bootstrap_of_bleu_brackets_the_point_and_is_reproducible() -> None:
    preds, refs, _ = random_corpus(60, 7)
    preds = [p if i % 2 else r for i, (p, r) in enumerate(zip(preds, refs))]
    metric = text.text_metric("bleu")
    stats = metric.segment_stats(preds, text.normalize_references(preds, refs))
    ci = bootstrap_ci(stats, metric.aggregate, n_resamples=200, seed=1)["bleu"]
    assert ci.value == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert ci.low < ci.value < ci.high
    again = bootstrap_ci(stats, metric.aggregate, n_resamples=200, seed=1)["bleu"]
    assert (again.low, again.high) == (ci.low, ci.high)


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(LMForgeError, match="2 predictions but 1 references"):
        text.bleu(["a", "b"], ["a"])
    with pytest.raises(LMForgeError, match="reference 1 is empty"):
        text.rouge(["a b", "c"], ["a b", ""])
    with pytest.raises(LMForgeError, match="reference 0 is empty"):
        text.chrf(["a"], [[]])
    with pytest.raises(LMForgeError, match="no predictions"):
        text.ter([], [])
    with pytest.raises(LMForgeError, match="known: bleu, chrf"):
        text.text_metric("blue")
