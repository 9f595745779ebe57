"""Continuous batching: requests that join a running batch at different steps, and leave it when they
finish (a small max_new_tokens, a stop token, a stop string) while new ones take their rows, each give
exactly the tokens they give alone through `lm.generate`, greedy and seeded sampling alike; also with a
small fixed cache that must be compacted again and again, and on SmolLM2."""

from __future__ import annotations

import itertools

import pytest
import torch
from generate_helpers import tiny_lm, tiny_model

from lmforge.errors import LMForgeError
from lmforge.generate import ContinuousBatcher
from lmforge.generate.engine import Batch

SAMPLE = dict(do_sample=True, temperature=0.8, top_p=0.9)


@pytest.fixture(scope="module")
def lm():
    """A tiny random Llama (fp32) whose outputs vary: a broken copy, position or mask changes them."""
    return tiny_lm(tiny_model("llama", seed=40, scale=3.0))


def run_batched(batcher, requests, start_steps):
    """Add request i at step start_steps[i]; step until every request finished. Returns the completions
    by request index, the concatenated event text and tokens, and what the batch held at each step."""
    ids, completions, texts, tokens, trace = {}, {}, {}, {}, []
    step = 0
    while len(completions) < len(requests):
        for i, start in enumerate(start_steps):
            if start == step:
                prompt, options = requests[i]
                ids[batcher.add(prompt, **options)] = i
        for event in batcher.step():
            i = ids[event.request_id]
            texts[i] = texts.get(i, "") + event.text
            tokens[i] = tokens.get(i, []) + event.token_ids
            if event.finished:
                completions[i] = event.completion
        trace.append((batcher.running, batcher.waiting, batcher.batch.length if batcher.batch else 0))
        step += 1
        assert step < 500
    return completions, texts, tokens, trace


def check_equals_alone(lm, requests, completions, texts, tokens):
    for i, (prompt, options) in enumerate(requests):
        alone = lm.generate(prompt, aot=False, **options)  # eager, as the batch's steps (see the batcher)
        got = completions[i]
        assert got.token_ids == alone.token_ids, (i, options)
        assert got.text == alone.text == texts[i]
        assert tokens[i] == alone.token_ids
        assert got.finish_reason == alone.finish_reason
        assert got.prompt_tokens == alone.prompt_tokens
        if options.get("logprobs"):
            assert got.logprobs == pytest.approx(alone.logprobs, abs=1e-4)


def test_requests_joining_and_leaving_give_their_lone_tokens(lm):
    free = lm.generate("The first one", max_new_tokens=12).token_ids
    requests = [
        ("The first one", dict(max_new_tokens=12)),
        ("b", dict(max_new_tokens=2)),  # leaves early
        ("Sampled, nucleus", dict(max_new_tokens=14, seed=3, **SAMPLE)),
        ("The first one", dict(max_new_tokens=12, stop_token_ids=[free[3]])),  # stops on a token
        ("xyz", dict(max_new_tokens=9, seed=5, do_sample=True, repetition_penalty=1.3, logprobs=True)),
        ("a much longer prompt than the others", dict(max_new_tokens=10, min_new_tokens=4)),
        ("q", dict(max_new_tokens=11, seed=11, **SAMPLE, top_logprobs=2)),
        ("Hello", dict(max_new_tokens=8, no_repeat_ngram_size=2, frequency_penalty=0.5)),
    ]
    batcher = ContinuousBatcher(lm, max_batch=3)
    completions, texts, tokens, trace = run_batched(batcher, requests, [0, 0, 1, 2, 2, 4, 5, 7])
    check_equals_alone(lm, requests, completions, texts, tokens)
    assert max(running for running, _, _ in trace) == 3  # the batch really held several requests
    assert max(waiting for _, waiting, _ in trace) > 0  # and some joined when a row came free
    assert len(completions[3].token_ids) == 4 and completions[3].finish_reason == "stop"
    assert len({t for c in completions.values() for t in c.token_ids}) > 10  # varied outputs
    assert all(c.decode_step == "eager" for c in completions.values() if len(c.token_ids) > 1)
    assert batcher.idle and batcher.batch.length == 0  # an emptied batch restarts at slot 0


