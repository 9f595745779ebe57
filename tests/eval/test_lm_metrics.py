"""Perplexity with a sliding window scores every token exactly once with the window's context."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.errors import LMForgeError
from lmforge.eval.metrics import lm as lm_metrics
from lmforge.model import Transformer
from tiny import tiny_model


def tiny_decoder(max_seq_len: int = 64) -> Transformer:
    return tiny_model("llama", seed=1, vocab_size=53, max_seq_len=max_seq_len)


def per_token_reference(model, ids: list[int], context: int, stride: int) -> tuple[float, int]:
    """Independent recomputation: token j is predicted from the window [b, j) of the first window that
    reaches it, b = the largest window start k*stride with j < k*stride + context, j > k*stride."""
    total, count = 0.0, 0
    for j in range(1, len(ids)):
        k = 0
        while not (k * stride < j < k * stride + context):
            k += 1
        b = k * stride
        with torch.no_grad():
            logits = model(torch.tensor([ids[b:j]]))[0, -1]
        total += float(-F.log_softmax(logits.float(), dim=-1)[ids[j]])
        count += 1
    return total, count


@pytest.mark.parametrize(("context", "stride"), [(16, 8), (16, 15), (10, 1), (64, 32)])
def test_sliding_window_is_token_weighted_exactly(context: int, stride: int) -> None:
    model = tiny_decoder()
    ids = torch.randint(0, 53, (33,), generator=torch.Generator().manual_seed(3)).tolist()
    windows = lm_metrics.score_windows(model, ids, context=context, stride=stride)
    assert sum(w.n_tokens for w in windows) == len(ids) - 1
    assert [w.start for w in windows] == [1] + [w.end for w in windows[:-1]]  # contiguous, no overlap
    expected_nll, expected_n = per_token_reference(model, ids, context, stride)
    assert sum(w.nll for w in windows) == pytest.approx(expected_nll, rel=1e-5)
    assert expected_n == len(ids) - 1


def test_full_context_equals_plain_cross_entropy() -> None:
    model = tiny_decoder()
    ids = torch.randint(0, 53, (40,), generator=torch.Generator().manual_seed(4))
    windows = lm_metrics.score_windows(model, ids.tolist(), context=64, stride=32)
    with torch.no_grad():
        logits = model(ids[None])[0]
    expected = F.cross_entropy(logits[:-1], ids[1:], reduction="sum")
    assert len(windows) == 1
    assert windows[0].nll == pytest.approx(float(expected), rel=1e-6)


def test_aggregate_and_bad_arguments() -> None:
    model = tiny_decoder()
    stats = lm_metrics.score_windows(model, list(range(30)), context=8, stride=4)
    import numpy as np

    rows = np.asarray([[w.nll, w.n_tokens, 10.0] for w in stats])
    agg = lm_metrics.aggregate_window_stats(rows)
    assert agg["perplexity"] == pytest.approx(math.exp(rows[:, 0].sum() / 29))
    assert agg["bits_per_byte"] == pytest.approx(rows[:, 0].sum() / math.log(2) / (10.0 * len(rows)))
    with pytest.raises(LMForgeError, match="stride must be between 1 and context - 1"):
        lm_metrics.score_windows(model, list(range(30)), context=8, stride=8)
    with pytest.raises(LMForgeError, match="context must be between 2 and the model's context of 64"):
        lm_metrics.score_windows(model, list(range(30)), context=100)
    with pytest.raises(LMForgeError, match="at least 2 tokens"):
        lm_metrics.score_windows(model, [1])


def test_loglikelihood_sums_continuation_logprobs() -> None:
    model = tiny_decoder()
    ctx, cont = [1, 2, 3, 4], [5, 6, 7]
    total, greedy = lm_metrics.loglikelihood(model, ctx, cont)
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([ctx + cont]))[0].float(), dim=-1)
    expected = sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))
    assert total == pytest.approx(expected, rel=1e-5)
    argmax_cont = [int(logp[len(ctx) - 1 + i].argmax()) for i in range(3)]
    assert greedy == (argmax_cont == cont)


def test_batched_loglikelihoods_equal_one_at_a_time() -> None:
    model = tiny_decoder()
    gen = torch.Generator().manual_seed(5)
    requests = [
        (
            torch.randint(0, 53, (int(n),), generator=gen).tolist(),
            torch.randint(0, 53, (int(m),), generator=gen).tolist(),
        )
        for n, m in [(3, 1), (10, 4), (1, 2), (7, 7), (20, 3)]
    ]
    batched = lm_metrics.loglikelihoods(model, requests, batch_size=3)
    for (ctx, cont), (total, greedy) in zip(requests, batched):
        single_total, single_greedy = lm_metrics.loglikelihood(model, ctx, cont)
        assert total == pytest.approx(single_total, rel=1e-5, abs=1e-5)
        assert greedy == single_greedy
