"""Contrastive search and contrastive decoding equal straightforward no-cache re-implementations of
their papers' formulas, batched with left padding included."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from generate_helpers import tiny_model

from lmforge.generate.contrastive import (
    contrastive_decoding_steps,
    contrastive_scores,
    contrastive_search_steps,
)
from lmforge.generate.engine import Engine, StopChecker
from lmforge.generate.search import decode_steps


@torch.no_grad()
def naive_contrastive_search(model, prompt, n, k, alpha):
    """Su et al. 2022, eq. 2, recomputing everything from scratch at every step."""
    ids = list(prompt)
    for _ in range(n):
        h = model.hidden_states(torch.tensor([ids]))[0]  # (L, C)
        probs = torch.softmax(model.lm_head(h[-1]), -1)
        top_p, top_ids = probs.topk(k)
        scores = []
        for p, v in zip(top_p.tolist(), top_ids.tolist()):
            h_v = model.hidden_states(torch.tensor([ids + [v]]))[0, -1]
            penalty = F.cosine_similarity(h_v[None], h, dim=-1).max().item()
            scores.append((1 - alpha) * p - alpha * penalty)
        ids.append(top_ids[max(range(k), key=scores.__getitem__)].item())
    return ids[len(prompt) :]


@torch.no_grad()
def naive_contrastive_decoding(expert, amateur, prompt, n, alpha):
    """Li et al. 2023: argmax of log p_e - log p_a over {v : p_e(v) >= alpha * max p_e}."""
    ids = list(prompt)
    for _ in range(n):
        lp_e = torch.log_softmax(expert(torch.tensor([ids]))[0, -1], -1)
        lp_a = torch.log_softmax(amateur(torch.tensor([ids]))[0, -1], -1)
        plausible = lp_e.exp() >= alpha * lp_e.exp().max()
        ids.append(int(torch.where(plausible, lp_e - lp_a, -math.inf).argmax()))
    return ids[len(prompt) :]


def run(steps, stopper):
    tokens = torch.stack([s.tokens for s in steps], dim=1).tolist()
    return [row[: stopper.counts[i]] for i, row in enumerate(tokens)]


def test_contrastive_search_matches_reference_batched():
    model = tiny_model("llama", seed=20, scale=8.0)
    prompts = [[1, 2, 3, 4, 5, 6], [40, 41], [7, 8, 9, 7]]
    engine = Engine(model)
    batch = engine.new_batch(prompts, 6 + 12)
    stopper = StopChecker(len(prompts), 12)
    out = run(contrastive_search_steps(engine, batch, stopper, top_k=4, penalty_alpha=0.6), stopper)
    for prompt, row in zip(prompts, out):
        assert row == naive_contrastive_search(model, prompt, 12, k=4, alpha=0.6)


def test_contrastive_search_without_penalty_is_greedy_and_penalty_changes_output():
    model = tiny_model("gpt2", seed=21, scale=8.0)
    prompt = [5, 6, 7]
    engine = Engine(model)
    stopper = StopChecker(1, 15)
    plain = run(
        contrastive_search_steps(engine, engine.new_batch([prompt], 20), stopper, top_k=3, penalty_alpha=0.0),
        stopper,
    )
    batch = engine.new_batch([prompt], 20)
    greedy_stopper = StopChecker(1, 15)
    greedy = run(decode_steps(engine, batch, engine.prefill(batch), greedy_stopper), greedy_stopper)
    assert plain == greedy
    stopper = StopChecker(1, 15)
    penalised = run(
        contrastive_search_steps(engine, engine.new_batch([prompt], 20), stopper, top_k=3, penalty_alpha=0.9),
        stopper,
    )
    assert penalised != greedy


def test_contrastive_decoding_matches_reference_batched():
    expert = tiny_model("llama", seed=30, scale=8.0)
    amateur = tiny_model("llama", seed=31, scale=8.0, n_layer=1)
    prompts = [[1, 2, 3, 4], [100, 7]]
    e, a = Engine(expert), Engine(amateur)
    stopper = StopChecker(2, 10)
    steps = contrastive_decoding_steps(
        e, e.new_batch(prompts, 14), a, a.new_batch(prompts, 14), stopper, alpha=0.1
    )
    out = run(steps, stopper)
    for prompt, row in zip(prompts, out):
        assert row == naive_contrastive_decoding(expert, amateur, prompt, 10, alpha=0.1)


def test_contrastive_scores_keep_only_plausible_tokens():
    expert = torch.tensor([[0.0, math.log(0.5), math.log(0.05), -30.0]])
    amateur = torch.tensor([[0.0, -5.0, -9.0, -40.0]])
    scores = contrastive_scores(expert, amateur, math.log(0.1))
    assert torch.isinf(scores[0, 2]) and torch.isinf(scores[0, 3])  # p_e below alpha * max p_e
    assert int(scores.argmax()) == 1  # favoured by the expert much more than by the amateur
