"""Faithfulness: per-sentence support by cited sources, citation precision and recall, flagging."""

from __future__ import annotations

import pytest

from lmforge.rag.faithfulness import citations, score, split_sentences, support

SOURCES = [
    "The Nile flows north through eleven countries into the Mediterranean Sea.",
    "Honey bees communicate the direction of flowers with a waggle dance inside the hive.",
]


def test_sentences_and_citations():
    text = "The Nile flows north [1]. Bees dance to show flowers [2][1]. Both are true [1, 2]."
    assert split_sentences(text) == [
        "The Nile flows north [1].",
        "Bees dance to show flowers [2][1].",
        "Both are true [1, 2].",
    ]
    assert (
        citations("Bees dance [2][1].") == [1, 2]
        and citations("x [1, 2]") == [1, 2]
        and citations("none") == []
    )


def test_supported_cited_answer_scores_high(minilm):
    answer = "The Nile flows north into the Mediterranean Sea [1]. Honey bees show the direction of flowers with a waggle dance [2]."
    result = score(answer, SOURCES, encoder=minilm)
    assert result.faithfulness == 1.0 and result.citation_recall == 1.0 and result.citation_precision == 1.0
    assert not result.flagged
    per = support(answer, SOURCES, encoder=minilm)
    assert [s.best_source for s in per] == [1, 2]
    assert per[0].scores[1] > per[0].scores[2] + 0.3  # the right source supports it far better


def test_wrong_citation_and_fabrication(minilm):
    answer = (
        "The Nile flows north into the Mediterranean Sea [2]. "  # true, but cites the bee source
        "Penguins invented the telescope in Antarctica in 1650 [1]."  # supported by nothing
    )
    result = score(answer, SOURCES, encoder=minilm)
    assert result.faithfulness == 0.5  # the first sentence is supported by a source, just not the cited one
    assert result.citation_recall == 0.0 and result.citation_precision == 0.0
    assert result.flagged and len(result.unsupported) == 1 and "Penguins" in result.unsupported[0]


def test_mapping_sources_and_empty_answer(minilm):
    per = support("Bees dance [7].", {7: SOURCES[1]}, encoder=minilm)
    assert per[0].citations == [7] and per[0].cited_score == pytest.approx(per[0].scores[7])
    assert score("", SOURCES, encoder=minilm).sentences == []
