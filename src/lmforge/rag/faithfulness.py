"""Faithfulness of an answer to its sources: is each sentence supported by the sources it cites?

`support(answer, sources)` scores every answer sentence against each source with two signals:
- similarity: the best cosine similarity between the sentence's embedding and the embeddings of the
  source's sentences (and of the whole source), with the MiniLM encoder unless another is given;
- overlap: the fraction of the sentence's content words (BM25 tokens: lowercased, stopwords out)
  that occur in the source.
A sentence's support by a source is their mean, in [0, 1]. Optionally (`judge=` a loaded generator; `rag
ask --faithfulness-judge`) a third signal joins the mean:
- judge: the generator's probability that the source supports the sentence, p(yes) / (p(yes) + p(no))
  for "Source: ... Statement: ... Is the statement supported by the source? yes or no" (the LLM
  reranker's yes/no scoring with another question).
Citations are `[n]` markers (1-based source numbers, `[1, 3]` and `[1][3]` both work).

`score(answer, sources)` aggregates:
- faithfulness: the fraction of sentences supported (>= threshold) by at least one source, cited or not;
- citation_recall: the fraction of sentences supported by the sources they cite, taken together;
- citation_precision: the fraction of citations whose source alone supports the sentence citing it;
- unsupported: the sentences below the threshold (the answer is flagged when there is any).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lmforge.rag.bm25 import tokenize

SUPPORT_PROMPT = (
    "Source:\n{passage}\n\nStatement: {query}\n\nIs the statement supported by the source? Answer yes or no."
)
CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_SENTENCE = re.compile(r"(?<=[.!?])(?:\s*\[\d+(?:\s*,\s*\d+)*\])*\s+(?=\S)")


@dataclass
class SentenceSupport:
    sentence: str  # without its citation markers
    citations: list[int]
    scores: dict[int, float]  # support by each source (1-based), cited or not
    similarity: dict[int, float]
    overlap: dict[int, float]
    cited_score: float  # support by the cited sources together (0 when nothing is cited)
    best_source: int | None
    judge: dict[int, float] = field(default_factory=dict)  # the generator's p(supported), when it judged

    @property
    def best_score(self) -> float:
        return max(self.scores.values(), default=0.0)


@dataclass
class Faithfulness:
    sentences: list[SentenceSupport]
    faithfulness: float
    citation_recall: float
    citation_precision: float
    threshold: float
    unsupported: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.unsupported)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flagged"] = self.flagged
        return d


def split_sentences(text: str) -> list[str]:
    """Sentences of an answer, each keeping the citation markers that follow it."""
    out, pos = [], 0
    for m in _SENTENCE.finditer(text):
        piece = text[pos : m.end()].strip()
        if piece:
            out.append(piece)
        pos = m.end()
    rest = text[pos:].strip()
    if rest:
        out.append(rest)
    return [s for s in out if CITATION.sub("", s).strip(" .")]


def citations(sentence: str) -> list[int]:
    return sorted({int(n) for group in CITATION.findall(sentence) for n in re.split(r"\s*,\s*", group)})


def _overlap(sentence: str, source_words: set[str]) -> float:
    words = tokenize(sentence)
    if not words:
        return 0.0
    return sum(w in source_words for w in words) / len(words)


def judge_probabilities(judge, sentence: str, sources: Mapping[int, str]) -> dict[int, float]:
    """{source number: the generator's p(yes) / (p(yes) + p(no)) that the source supports `sentence`}."""
    from lmforge.rag.yesno import yes_no_scores

    margins = yes_no_scores(judge, sentence, list(sources.values()), prompt=SUPPORT_PROMPT)
    return {n: float(1 / (1 + np.exp(-m))) for n, m in zip(sources, margins)}


def support(
    answer: str,
    sources: Sequence[str] | Mapping[int, str],
    encoder: Any = None,
    judge: Any = None,
) -> list[SentenceSupport]:
    """Per-sentence support scores of `answer` by `sources` (a list: source n is `sources[n - 1]`;
    or a mapping {n: text}); with `judge` (a loaded generator) its support probability is a third signal."""
    from lmforge.rag.models import load_model

    srcs = dict(sources) if isinstance(sources, Mapping) else {i + 1: t for i, t in enumerate(sources)}
    sentences = split_sentences(answer)
    if not sentences:
        return []
    encoder = encoder or load_model("minilm")
    plain = [CITATION.sub("", s).strip() for s in sentences]
    src_sents = {n: [t, *split_sentences(t)] for n, t in srcs.items()}
    flat = [x for n in srcs for x in src_sents[n]]
    texts = plain + flat
    emb = encoder.embed(texts, normalize=True).float().numpy() if texts else np.zeros((0, 1))
    a_emb, s_emb = emb[: len(plain)], emb[len(plain) :]
    spans, pos = {}, 0
    for n in srcs:
        spans[n] = (pos, pos + len(src_sents[n]))
        pos += len(src_sents[n])
    words = {n: set(tokenize(t)) for n, t in srcs.items()}
    out = []
    for i, (raw, text) in enumerate(zip(sentences, plain)):
        sim = {n: float(np.clip((s_emb[a:b] @ a_emb[i]).max(), 0, 1)) for n, (a, b) in spans.items()}
        ovl = {n: _overlap(text, words[n]) for n in srcs}
        jud = judge_probabilities(judge, text, srcs) if judge is not None else {}
        signals = [sim, ovl, *([jud] if jud else [])]
        scores = {n: sum(x[n] for x in signals) / len(signals) for n in srcs}
        cited = [n for n in citations(raw) if n in srcs]
        if cited:
            joint_words = set().union(*(words[n] for n in cited))
            parts = [max(sim[n] for n in cited), _overlap(text, joint_words)]
            parts += [max(jud[n] for n in cited)] if jud else []
            cited_score = sum(parts) / len(parts)
        else:
            cited_score = 0.0
        best = max(scores, key=scores.get) if scores else None
        out.append(SentenceSupport(text, citations(raw), scores, sim, ovl, cited_score, best, jud))
    return out


def score(
    answer: str,
    sources: Sequence[str] | Mapping[int, str],
    encoder: Any = None,
    threshold: float = 0.5,
    judge: Any = None,
) -> Faithfulness:
    """Faithfulness, citation recall and precision of `answer` (see the module docstring); `judge`, a
    loaded generator, adds its support probability to each sentence's score."""
    per = support(answer, sources, encoder, judge)
    if not per:
        return Faithfulness([], 0.0, 0.0, 0.0, threshold, [])
    faithful = [s.best_score >= threshold for s in per]
    recall = [s.cited_score >= threshold for s in per]
    cites = [(s, n) for s in per for n in s.citations]
    precision = [s.scores.get(n, 0.0) >= threshold for s, n in cites]
    return Faithfulness(
        sentences=per,
        faithfulness=float(np.mean(faithful)),
        citation_recall=float(np.mean(recall)),
        citation_precision=float(np.mean(precision)) if precision else 0.0,
        threshold=threshold,
        unsupported=[s.sentence for s, ok in zip(per, faithful) if not ok],
    )