def test_stop_strings_and_constraints_per_request(lm):
    regex_out = lm.generate("Pick:", max_new_tokens=12, regex="(yes|no|maybe)!")
    assert regex_out.text in ("yes!", "no!", "maybe!")
    free = lm.generate("Once upon", max_new_tokens=16)
    stop = free.text[4:6]
    requests = [
        ("Pick:", dict(max_new_tokens=12, regex="(yes|no|maybe)!")),
        ("Once upon", dict(max_new_tokens=16, stop=[stop])),
        ("Once upon", dict(max_new_tokens=16)),
        ("Pick:", dict(max_new_tokens=12, choices=["alpha", "beta"], seed=2, do_sample=True)),
    ]
    completions, texts, tokens, _ = run_batched(ContinuousBatcher(lm, max_batch=2), requests, [0, 1, 1, 3])
    check_equals_alone(lm, requests, completions, texts, tokens)
    assert completions[1].text == free.text[: free.text.index(stop)]


def test_join_and_leave_at_every_step_in_a_small_fixed_cache(lm, monkeypatch):
    """A request joins at every step and others leave at every step, in a 24-slot cache: the clock
    hits the capacity again and again, and every compaction moves running rows they continue from."""
    moves = []  # (clock before, clock after) of every relayout
    relayout = Batch.relayout
    monkeypatch.setattr(
        Batch, "relayout", lambda self, *a: moves.append((self.length, a[0])) or relayout(self, *a)
    )
    requests = []
    for i in range(24):  # prompts of 3-12 tokens, 2-12 new tokens: at most 24 slots each
        options = dict(max_new_tokens=2 + (5 * i) % 11)
        if i % 3 == 1:
            options.update(seed=i, **SAMPLE)
        requests.append((f"{'ab' * (i % 5)}{i}!", options))
    batcher = ContinuousBatcher(lm, max_batch=3, capacity=24)
    completions, texts, tokens, trace = run_batched(batcher, requests, list(range(24)))
    check_equals_alone(lm, requests, completions, texts, tokens)
    compactions = [(before, after) for before, after in moves if before == 24 and 0 < after < 24]
    assert len(compactions) >= 3
    assert batcher.batch.capacity == 24  # never grown
    assert max(running for running, _, _ in trace) == 3


def test_a_long_late_request_moves_the_clock_and_grows_the_cache():
    """Without a fixed capacity the cache is sized for its requests (at least 256 slots); a longer
    request joining late makes the clock jump forward (every running row moves right) and the cache
    double: the rows already running continue with the same tokens."""
    lm = tiny_lm(tiny_model("llama", seed=41, scale=3.0, max_seq_len=1024))
    requests = [
        ("a", dict(max_new_tokens=16)),
        ("b", dict(max_new_tokens=16, seed=1, **SAMPLE)),
        ("c" * 300, dict(max_new_tokens=20)),
    ]
    batcher = ContinuousBatcher(lm, max_batch=3)
    completions, texts, tokens, trace = run_batched(batcher, requests, [0, 1, 4])
    check_equals_alone(lm, requests, completions, texts, tokens)
    assert batcher.batch.capacity == 512  # 256, then doubled for 301 + 20 slots
    assert trace[3][2] < 10 and trace[4][2] == 301  # the clock jumped to the long prompt's length


def test_steps_run_over_the_rows_up_to_the_last_running_one(lm, monkeypatch):
    """A batch made for 4 steps only the rows in use: 3 while row 2 runs (a free row 1 below it
    steps with padding), then a late request takes row 1 (the lowest free), and when row 2 leaves the
    steps shrink to 2 rows, then to 1; every request still gives its lone tokens."""
    rows = []  # rows each decode step ran
    batcher = ContinuousBatcher(lm, max_batch=4)
    step = batcher.engine.step
    monkeypatch.setattr(batcher.engine, "step", lambda b, t: rows.append(len(t)) or step(b, t))
    requests = [
        ("The first one", dict(max_new_tokens=12)),  # row 0, leaves last
        ("b", dict(max_new_tokens=3)),  # row 1, leaves first
        ("xyz", dict(max_new_tokens=6, seed=5, **SAMPLE)),  # row 2
        ("Hello", dict(max_new_tokens=5)),  # joins row 1 at step 4
    ]
    completions, texts, tokens, trace = run_batched(batcher, requests, [0, 0, 0, 4])
    assert rows == [3] * 5 + [2] * 3 + [1] * 3
    check_equals_alone(lm, requests, completions, texts, tokens)
    assert batcher.batch.size == 4


