"""Contrastive search and contrastive decoding.

Contrastive *search* (Su et al. 2022, "A Contrastive Framework for Neural Text Generation"): among the
top-k candidates v of the processed distribution p, pick
    argmax_v (1 - alpha) * p(v) - alpha * max_j cos(h_v, h_j)
where h_v is the model's last hidden state after appending v and h_j runs over every earlier token of the
row (prompt included, padding excluded). The second term, the degeneration penalty, keeps the text from
repeating itself. All k candidates of every row run through the model in one forward of B*k rows; the
winner's cache row is kept.

Contrastive *decoding* (Li et al. 2023, "Contrastive Decoding: Open-ended Text Generation as
Optimization"): an expert and a smaller amateur model sharing a tokenizer; among the plausible tokens
V_head = {v : p_expert(v) >= alpha * max_w p_expert(w)} the score is log p_expert(v) - log p_amateur(v)
(-inf outside V_head), and the next token is its argmax (or a sample from its softmax). The processor
pipeline (penalties, bans, bias, constraint, temperature...) shapes the expert's distribution before
V_head is taken, so a banned or constrained-out token is never plausible.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from lmforge.generate.engine import Batch, Engine, StopChecker
from lmforge.generate.search import DecodeOptions, Step, choose, emit_step, process


def contrastive_search_steps(
    engine: Engine,
    batch: Batch,
    stopper: StopChecker,
    *,
    top_k: int,
    penalty_alpha: float,
    options: DecodeOptions | None = None,
) -> Iterator[Step]:
    """Contrastive search over an un-prefilled batch (it needs the prompt's hidden states); it is
    deterministic, so `options.do_sample` does not apply."""
    options = options or DecodeOptions()
    logits, context = engine.prefill_hidden(batch)  # (B, V), (B, prompt_slots, C)
    B, k = batch.size, top_k
    context_mask = batch.valid_slots(batch.prompt_slots)  # (B, L) real tokens
    rows = torch.arange(B, device=logits.device)
    while True:
        scores = process(batch, logits, options.pipeline)
        probs = torch.softmax(scores, dim=-1)
        top_p, top_ids = probs.topk(k, dim=-1)  # (B, k)

        # run every candidate: B*k rows, each a copy of its row's cache
        expand = rows.repeat_interleave(k)
        batch.reorder(expand)
        cand_logits, cand_hidden = engine.step_hidden(batch, top_ids.reshape(-1))  # (B*k, V), (B*k, C)
        cand_hidden = cand_hidden.view(B, k, -1)
        sim = F.cosine_similarity(cand_hidden[:, :, None, :], context[:, None, :, :], dim=-1)  # (B, k, L)
        sim = sim.masked_fill(~context_mask[:, None, :], -math.inf)
        penalty = sim.max(dim=-1).values  # (B, k)
        score = (1.0 - penalty_alpha) * top_p - penalty_alpha * penalty
        score = score.masked_fill(top_p <= 0, -math.inf)  # never pick a token the processors removed
        best = score.argmax(dim=-1)  # (B,)

        step = emit_step(top_ids[rows, best], logits, stopper, options)
        tokens, active = step.tokens, step.active
        yield step
        if stopper.all_finished:
            return

        chosen = rows * k + best
        batch.reorder(chosen)  # keep the winner's cache row (it already holds the chosen token)
        if not all(active):
            batch.tokens[:, batch.length - 1] = tokens
        logits = cand_logits.view(B, k, -1)[rows, best]
        context = torch.cat([context, cand_hidden[rows, best][:, None]], dim=1)
        context_mask = torch.cat([context_mask, torch.ones(B, 1, dtype=torch.bool, device=tokens.device)], 1)


def contrastive_decoding_steps(
    expert: Engine,
    batch: Batch,
    amateur: Engine,
    amateur_batch: Batch,
    stopper: StopChecker,
    *,
    alpha: float = 0.1,
    options: DecodeOptions | None = None,
) -> Iterator[Step]:
    """Contrastive decoding with an expert and an amateur over two un-prefilled batches of the same prompts."""
    options = options or DecodeOptions()
    expert_logits = expert.prefill(batch)
    amateur_logits = amateur.prefill(amateur_batch)
    log_alpha = math.log(alpha)
    while True:
        expert_scores = process(batch, expert_logits, options.pipeline)  # the options shape the expert
        scores = contrastive_scores(expert_scores, amateur_logits, log_alpha)
        tokens = choose(scores, options.do_sample, options.generator)
        step = emit_step(tokens, expert_logits, stopper, options)
        yield step
        if stopper.all_finished:
            return
        expert_logits = expert.step(batch, tokens)
        amateur_logits = amateur.step(amateur_batch, tokens)


def contrastive_scores(
    expert_logits: torch.Tensor, amateur_logits: torch.Tensor, log_alpha: float
) -> torch.Tensor:
    """log p_e - log p_a on the plausible set {log p_e >= log alpha + max log p_e}, -inf elsewhere."""
    lp_e = F.log_softmax(expert_logits.float(), dim=-1)
    lp_a = F.log_softmax(amateur_logits.float(), dim=-1)
    plausible = lp_e >= lp_e.max(dim=-1, keepdim=True).values + log_alpha
    return (lp_e - lp_a).masked_fill(~plausible, -math.inf)
