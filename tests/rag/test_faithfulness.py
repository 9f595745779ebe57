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


@pytest.fixture(scope="module")
def tiny_judge():
    """A tiny random chat model whose tokenizer has yes/no as single tokens (the judge's answer words)."""
    import lmforge
    from tiny import tiny_chat_tokenizer, tiny_model

    words = ["yes", "no", "Yes", "No", "Source", "Statement", "supported", "the", "source", *SOURCES]
    return lmforge.LM(tiny_model("llama", vocab_size=320, max_seq_len=2048), tiny_chat_tokenizer(words))


def test_generator_as_judge_is_a_third_signal(minilm, tiny_judge):
    """With `judge`, each (sentence, source) support is the mean of similarity, overlap and the judge's
    p(yes) / (p(yes) + p(no)), computed here from a plain forward pass of the model over the prompt."""
    import torch

    from lmforge.rag.faithfulness import SUPPORT_PROMPT

    tok = tiny_judge.tokenizer
    answer = "The Nile flows north [1]. Bees dance to show flowers [2]."
    plain = support(answer, SOURCES, encoder=minilm)
    judged = support(answer, SOURCES, encoder=minilm, judge=tiny_judge)

    def single(words):  # the ids of the words that are one token, bare or after a space
        return {tok.encode(t)[0] for w in words for t in (w, " " + w) if len(tok.encode(t)) == 1}

    yes, no = single(["yes", "Yes", "YES"]), single(["no", "No", "NO"])
    assert yes and no
    for p, j in zip(plain, judged):
        assert not p.judge and set(j.judge) == {1, 2}
        for n, source in enumerate(SOURCES, 1):
            content = SUPPORT_PROMPT.format(passage=source, query=j.sentence)
            ids = tok.encode_chat([{"role": "user", "content": content}], add_generation_prompt=True)
            with torch.no_grad():
                probs = torch.softmax(tiny_judge.model(torch.tensor([ids]))[0, -1].float(), -1)
            p_yes, p_no = float(probs[sorted(yes)].sum()), float(probs[sorted(no)].sum())
            assert j.judge[n] == pytest.approx(p_yes / (p_yes + p_no), abs=1e-4)
            assert j.scores[n] == pytest.approx((j.similarity[n] + j.overlap[n] + j.judge[n]) / 3, abs=1e-6)
            assert p.scores[n] == pytest.approx((p.similarity[n] + p.overlap[n]) / 2, abs=1e-6)
        c = j.citations[0]
        assert j.cited_score == pytest.approx((j.similarity[c] + j.overlap[c] + j.judge[c]) / 3, abs=1e-6)
