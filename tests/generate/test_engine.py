"""Engine: the cached decode loop equals a plain no-cache argmax loop; batching and left padding change
nothing; stopping rules and the context check behave per row."""

from __future__ import annotations

import pytest
import torch
from generate_helpers import ByteTokenizer, tiny_model

from lmforge.errors import LMForgeError
from lmforge.generate.engine import Engine, StopChecker
from lmforge.generate.search import decode_steps


def argmax_loop(model, prompt: list[int], n: int) -> list[int]:
    """Reference: re-run the whole sequence through the model for every new token, no cache."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


def run_greedy(model, prompts, n, tokenizer=None, stop_ids=(), stop_strings=()):
    engine = Engine(model)
    batch = engine.new_batch(prompts, max(map(len, prompts)) + n)
    logits = engine.prefill(batch)
    stopper = StopChecker(len(prompts), n, frozenset(stop_ids), tuple(stop_strings), tokenizer)
    steps = list(decode_steps(engine, batch, logits, stopper))
    tokens = torch.stack([s.tokens for s in steps], dim=1).tolist()
    return [row[: stopper.counts[i]] for i, row in enumerate(tokens)], stopper


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_cached_greedy_equals_no_cache_argmax(family):
    model = tiny_model(family, seed=3, scale=20.0)
    prompt = [5, 17, 99, 3, 42, 7]
    (out,), _ = run_greedy(model, [prompt], 40)
    assert out == argmax_loop(model, prompt, 40)
    assert len(set(out)) > 5  # a non-trivial continuation, not one repeated token


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_batched_left_padded_equals_one_by_one(family):
    model = tiny_model(family, seed=4, scale=20.0)
    prompts = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [200], [40, 41, 42, 43], [7, 7]]
    batched, _ = run_greedy(model, prompts, 25)
    for prompt, out in zip(prompts, batched):
        (single,), _ = run_greedy(model, [prompt], 25)
        assert out == single


def test_padded_prefill_logits_match_unpadded():
    model = tiny_model("llama", seed=5)
    engine = Engine(model)
    short, long = [10, 20, 30], [1, 2, 3, 4, 5, 6, 7]
    batch = engine.new_batch([short, long], 16)
    logits = engine.prefill(batch)
    alone = engine.prefill(engine.new_batch([short], 16))
    torch.testing.assert_close(logits[0], alone[0], rtol=1e-4, atol=1e-5)
    assert batch.next_position.tolist() == [3, 7]


def test_crop_then_step_equals_fresh_run():
    model = tiny_model("gpt2", seed=6)
    engine = Engine(model)
    batch = engine.new_batch([[1, 2, 3]], 16)
    engine.prefill(batch)
    engine.step(batch, torch.tensor([[9, 8, 7, 6]]))
    batch.crop(4)  # keep the prompt and the token 9
    again = engine.step(batch, torch.tensor([5]))
    fresh = model(torch.tensor([[1, 2, 3, 9, 5]]))[0, -1]
    torch.testing.assert_close(again[0], fresh, rtol=1e-4, atol=1e-5)


def test_rows_stop_independently_on_stop_tokens():
    model = tiny_model("llama", seed=7, scale=20.0)
    prompts = [[1, 2, 3], [50, 60, 70, 80]]
    free, _ = run_greedy(model, prompts, 20)
    stop_id = free[0][4]  # row 0's fifth token
    out, stopper = run_greedy(model, prompts, 20, stop_ids=[stop_id])
    assert out[0] == free[0][: free[0].index(stop_id) + 1]  # stop token kept in the tokens
    assert stopper.reasons[0] == "stop"
    cut = free[1].index(stop_id) + 1 if stop_id in free[1] else 20
    assert out[1] == free[1][:cut]


def test_stop_string_cuts_text_and_max_new_tokens_gives_length():
    tok = ByteTokenizer()
    model = tiny_model("llama", seed=8, scale=20.0)
    prompt = tok.encode("hello")
    (free,), s_free = run_greedy(model, [prompt], 12, tokenizer=tok)
    assert s_free.reasons == ["length"] and s_free.counts == [12]
    text = s_free.texts[0]
    assert text == tok.decode(free)
    stop = text[3:5]
    (out,), s = run_greedy(model, [prompt], 12, tokenizer=tok, stop_strings=[stop])
    assert s.reasons == ["stop_string"]
    assert s.texts[0] == text[: text.index(stop)]
    assert s.finish_reason(0) == "stop"


def test_stop_string_spanning_tokens_and_utf8():
    tok = ByteTokenizer()
    stopper = StopChecker(1, 100, frozenset(), ("é!",), tok)
    for b in "abcé!zz".encode():
        stopper.update([b])
    assert stopper.texts == ["abc"] and stopper.counts == [6]


def test_context_check_errors_or_truncates():
    model = tiny_model("llama", max_seq_len=32)
    engine = Engine(model)
    with pytest.raises(LMForgeError, match="truncate_prompt"):
        engine.check_context([list(range(30))], max_new_tokens=5)
    (kept,) = engine.check_context([list(range(30))], max_new_tokens=5, truncate=True)
    assert kept == list(range(3, 30))
    with pytest.raises(LMForgeError, match="max_new_tokens"):
        engine.check_context([[1]], max_new_tokens=32)
    with pytest.raises(LMForgeError, match="empty"):
        engine.check_context([[]], max_new_tokens=4)


def test_encoder_is_refused():
    from lmforge.config import ModelConfig
    from lmforge.model import Transformer

    bert = Transformer(ModelConfig.preset("bert-tiny", vocab_size=64))
    with pytest.raises(LMForgeError, match="causal decoder"):
        Engine(bert)
