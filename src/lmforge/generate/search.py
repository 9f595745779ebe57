"""Search strategies over the engine: greedy, sampling and beam search.

Every strategy takes the same `DecodeOptions`, so every option means the same thing everywhere:
- `pipeline(input_ids, scores, valid) -> scores`: the logits-processor pipeline from
  `lmforge.generate.processors` (bias, penalties, bans, min new tokens, the constraint mask, then
  temperature/top-k/top-p/...); `valid` marks each row's own slots, so padding never counts;
- `constraint` (optional): the per-row token automaton (choice / regex / JSON schema) from
  `lmforge.generate.constraints` whose mask sits in the pipeline; the strategy advances it on the chosen
  tokens and reorders it with the beams;
- greedy or sampled choice (with a seeded generator), the pad token of finished rows, and whether to
  return log-probabilities.

`decode_steps` is a generator of per-step tokens, so `generate` collects it and `stream` yields from it.
`beam_search` follows Hugging Face's vectorised beam search step for step (top 2·beams candidates,
length-normalised finished hypotheses, the same early-stopping heuristics), so outputs match `generate`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lmforge.generate.engine import Batch, Engine, StopChecker
from lmforge.generate.processors import pick_tokens

Pipeline = Callable[..., torch.Tensor]  # (input_ids, scores, valid=slot_mask) -> scores


@dataclass
class DecodeOptions:
    """What every decoding strategy is told besides its own parameters."""

    pipeline: Pipeline | None = None  # the shared logits processors (constraint mask included)
    constraint: Any | None = None  # per-row constraint state, advanced on the chosen tokens
    do_sample: bool = False  # sample from the processed scores (else argmax)
    generator: torch.Generator | None = None  # the seeded source of every random draw
    pad_token_id: int = 0  # what finished rows are fed
    logprobs: bool = False  # return the model log-prob of each chosen token
    top_logprobs: int = 0  # and this many most likely alternatives


@dataclass
class Step:
    """One decoding step for every row: the chosen tokens and, on request, their log-probabilities."""

    tokens: torch.Tensor  # (B,) chosen token per row (pad for rows already finished)
    active: list[bool]  # rows that were still generating at this step
    logprobs: torch.Tensor | None = None  # (B,) model log-prob of the chosen token
    top_ids: torch.Tensor | None = None  # (B, n) most likely alternatives
    top_logprobs: torch.Tensor | None = None  # (B, n)


def choose(scores: torch.Tensor, do_sample: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Greedy (argmax) or sampled choice from processed scores (B, V) -> (B,)."""
    return pick_tokens(scores, do_sample, generator)


def process(
    batch: Batch, scores: torch.Tensor, pipeline: Pipeline | None, upto: int | None = None
) -> torch.Tensor:
    """Run the shared processor pipeline (constraint mask included) on next-token scores (B, V); the
    processors see every slot up to `upto` (default: the whole sequence so far), padding excluded."""
    if pipeline is None:
        return scores
    upto = batch.length if upto is None else upto
    return pipeline(batch.tokens[:, :upto], scores, valid=batch.valid_slots(upto))


def model_logprobs(logits: torch.Tensor, tokens: torch.Tensor, top_n: int) -> dict[str, torch.Tensor]:
    """Log-probabilities of `tokens` under the model's own distribution, and the top-n alternatives."""
    logp = F.log_softmax(logits.float(), dim=-1)
    out = {"logprobs": logp.gather(1, tokens[:, None])[:, 0]}
    if top_n > 0:
        out["top_logprobs"], out["top_ids"] = logp.topk(top_n, dim=-1)
    return out


