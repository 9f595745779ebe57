"""Rerankers: MMR for diversity, an LLM that judges relevance with its yes/no log-probabilities, and
a hook for a cross-encoder.

- MMR (Carbonell & Goldstein, 1998): pick, one at a time, the candidate maximizing
  lambda * sim(query, c) - (1 - lambda) * max sim(c, already picked), cosine similarities of embeddings.
- LLM yes/no: the generator reads "passage + question: does the passage help answer it? yes or no" in
  its chat template; the score is log p(yes) - log p(no) at the answer position (each summed over the
  word's case variants). Prompts run as one right-padded batch: a causal model's last real position
  never sees the padding after it, so no mask is needed, and only that position goes through the head.
- Sentence: the best cosine similarity between the query's embedding and those of a chunk's sentences
  (the chunk's embedding averages its topics; the one sentence that answers stands out). The encoder
  only; a chunk's sentence vectors are embedded the first time it is reranked and cached in the store
  (`Index.sentence_vectors`), so a query pays only for chunks no earlier query reranked
  (benchmarks/results/rag_latency.json). Each sentence is embedded in a forward of its own: a batched
  forward gives a row that differs in the last bits with its batch-mates (up to 2e-7 here), and the cache
  must return what the uncached path computes (benchmarks/rag_cache_check.py); on these short
  sentences one at a time is also faster at 1 thread than padded batches of 64.
- Query likelihood (UPR, Sachan et al. 2022): the generator reads "Passage: ... Please write a question
  based on this passage. Question:" and the score is the mean log-probability of the query's tokens after
  it, i.e. how well the passage predicts the question. Unlike the yes/no judgement, which a 135M model
  answers near chance, this asks the model only to do what it was trained for: predict text. Rows run
  right-padded in batches (the padding comes after every scored position), and only the query's
  positions go through the head. `hybrid-rerank` uses it on the hybrid top 5, chosen on the development
  sets only (benchmarks/rag_ql_study.py).
- Cross-encoder: any callable `(query, [texts]) -> [scores]`, e.g. a sentence-transformers CrossEncoder's
  `lambda q, ts: model.predict([(q, t) for t in ts])`.

A relevance reranker's order is fused with the first stage's by a weight (1 = its order alone: the
query-likelihood default, which reorders only the hybrid top 5; the sentence reranker's 0.2, over the
top 30, keeps the first stage as the stronger signal). The default fusion,
`rerank_fusion="rrf"`, fuses the two orders by weighted reciprocal-rank fusion (`fuse_orders`);
`"weighted"` sums both scores min-max normalized over the reordered candidates (`fuse_scores`), so a
margin counts, not only a rank. A dev-only study preferred the weighted sum by one question
(benchmarks/rag_rerank_study.py); the test sets scored it below rrf (benchmarks/results/rag_eval.json).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lmforge.rag.yesno import YES_NO_PROMPT, yes_no_scores

# part of the cache key: bump when the splitting or the way sentences are embedded changes
SENTENCE_VECTORS_VERSION = 2

__all__ = [
    "SENTENCE_VECTORS_VERSION",
    "YES_NO_PROMPT",
    "best_sentence_scores",
    "fuse_orders",
    "fuse_scores",
    "mmr",
    "query_likelihood_scores",
    "sentence_scores",
    "sentence_vectors",
    "yes_no_scores",
]

CrossEncoder = Callable[[str, list[str]], Sequence[float]]


def mmr(query: np.ndarray, cands: np.ndarray, k: int, lam: float = 0.7) -> list[int]:
    """Indices into `cands` (rows of unit vectors) in MMR order, at most k of them."""
    if len(cands) == 0:
        return []
    rel = cands @ query
    sim = cands @ cands.T
    picked: list[int] = []
    left = list(range(len(cands)))
    while left and len(picked) < k:
        if picked:
            redundancy = sim[np.ix_(left, picked)].max(axis=1)
        else:
            redundancy = np.zeros(len(left))
        value = lam * rel[left] - (1 - lam) * redundancy
        best = left[int(np.argmax(value))]
        picked.append(best)
        left.remove(best)
    return picked


def sentence_vectors(
    embed: Callable[[list[str]], np.ndarray], texts: Sequence[str], max_sentences: int = 40
) -> list[np.ndarray]:
    """For each text, the unit embeddings (sentences, d) `embed` gives its sentences (the first
    `max_sentences`; a text without sentence breaks is one sentence), one sentence per `embed` call, so a
    sentence's vector depends on that sentence alone (never on what else is embedded with it)."""
    from lmforge.rag.faithfulness import split_sentences

    pieces = [split_sentences(text)[:max_sentences] or [text] for text in texts]
    vectors = {s: embed([s])[0] for s in dict.fromkeys(s for p in pieces for s in p)}
    return [np.stack([vectors[s] for s in p]) for p in pieces]


