"""Speculative decoding: a cheap drafter proposes k tokens, the target model checks them in one forward.

Drafters: a smaller draft model sharing the target's tokenizer, or prompt lookup (copy the tokens that
followed the last earlier occurrence of the current n-gram — no second model; strong on summarising,
editing and other repetitive outputs).

Verification keeps the output exactly the target's:
- greedy: accept draft tokens while they equal the target's argmax, then take the target's own token;
  the output is token-for-token the target's greedy output;
- sampling: accept draft token x with probability min(1, p(x) / q(x)); at the first rejection draw from
  normalize(max(0, p - q)); if all k pass, draw a bonus token from p. Then every token is distributed
  exactly as the target's p (Leviathan et al. 2023, Chen et al. 2023). Prompt lookup drafts are a
  point mass, so q(x) = 1.
p and q are the *processed* distributions: the same processor pipeline (temperature, top-k/p, penalties,
...) runs on the target's and the draft's logits at every position (the constraint mask only on the
target's: a draft token the constraint forbids has p = 0 and is rejected), so speculative output
honours every option that plain decoding does.

One prompt at a time (rows would accept different numbers of tokens); the caches hold every accepted
token except the newest ("pending") one, which leads the next verification forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from lmforge.generate.engine import Batch, Engine, StepMode, StopChecker
from lmforge.generate.processors import ConstraintMask
from lmforge.generate.search import DecodeOptions, Step, choose, model_logprobs, process


@dataclass
class SpeculativeStats:
    """Acceptance bookkeeping (benchmarks report it)."""

    rounds: int = 0
    proposed: int = 0
    accepted: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


def prompt_lookup(sequence: list[int], num_tokens: int, max_ngram: int = 3) -> list[int]:
    """Draft by n-gram copy: find the latest earlier occurrence of the sequence's last n tokens
    (longest n first, n <= max_ngram) and propose the up to `num_tokens` tokens that followed it."""
    n_seq = len(sequence)
    for n in range(min(max_ngram, n_seq - 1), 0, -1):
        tail = sequence[n_seq - n :]
        for start in range(n_seq - n - 1, -1, -1):  # latest match first, never the tail itself
            if sequence[start : start + n] == tail:
                follow = sequence[start + n : start + n + num_tokens]
                if follow:
                    return follow
    return []


def _probs(scores: torch.Tensor) -> torch.Tensor:
    return torch.softmax(scores.float(), dim=-1)


def speculative_steps(
    target: Engine,
    batch: Batch,
    logits: torch.Tensor,
    stopper: StopChecker,
    *,
    draft: Engine | None = None,
    draft_mode: StepMode | None = None,
    num_draft_tokens: int = 5,
    max_ngram: int = 3,
    options: DecodeOptions | None = None,
    stats: SpeculativeStats | None = None,
) -> Iterator[Step]:
    """Decode one prefilled prompt (batch of 1) speculatively; yields one `Step` per accepted token.

    With `draft=None` the drafter is prompt lookup. `logits` are the target's prefill logits.
    `draft_mode` says how the draft's one-token steps run (default: its engine's choice).
    """
    if batch.size != 1:
        raise ValueError("speculative decoding runs one prompt at a time")
    options = options or DecodeOptions()
    pipeline, constraint, generator = options.pipeline, options.constraint, options.generator
    do_sample, logprobs, top_logprobs = options.do_sample, options.logprobs, options.top_logprobs
    stats = stats if stats is not None else SpeculativeStats()
    device = logits.device

    def emit(token: int, raw_logits: torch.Tensor) -> Step:
        tokens = torch.tensor([token], device=device)
        stopper.update([token])
        if constraint is not None:
            constraint.advance(tokens)
        step = Step(tokens, [True])
        if logprobs or top_logprobs:
            for name, value in model_logprobs(raw_logits[None], tokens, top_logprobs).items():
                setattr(step, name, value)
        return step

    # first token from the prefill logits, exactly as plain decoding picks it
    first = int(choose(process(batch, logits, pipeline), do_sample, generator)[0])
    yield emit(first, logits[0])
    sequence = batch.tokens[0, : batch.length].tolist() + [first]  # accepted tokens, incl. pending

    draft_batch, draft_logits = None, None
    draft_pipeline = pipeline.without(ConstraintMask) if pipeline is not None else None
    if draft is not None:
        draft_batch = draft.new_batch([sequence[:-1]], batch.capacity, mode=draft_mode)
        draft.prefill(draft_batch)  # draft cache: every accepted token except the pending one

    while not stopper.all_finished:
        remaining = stopper.max_new_tokens - stopper.counts[0]
        k = min(num_draft_tokens, remaining - 1)
        # 1. propose k tokens (q: their processed draft distributions, None for point masses)
        q_dists: list[torch.Tensor] | None = None
        if draft is None:
            proposal = prompt_lookup(sequence, k, max_ngram) if k > 0 else []
        else:
            missing = sequence[draft_batch.length :]  # accepted tokens the draft has not seen yet
            draft_logits = draft.step(draft_batch, torch.tensor([missing], device=device))[:, -1]
            proposal, q_dists = [], []
            for i in range(k):
                scores = process(draft_batch, draft_logits, draft_pipeline)
                token = int(choose(scores, do_sample, generator)[0])
                proposal.append(token)
                if do_sample:
                    q_dists.append(_probs(scores[0]))
                if i + 1 < k:
                    draft_logits = draft.step(draft_batch, torch.tensor([token], device=device))
        # 2. verify: one target forward over [pending, proposal...]
        start = batch.length
        block = torch.tensor([[sequence[-1], *proposal]], device=device)
        target_logits = target.step(batch, block)[0]  # (1 + k, V)
        stats.rounds += 1
        stats.proposed += len(proposal)
        # 3. accept/reject position by position; p_i sees the sequence up to draft token i
        n_ok = 0
        for i in range(len(proposal) + 1):
            scores = process(batch, target_logits[i : i + 1], pipeline, upto=start + 1 + i)
            if i == len(proposal):  # every draft accepted: bonus token from p
                token, ok = int(choose(scores, do_sample, generator)[0]), False
            else:
                q = q_dists[i] if do_sample and q_dists else None
                token, ok = _verify(scores[0], proposal[i], q, do_sample, generator)
                n_ok += ok
            yield emit(token, target_logits[i])
            sequence.append(token)
            if stopper.all_finished or not ok:
                break
        stats.accepted += n_ok
        # 4. roll the caches back to the accepted tokens (the newest one stays pending)
        batch.crop(len(sequence) - 1)
        if draft_batch is not None:
            draft_batch.crop(min(draft_batch.length, len(sequence) - 1))


def _verify(
    p_scores: torch.Tensor,
    token: int,
    q: torch.Tensor | None,
    do_sample: bool,
    generator: torch.Generator | None,
) -> tuple[int, bool]:
    """Check one draft token against the target's processed scores; return (token to emit, accepted)."""
    if not do_sample:
        best = int(p_scores.argmax())
        return best, best == token
    p = _probs(p_scores)
    q_token = float(q[token]) if q is not None else 1.0
    u = float(torch.rand((), generator=generator, device=p.device))
    if u < min(1.0, float(p[token]) / q_token):
        return token, True
    residual = (p - q).clamp(min=0) if q is not None else p.clone()
    if q is None:
        residual[token] = 0.0
    if float(residual.sum()) <= 0:  # p == q: cannot happen after a rejection, but stay safe
        residual = p
    return int(torch.multinomial(residual / residual.sum(), 1, generator=generator)), False