def test_cancel_frees_the_row_and_the_others_are_unchanged(lm):
    requests = [
        ("one", dict(max_new_tokens=10)),
        ("two", dict(max_new_tokens=10)),
        ("3", dict(max_new_tokens=6)),
    ]
    batcher = ContinuousBatcher(lm, max_batch=2)
    ids = [batcher.add(p, **o) for p, o in requests]
    events = batcher.step() + batcher.step()
    assert batcher.running == 2 and batcher.waiting == 1
    assert batcher.cancel(ids[0]) and not batcher.cancel(ids[0])
    assert batcher.running == 1
    events += list(batcher.drain())
    done = {e.request_id: e.completion for e in events if e.finished}
    assert ids[0] not in done
    for i in (1, 2):
        assert done[ids[i]].token_ids == lm.generate(requests[i][0], **requests[i][1]).token_ids


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(num_beams=2), "not beam"),
        (dict(penalty_alpha=0.5, top_k=3), "not contrastive search"),
        (dict(prompt_lookup=True), "not speculative"),
        (dict(draft="x"), "drop draft"),
        (dict(do_sample=True, num_return_sequences=2), "once per sequence"),
        (dict(compile=True), "compile= is not a per-request option"),
        (dict(top_p=2.0), "top_p"),
        (dict(max_new_tokens=30), "capacity of 32"),
    ],
)
def test_unsupported_or_bad_requests_fail_at_add(lm, options, message):
    batcher = ContinuousBatcher(lm, max_batch=2, capacity=32)
    with pytest.raises(LMForgeError, match=message) as info:
        batcher.add("a prompt", **options)
    assert "\n" not in str(info.value)
    assert batcher.idle


def test_an_engine_alone_takes_token_ids(lm):
    batcher = ContinuousBatcher(lm.engine, max_batch=2)
    request = batcher.add([256, 65, 66], max_new_tokens=5)
    (completion,) = [e.completion for e in batcher.drain() if e.finished and e.request_id == request]
    assert completion.token_ids == lm.generate([256, 65, 66], max_new_tokens=5, ignore_eos=True).token_ids
    assert completion.text == ""  # no tokenizer, no text


def test_smollm2_requests_joining_a_running_batch(smollm2):
    """The real model: two greedy and two sampled requests started at different steps, one finishing
    early, two rows: each gives its lone tokens."""
    ask = smollm2.tokenizer.encode_chat
    prompts = [
        ask([{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True),
        "The three primary colours are",
        "Once upon a time, in a small village,",
        ask([{"role": "user", "content": "Name a fruit."}], add_generation_prompt=True),
    ]
    options = [
        dict(max_new_tokens=12),
        dict(max_new_tokens=4),
        dict(max_new_tokens=12, seed=7, **SAMPLE),
        dict(max_new_tokens=10, seed=8, **SAMPLE),
    ]
    requests = list(zip(prompts, options, strict=True))
    batcher = ContinuousBatcher(smollm2, max_batch=2)
    completions, texts, tokens, trace = run_batched(batcher, requests, [0, 1, 2, 3])
    with torch.inference_mode():
        check_equals_alone(smollm2, requests, completions, texts, tokens)
    assert max(waiting for _, waiting, _ in trace) > 0


@pytest.mark.parametrize("prefill_tokens, groups", [(2048, [4]), (40, [2, 1, 1]), (1, [1, 1, 1, 1])])
def test_a_burst_of_requests_is_prefilled_together_within_the_token_budget(
    lm, monkeypatch, prefill_tokens, groups
):
    """Four requests queued at once (prompts of 19, 2, 40 and 1 bytes: a group is left-padded) join
    in groups, one prefill per step: all four together, or as many as the padded prompt-slot budget
    takes (40: the first two, 2 x 19 slots; then the 40-byte one alone, as a single request always
    fits; then the last); each gives its lone tokens either way."""
    requests = [
        ("Seven tokens prompt", dict(max_new_tokens=6)),
        ("ab", dict(max_new_tokens=5, seed=2, **SAMPLE)),
        ("a much longer prompt than the others are", dict(max_new_tokens=4, logprobs=True)),
        ("q", dict(max_new_tokens=7, repetition_penalty=1.3)),
    ]
    sizes = []
    prefill = lm.engine.prefill
    monkeypatch.setattr(lm.engine, "prefill", lambda batch: sizes.append(batch.size) or prefill(batch))
    batcher = ContinuousBatcher(lm, max_batch=4, prefill_tokens=prefill_tokens)
    completions, texts, tokens, trace = run_batched(batcher, requests, [0, 0, 0, 0])
    assert sizes == groups
    assert [running for running, _, _ in trace[: len(groups)]] == list(itertools.accumulate(groups))
    monkeypatch.undo()
    check_equals_alone(lm, requests, completions, texts, tokens)