def emit_step(
    tokens: torch.Tensor, logits: torch.Tensor, stopper: StopChecker, options: DecodeOptions
) -> Step:
    """The bookkeeping every decoding loop does with its chosen tokens: finished rows get padding, the
    stop checker and the constraint advance, and log-probabilities are attached when asked for."""
    active = [not f for f in stopper.finished]
    if not all(active):
        tokens = torch.where(torch.tensor(active, device=tokens.device), tokens, options.pad_token_id)
    stopper.update(tokens.tolist())
    if options.constraint is not None:
        options.constraint.advance(tokens)
    step = Step(tokens, active)
    if options.logprobs or options.top_logprobs:
        for name, value in model_logprobs(logits, tokens, options.top_logprobs).items():
            setattr(step, name, value)
    return step


def decode_steps(
    engine: Engine,
    batch: Batch,
    logits: torch.Tensor,
    stopper: StopChecker,
    options: DecodeOptions | None = None,
) -> Iterator[Step]:
    """Greedy or sampled decoding from prefilled `logits` (B, V) until every row has stopped."""
    options = options or DecodeOptions()
    while True:
        scores = process(batch, logits, options.pipeline)
        tokens = choose(scores, options.do_sample, options.generator)
        step = emit_step(tokens, logits, stopper, options)
        yield step
        if stopper.all_finished:
            return
        logits = engine.step(batch, tokens)


@dataclass
class Hypothesis:
    """A finished beam: generated tokens (with the stop token if it ended on one) and its score."""

    tokens: list[int]
    score: float  # sum of processed log-probs / generated_length ** length_penalty


