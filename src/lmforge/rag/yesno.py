"""A generator's yes/no answer as a score: log p(yes) - log p(no) at the answer position of a chat
prompt (each summed over the word's case variants). The LLM reranker asks whether a passage answers a
question (`rerank.py`); the faithfulness judge whether a source supports a statement (`faithfulness.py`).
Prompts run as one right-padded batch: a causal model's last real position never sees the padding after
it, so no mask is needed, and only that position goes through the head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

YES_NO_PROMPT = (
    "Passage:\n{passage}\n\nQuestion: {query}\n\n"
    "Does the passage contain information that answers the question? Answer yes or no."
)


def _word_ids(tokenizer, words: Sequence[str]) -> list[int]:
    ids = set()
    for w in words:
        for text in (w, " " + w):
            enc = tokenizer.encode(text)
            if len(enc) == 1:
                ids.add(enc[0])
    return sorted(ids)


@torch.inference_mode()
def yes_no_scores(
    lm,
    query: str,
    passages: Sequence[str],
    *,
    max_passage_tokens: int = 320,
    batch_size: int = 8,
    prompt: str = YES_NO_PROMPT,
) -> list[float]:
    """log p(yes) - log p(no) of the generator for each passage (higher = more relevant). `prompt`
    (with `{passage}` and `{query}`) asks the yes/no question: relevance by default; the faithfulness
    judge asks whether the passage supports a statement."""
    tok = lm.tokenizer
    yes, no = _word_ids(tok, ["yes", "Yes", "YES"]), _word_ids(tok, ["no", "No", "NO"])
    prompts = []
    for p in passages:
        ids = tok.encode(p)
        if len(ids) > max_passage_tokens:
            p = tok.decode(ids[:max_passage_tokens])
        messages = [{"role": "user", "content": prompt.format(passage=p, query=query)}]
        prompts.append(tok.encode_chat(messages, add_generation_prompt=True))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    model = lm.model
    out: list[float] = []
    for i in range(0, len(prompts), batch_size):
        rows = prompts[i : i + batch_size]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=lm.device)
        h = model.hidden_states(ids)  # (B, T, C)
        last = h[torch.arange(len(rows)), torch.tensor([len(r) - 1 for r in rows])]  # (B, C)
        logp = torch.log_softmax(model.lm_head(last).float(), dim=-1)  # (B, V)
        score = torch.logsumexp(logp[:, yes], dim=-1) - torch.logsumexp(logp[:, no], dim=-1)
        out.extend(score.tolist())
    return out
