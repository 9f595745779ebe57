"""Answers from retrieved chunks: numbered sources in a prompt that fits the budget, `[n]` citations,
streaming, multi-hop retrieval, question decomposition and adaptive (Self-RAG-style) gating.

The prompt is the generator's chat template with a system message asking for `[n]` citations and a
user message holding the numbered sources and the question. Sources go in rank order while they fit in
`context_tokens` (the answer's `max_new_tokens` reserved); the first that does not fit whole is cut at
a sentence end if at least 32 of its tokens fit, and the rest are left out.

- Multi-hop (`hops > 1`): after each round the model reads the sources so far and writes one follow-up
  search query; its results join the sources (IRCoT / self-ask style iterative retrieval).
- Decomposition (`decompose`): the model splits the question into up to three sub-questions, each is
  searched, and the rankings are fused by reciprocal rank.
- Adaptive gating (`adaptive`): the model first answers closed-book; if its mean token probability
  is at least `confidence_threshold` that answer stands and nothing is retrieved, otherwise it
  retrieves. `Answer.retrieved` and `Answer.confidence` say which happened.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from lmforge.errors import LMForgeError
from lmforge.rag.retrieve import rrf

SYSTEM = (
    "You answer questions using only the numbered sources given. After each sentence, cite the sources "
    "that support it as [n]. If the sources do not contain the answer, say that you do not know."
)
CLOSED_BOOK = "Answer the question in one short sentence."
FOLLOW_UP = (
    "Question: {question}\n\nWhat the sources found so far say:\n{notes}\n\n"
    "Write one short search query for the information still missing to answer the question. "
    "Reply with the query only."
)
DECOMPOSE = (
    "Split this question into at most three simpler questions that together answer it, one per line, "
    "nothing else.\n\nQuestion: {question}"
)
MIN_CUT_TOKENS = 32


@dataclass
class Source:
    n: int
    path: str
    title: str
    section: str
    start: int
    end: int
    text: str  # what the prompt holds (possibly cut)
    score: float
    truncated: bool = False


@dataclass
class Answer:
    question: str
    text: str
    sources: list[Source]
    retrieved: bool
    confidence: float | None = None  # closed-book mean token probability (adaptive gating)
    queries: list[str] = field(default_factory=list)  # the search queries that ran, in order
    prompt_tokens: int = 0
    dropped: int = 0  # retrieved chunks left out by the budget
    faithfulness: Any = None  # a faithfulness.Faithfulness

    def citations(self) -> list[int]:
        from lmforge.rag.faithfulness import citations

        return citations(self.text)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["faithfulness"] = self.faithfulness.to_dict() if self.faithfulness is not None else None
        return d


def _messages(question: str, sources: list[Source]) -> list[dict[str, str]]:
    blocks = []
    for s in sources:
        head = s.title + (f" — {s.section}" if s.section and s.section != s.title else "")
        blocks.append(f"[{s.n}] ({head}) {' '.join(s.text.split())}")
    user = "Sources:\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def build_prompt(
    lm, question: str, hits: list, context_tokens: int, max_new_tokens: int
) -> tuple[list[int], list[Source], int]:
    """(prompt ids, the sources it holds, how many hits were left out) within the token budget."""
    tok = lm.tokenizer
    budget = min(context_tokens, lm.config.max_seq_len) - max_new_tokens
    base = len(tok.encode_chat(_messages(question, [])))
    if base > budget:
        raise LMForgeError(
            f"the question alone takes {base} tokens, over the budget of {budget} "
            f"(context_tokens {context_tokens} - max_new_tokens {max_new_tokens}): shorten it or raise context_tokens"
        )
    sources: list[Source] = []
    ids = tok.encode_chat(_messages(question, []))
    for h in hits:
        src = Source(len(sources) + 1, h.path, h.title, h.section, h.start, h.end, h.text, h.score)
        trial = tok.encode_chat(_messages(question, [*sources, src]))
        if len(trial) <= budget:
            sources.append(src)
            ids = trial
            continue
        room = budget - len(ids) - 24  # the source's header and separators
        if room >= MIN_CUT_TOKENS:
            piece = tok.decode(tok.encode(h.text)[:room])
            cut = max(piece.rfind(". "), piece.rfind(".\n"))
            src.text, src.truncated = (piece[: cut + 1] if cut > len(piece) // 3 else piece), True
            trial = tok.encode_chat(_messages(question, [*sources, src]))
            if len(trial) <= budget:
                sources.append(src)
                ids = trial
        break
    return ids, sources, len(hits) - len(sources)


def _generate(lm, messages_or_ids, max_new_tokens: int, logprobs: bool = False):
    from lmforge.generate.api import chat, generate

    opts = {"max_new_tokens": max_new_tokens, "do_sample": False, "logprobs": logprobs}
    if isinstance(messages_or_ids, list) and messages_or_ids and isinstance(messages_or_ids[0], dict):
        return chat(lm, messages_or_ids, **opts)
    return generate(lm, messages_or_ids, **opts)


def closed_book(lm, question: str, max_new_tokens: int) -> tuple[str, float]:
    """(answer without sources, its mean token probability)."""
    out = _generate(
        lm,
        [{"role": "system", "content": CLOSED_BOOK}, {"role": "user", "content": question}],
        max_new_tokens,
        True,
    )
    lps = out.logprobs or []
    conf = math.exp(sum(lps) / len(lps)) if lps else 0.0
    return out.text.strip(), conf


def _one_line(text: str) -> str:
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    return re.sub(r"^(query|search query)\s*:\s*", "", line, flags=re.I).strip(" \"'")


def gather(index, lm, question: str, cfg) -> tuple[list, list[str]]:
    """Hits for the question after decomposition and follow-up hops, and the queries that ran."""
    search_opts = {k: v for k, v in asdict(cfg).items() if k in search_fields()}
    queries = [question]
    if cfg.decompose:
        out = _generate(lm, [{"role": "user", "content": DECOMPOSE.format(question=question)}], 64)
        subs = [re.sub(r"^\s*(\d+[.)]|[-*])\s*", "", ln).strip() for ln in out.text.splitlines()]
        queries += [s for s in subs if len(s) > 3][:3]
        rankings = [[(h.chunk_id, h.score) for h in index.search(q, **search_opts)] for q in queries]
        by_id = {h.chunk_id: h for q in queries for h in index.search(q, **search_opts)}
        hits = [by_id[cid] for cid, _ in rrf(rankings)][: cfg.k]
    else:
        hits = index.search(question, **search_opts)
    for _ in range(cfg.hops - 1):
        notes = "\n".join(f"- {' '.join(h.text.split())[:300]}" for h in hits[:3])
        out = _generate(
            lm, [{"role": "user", "content": FOLLOW_UP.format(question=question, notes=notes)}], 24
        )
        follow = _one_line(out.text)
        if not follow or follow in queries:
            break
        queries.append(follow)
        seen = {h.chunk_id for h in hits}
        hits = hits + [h for h in index.search(follow, **search_opts) if h.chunk_id not in seen]
    return hits, queries


def search_fields() -> frozenset[str]:
    """The options an ask passes to each search: every `SearchConfig` field (AskConfig extends it), so a
    search option added there reaches `rag ask` too (a hand-kept list once dropped rerank_weight)."""
    from dataclasses import fields

    from lmforge.rag.config import SearchConfig

    return frozenset(f.name for f in fields(SearchConfig))


def ask_stream(
    index, question: str, cfg, faithfulness: bool = True, lm: Any = None
) -> Iterator[str | Answer]:
    """Yield the answer's text pieces as they are generated, then the finished `Answer` (`lm`: a
    loaded generator to use instead of `cfg.generator`)."""
    from lmforge.generate.api import stream
    from lmforge.rag.models import load_model

    if not isinstance(question, str) or not question.strip():
        raise LMForgeError("empty question: give the question to answer")
    lm = lm or load_model(cfg.generator)
    confidence = None
    if cfg.adaptive:
        text, confidence = closed_book(lm, question, min(cfg.max_new_tokens, 48))
        if confidence >= cfg.confidence_threshold:
            yield text
            yield Answer(question, text, [], retrieved=False, confidence=confidence)
            return
    hits, queries = gather(index, lm, question, cfg)
    ids, sources, dropped = build_prompt(lm, question, hits, cfg.context_tokens, cfg.max_new_tokens)
    pieces = []
    for delta in stream(lm, ids, max_new_tokens=cfg.max_new_tokens, do_sample=False):
        pieces.append(delta.text)
        yield delta.text
    text = "".join(pieces).strip()
    answer = Answer(question, text, sources, True, confidence, queries, len(ids), dropped)
    if faithfulness and sources and text:
        from lmforge.rag.faithfulness import score

        answer.faithfulness = score(
            text,
            [s.text for s in sources],
            threshold=cfg.support_threshold,
            judge=lm if cfg.faithfulness_judge else None,
        )
    yield answer