def beam_search(
    engine: Engine,
    batch: Batch,
    logits: torch.Tensor,
    *,
    num_beams: int,
    max_new_tokens: int,
    stop_token_ids: frozenset[int] = frozenset(),
    stop_strings: tuple[str, ...] = (),
    tokenizer: Any = None,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    num_return_sequences: int = 1,
    options: DecodeOptions | None = None,
) -> list[list[Hypothesis]]:
    """Beam search from a prefilled batch of B rows (one per prompt); returns the best
    `num_return_sequences` hypotheses per prompt, best first.

    Each step scores every (beam, token) continuation by its running sum of processed log-probs, keeps
    the top `2 * num_beams` (more with several stop tokens), moves those that end on a stop token (or
    reach `max_new_tokens`) to the finished set with score / length ** length_penalty, and continues the
    best `num_beams` unfinished ones. `early_stopping`: True stops a prompt once `num_beams` hypotheses
    are finished; False stops when the best running beam (at its current length) cannot beat the worst
    finished one; "never" uses the best reachable length when length_penalty > 0. `options.logprobs`
    does not apply (a hypothesis has a score).
    """
    options = options or DecodeOptions()
    pipeline, constraint, pad_token_id = options.pipeline, options.constraint, options.pad_token_id
    B, nb, device = batch.size, num_beams, logits.device
    K = max(2, 1 + len(stop_token_ids)) * nb  # candidates kept per prompt
    stop_ids = torch.tensor(sorted(stop_token_ids), dtype=torch.long, device=device)
    expand = torch.arange(B, device=device).repeat_interleave(nb)
    batch.reorder(expand)
    logits = logits.index_select(0, expand)
    if constraint is not None:
        constraint.reorder(expand)

    running = torch.full((B, nb, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    running_scores = torch.zeros(B, nb, device=device)
    running_scores[:, 1:] = -1e9  # only the first beam expands at step 0: no duplicate beams
    finished = running.clone()
    finished_scores = torch.full((B, nb), -1e9, device=device)
    finished_lengths = torch.zeros((B, nb), dtype=torch.long, device=device)
    is_finished = torch.zeros((B, nb), dtype=torch.bool, device=device)
    improvable = torch.ones((B, 1), dtype=torch.bool, device=device)
    first_nb = torch.arange(K, device=device) < nb
    offsets = torch.arange(B, device=device)[:, None] * nb

    for t in range(max_new_tokens):
        log_probs = F.log_softmax(logits.float(), dim=-1)
        log_probs = process(batch, log_probs, pipeline)
        V = log_probs.shape[-1]
        total = (log_probs.view(B, nb, V) + running_scores[:, :, None]).view(B, nb * V)
        if options.do_sample:
            idx = torch.multinomial(torch.softmax(total, dim=-1), K, generator=options.generator)
            cand_scores = total.gather(1, idx)
            cand_scores, order = cand_scores.sort(dim=-1, descending=True)
            idx = idx.gather(1, order)
        else:
            cand_scores, idx = total.topk(K, dim=-1)  # (B, K)
        origin, cand_tokens = idx // V, idx % V
        cand = running.gather(1, origin[:, :, None].expand(B, K, max_new_tokens)).clone()
        cand[:, :, t] = cand_tokens

        hits = (
            torch.isin(cand_tokens, stop_ids)
            if len(stop_ids)
            else torch.zeros_like(cand_tokens, dtype=torch.bool)
        )
        if t + 1 >= max_new_tokens:
            hits = torch.ones_like(hits)
        elif stop_strings:
            hits = hits | _hits_stop_string(cand[:, :, : t + 1], stop_strings, tokenizer)

        # the best num_beams unfinished candidates run on
        run_scores = cand_scores + hits.float() * -1e9
        keep = run_scores.topk(nb, dim=-1).indices  # (B, nb)
        running = cand.gather(1, keep[:, :, None].expand(B, nb, max_new_tokens))
        running_scores = run_scores.gather(1, keep)
        parent = origin.gather(1, keep)

        # finished candidates (among the top num_beams) compete with the finished set
        just_finished = hits & first_nb[None, :]
        fin_scores = cand_scores / float(t + 1) ** length_penalty
        full = is_finished.all(dim=-1, keepdim=True) & (early_stopping is True)
        fin_scores = fin_scores + full.float() * -1e9 + (~improvable).float() * -1e9
        fin_scores = fin_scores + (~just_finished).float() * -1e9
        merged_scores = torch.cat([finished_scores, fin_scores], dim=1)
        best = merged_scores.topk(nb, dim=-1).indices
        finished = torch.cat([finished, cand], dim=1).gather(
            1, best[:, :, None].expand(B, nb, max_new_tokens)
        )
        finished_scores = merged_scores.gather(1, best)
        cand_len = torch.full((B, K), t + 1, dtype=torch.long, device=device)
        finished_lengths = torch.cat([finished_lengths, cand_len], dim=1).gather(1, best)
        is_finished = torch.cat([is_finished, just_finished], dim=1).gather(1, best)

        # stop when no prompt can improve, or (early_stopping=True) all have num_beams finished
        step_len = max_new_tokens if (early_stopping == "never" and length_penalty > 0) else t + 1
        best_running = running_scores[:, :1] / float(step_len) ** length_penalty
        worst = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True).values, -1e9)
        improvable = improvable & (best_running > worst).any(dim=-1, keepdim=True)
        all_full = bool(is_finished.all()) and early_stopping is True
        if not bool(improvable.any()) or all_full or bool(hits.all()):
            break

        flat_parent = (parent + offsets).view(-1)
        batch.reorder(flat_parent)
        if constraint is not None:
            constraint.reorder(flat_parent)
        next_tokens = running[:, :, t].reshape(-1)
        if constraint is not None:
            constraint.advance(next_tokens)
        logits = engine.step(batch, next_tokens)

    out = []
    for b in range(B):
        hyps = [
            Hypothesis(finished[b, j, : int(finished_lengths[b, j])].tolist(), float(finished_scores[b, j]))
            for j in range(min(num_return_sequences, nb))
        ]
        out.append(hyps)
    return out


def _hits_stop_string(cand: torch.Tensor, stop_strings: tuple[str, ...], tokenizer: Any) -> torch.Tensor:
    """(B, K) whether each candidate's generated text contains a stop string."""
    B, K, _ = cand.shape
    hits = torch.zeros(B, K, dtype=torch.bool, device=cand.device)
    for b in range(B):
        for k in range(K):
            text = tokenizer.decode(cand[b, k].tolist())
            hits[b, k] = any(s in text for s in stop_strings)
    return hits