def best_sentence_scores(query: np.ndarray, vectors: Sequence[np.ndarray]) -> list[float]:
    """For each text's sentence vectors, the best inner product with `query` (a unit vector)."""
    if not vectors:
        return []
    owner = np.repeat(np.arange(len(vectors)), [len(v) for v in vectors])
    best = np.full(len(vectors), -np.inf)
    np.maximum.at(best, owner, np.concatenate(vectors) @ query)
    return best.tolist()


def sentence_scores(
    embed: Callable[[list[str]], np.ndarray], query: np.ndarray, texts: Sequence[str], max_sentences: int = 40
) -> list[float]:
    """For each text, the best inner product of `query` (unit vector) with its sentences' unit
    embeddings (uncached: `Index.sentence_vectors` keeps them in the store)."""
    return best_sentence_scores(query, sentence_vectors(embed, texts, max_sentences))


QUERY_LIKELIHOOD_PROMPT = "Passage: {passage}\nPlease write a question based on this passage.\nQuestion:"


def query_likelihood_scores(
    lm, query: str, passages: Sequence[str], *, max_passage_tokens: int = 320, batch_size: int = 8
) -> list[float]:
    """For each passage, the generator's mean log-probability of the query's tokens after
    `QUERY_LIKELIHOOD_PROMPT` (the passage cut to its first `max_passage_tokens` tokens)."""
    import torch

    tok = lm.tokenizer
    question = tok.encode(" " + query.strip())
    if not question:
        return [0.0] * len(passages)
    prompts = []
    for p in passages:
        ids = tok.encode(p)
        if len(ids) > max_passage_tokens:
            p = tok.decode(ids[:max_passage_tokens])
        prompts.append(tok.encode(QUERY_LIKELIHOOD_PROMPT.format(passage=p)))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    target = torch.tensor(question, device=lm.device)
    steps = torch.arange(len(question), device=lm.device)
    out: list[float] = []
    with torch.inference_mode():
        for i in range(0, len(prompts), batch_size):
            rows = prompts[i : i + batch_size]
            width = max(len(r) for r in rows) + len(question)
            ids = [r + question + [pad] * (width - len(r) - len(question)) for r in rows]
            h = lm.model.hidden_states(torch.tensor(ids, device=lm.device))  # (B, T, C)
            for j, r in enumerate(rows):
                logp = torch.log_softmax(lm.model.lm_head(h[j, len(r) - 1 + steps]).float(), dim=-1)
                out.append(logp[steps, target].mean().item())
    return out


def fuse_scores(
    ids: Sequence[int], first: Sequence[float], scores: Sequence[float], weight: float
) -> list[tuple[int, float]]:
    """`ids` (in first-stage order, with first-stage scores `first`) reordered by weight * minmax(reranker
    score) + (1 - weight) * minmax(first-stage score), each normalized to [0, 1] over these candidates (all
    equal: 1); weight 1 is the reranker's order alone (its scores kept). Ties keep the first-stage order."""
    if weight >= 1:
        return fuse_orders(ids, scores, weight)

    def minmax(x: Sequence[float]) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        span = x.max() - x.min()
        return (x - x.min()) / span if span > 0 else np.ones_like(x)

    fused = weight * minmax(scores) + (1 - weight) * minmax(first)
    order = sorted(range(len(ids)), key=lambda i: (-fused[i], i))
    return [(ids[i], float(fused[i])) for i in order]


def fuse_orders(
    ids: Sequence[int], scores: Sequence[float], weight: float, rrf_k: int = 60
) -> list[tuple[int, float]]:
    """`ids` (in first-stage order) reordered by weight / (rrf_k + reranker rank) + (1 - weight) /
    (rrf_k + first-stage rank); weight 1 is the reranker's order alone (its scores kept). Ties keep the
    first-stage order."""
    by_score = sorted(range(len(ids)), key=lambda i: (-scores[i], i))
    if weight >= 1:
        return [(ids[i], float(scores[i])) for i in by_score]
    rank = {i: r for r, i in enumerate(by_score, 1)}
    fused = [(1 - weight) / (rrf_k + i + 1) + weight / (rrf_k + rank[i]) for i in range(len(ids))]
    order = sorted(range(len(ids)), key=lambda i: (-fused[i], i))
    return [(ids[i], fused[i]) for i in order]
