"""Speculative decoding: greedy output is the target's greedy output token for token; sampled output
follows the target's distribution exactly (chi-square over many seeds), with a draft model and with
prompt lookup."""

from __future__ import annotations

import pytest
import torch
from generate_helpers import tiny_model
from scipy.stats import chisquare

from lmforge.generate.engine import Engine, StopChecker
from lmforge.generate.search import DecodeOptions, decode_steps
from lmforge.generate.speculative import SpeculativeStats, prompt_lookup, speculative_steps


def plain_greedy(model, prompt, n):
    engine = Engine(model)
    batch = engine.new_batch([prompt], len(prompt) + n)
    logits = engine.prefill(batch)
    return [int(s.tokens[0]) for s in decode_steps(engine, batch, logits, StopChecker(1, n))]


def speculative(target, prompt, n, draft=None, k=4, do_sample=False, seed=0, stop_ids=()):
    engine = Engine(target)
    batch = engine.new_batch([prompt], len(prompt) + n)
    logits = engine.prefill(batch)
    stats = SpeculativeStats()
    stopper = StopChecker(1, n, frozenset(stop_ids))
    steps = speculative_steps(
        engine,
        batch,
        logits,
        stopper,
        draft=Engine(draft) if draft is not None else None,
        num_draft_tokens=k,
        options=DecodeOptions(do_sample=do_sample, generator=torch.Generator().manual_seed(seed)),
        stats=stats,
    )
    return [int(s.tokens[0]) for s in steps], stats


@pytest.mark.parametrize("k", [1, 3, 6])
def test_greedy_with_draft_model_equals_target_greedy(k):
    target, draft = tiny_model("llama", seed=0, scale=20.0), tiny_model("llama", seed=1, scale=20.0)
    # a draft that often agrees: the target itself with slightly perturbed output weights
    close = tiny_model("llama", seed=0, scale=20.0)
    with torch.no_grad():
        noise = torch.randn(close.lm_head.weight.shape, generator=torch.Generator().manual_seed(0))
        close.lm_head.weight.add_(0.3 * noise)  # its own generator: not whatever state earlier tests left
    for prompt in ([1, 2, 3, 4, 5], [9, 9, 9], [100, 101, 102, 100, 101]):
        reference = plain_greedy(target, prompt, 30)
        for d in (draft, close):
            out, stats = speculative(target, prompt, 30, draft=d, k=k)
            assert out == reference
    _, stats = speculative(target, [1, 2, 3, 4, 5], 30, draft=close, k=k)
    assert stats.accepted > 0  # the verification path that accepts drafts is exercised


def test_greedy_with_prompt_lookup_equals_target_greedy():
    target = tiny_model("gpt2", seed=2, scale=20.0)
    for prompt in ([5, 6, 7, 8, 5, 6, 7, 8, 5, 6], [1, 2, 3]):
        out, stats = speculative(target, prompt, 40)
        assert out == plain_greedy(target, prompt, 40)
    assert stats.proposed > 0


def test_stop_token_inside_an_accepted_block_ends_generation():
    target = tiny_model("llama", seed=0, scale=20.0)
    reference = plain_greedy(target, [1, 2, 3, 4, 5], 30)
    stop = reference[7]
    out, _ = speculative(target, [1, 2, 3, 4, 5], 30, draft=target, k=5, stop_ids=[stop])
    assert out == reference[: reference.index(stop) + 1]


def test_prompt_lookup_proposes_what_followed_the_latest_match():
    assert prompt_lookup([1, 2, 3, 9, 1, 2, 4, 7, 1, 2], 3) == [4, 7, 1]
    assert prompt_lookup([5, 6, 7, 5, 6], 10, max_ngram=2) == [7, 5, 6]
    assert prompt_lookup([1, 2, 3], 4) == []


# -- sampling: the output distribution is the target's --------------------------------------------

VOCAB = 6


@torch.no_grad()
def exact_joint(model, prompt, temperature=1.0):
    """P(t2, t3) of plain sampling, summing over t1: a dict {(t2, t3): prob} from no-cache forwards."""

    def probs(ids):
        return torch.softmax(model(torch.tensor([ids]))[0, -1] / temperature, -1).double()

    p1 = probs(prompt)
    joint = {}
    for t1 in range(VOCAB):
        p2 = probs(prompt + [t1])
        for t2 in range(VOCAB):
            p3 = probs(prompt + [t1, t2])
            for t3 in range(VOCAB):
                joint[(t2, t3)] = joint.get((t2, t3), 0.0) + float(p1[t1] * p2[t2] * p3[t3])
    return joint


def chi_square_p(counts, probs, n):
    """p-value of observed counts against probabilities, pooling cells expected below 5."""
    total = sum(probs.values())
    observed, expected, pool_o, pool_e = [], [], 0.0, 0.0
    for cell, p in probs.items():
        p = p / total
        if p * n < 5:
            pool_o, pool_e = pool_o + counts.get(cell, 0), pool_e + p * n
        else:
            observed.append(counts.get(cell, 0))
            expected.append(p * n)
    if pool_e > 0:
        observed.append(pool_o)
        expected.append(pool_e)
    return chisquare(observed, expected).pvalue


def sampled_joint(target, prompt, draft, n_samples, k):
    counts, proposed, accepted = {}, 0, 0
    for seed in range(n_samples):
        out, stats = speculative(target, prompt, 3, draft=draft, k=k, do_sample=True, seed=seed)
        counts[(out[1], out[2])] = counts.get((out[1], out[2]), 0) + 1
        proposed, accepted = proposed + stats.proposed, accepted + stats.accepted
    return counts, accepted / proposed


@pytest.mark.parametrize(
    "use_draft,n",
    [
        (True, 800),
        (False, 800),
        pytest.param(True, 6000, marks=pytest.mark.slow),
        pytest.param(False, 6000, marks=pytest.mark.slow),
    ],
    ids=["draft-model", "prompt-lookup", "draft-model-6000", "prompt-lookup-6000"],
)
def test_speculative_sampling_matches_target_distribution(use_draft, n):
    target = tiny_model("llama", seed=10, scale=3.0, vocab_size=VOCAB, n_layer=1)
    draft = tiny_model("llama", seed=11, scale=3.0, vocab_size=VOCAB, n_layer=1) if use_draft else None
    prompt = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]  # repetitive, so prompt lookup proposes tokens
    counts, acceptance = sampled_joint(target, prompt, draft, n, k=2)
    assert 0.05 < acceptance < 0.95  # both the accept and the reject/resample paths are exercised
    assert chi_square_p(counts, exact_joint(target, prompt), n) > 1e-3
    # the test has power: the same samples are far from the draft's and from a sharpened distribution
    if use_draft:
        assert chi_square_p(counts, exact_joint(draft, prompt), n) < 1e-4
    assert chi_square_p(counts, exact_joint(target, prompt, temperature=0.5), n) < 1e-4
