"""The KV cache's per-row fill levels: a sequence prefilled alone and copied into a running batch steps
with the logits it has alone; moving every row (compaction, growth, a new clock) changes no row's
logits; a released row holds nothing."""

from __future__ import annotations

import pytest
import torch
from generate_helpers import tiny_config, tiny_model

from lmforge.generate.cache import KVCache
from lmforge.generate.engine import Engine

TOL = dict(rtol=1e-5, atol=1e-5)


def steps(engine, batch, tokens_per_step):
    return [engine.step(batch, torch.tensor(tokens)) for tokens in tokens_per_step]


@pytest.mark.parametrize("family", ["llama", "gpt2"])  # RoPE and learned positions
def test_a_joined_sequence_steps_as_it_does_alone(family):
    model = tiny_model(family, seed=50, scale=4.0)
    engine = Engine(model)
    newcomer = [7, 8, 9, 10]
    alone = engine.new_batch([newcomer], 4 + 6)
    alone_logits = [engine.prefill(alone)]
    alone_logits += steps(engine, alone, [[t] for t in (11, 12, 13, 14, 15)])

    running = engine.new_batch([[1, 2, 3, 4, 5, 6, 7, 8], [40, 41], [90, 91, 92]], 32)
    engine.prefill(running)
    steps(engine, running, [[3, 4, 5], [6, 7, 8]])  # the clock is at 10
    running.release(2)
    prefilled = engine.new_batch([newcomer], 4)
    first = engine.prefill(prefilled)
    torch.testing.assert_close(first, alone_logits[0], **TOL)
    running.join(2, prefilled)
    assert running.next_position.tolist() == [10, 4, 4]
    assert running.tokens[2, 6:10].tolist() == newcomer
    joined = steps(engine, running, [[1, 2, t] for t in (11, 12, 13, 14, 15)])
    for got, expected in zip(joined, alone_logits[1:], strict=True):
        torch.testing.assert_close(got[2], expected[0], **TOL)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_relayout_moves_rows_without_changing_them(family):
    model = tiny_model(family, seed=51, scale=4.0)
    engine = Engine(model)
    prompts = [[1, 2, 3], [10, 11, 12, 13, 14, 15, 16]]
    script = [[5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]]

    plain = engine.new_batch(prompts, 16)
    engine.prefill(plain)
    expected = steps(engine, plain, script)

    moved = engine.new_batch(prompts, 16)
    engine.prefill(moved)
    got = steps(engine, moved, script[:2])  # clock 9, fills [5, 9]
    moved.relayout(14, 24)  # growth: a larger cache and a later clock
    assert (moved.length, moved.capacity, moved.cache.starts.tolist()) == (14, 24, [9, 5])
    got += steps(engine, moved, script[2:4])
    moved.relayout(11)  # compaction: the clock back to the longest row (11 slots)
    assert (moved.length, moved.cache.starts.tolist()) == (11, [4, 0])
    got += steps(engine, moved, script[4:])
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, **TOL)
    assert moved.tokens[:, :11].tolist()[1] == plain.tokens[1, :11].tolist()


def test_cache_fill_levels_insert_release_relayout():
    config = tiny_config("llama", n_layer=1)
    cache = KVCache.allocate(config, 2, 8)
    assert cache.starts.tolist() == [0, 0]
    cache.k[0][:, :, :3] = torch.arange(3.0)[None, None, :, None]  # slot s holds s
    cache.advance(3)
    source = KVCache.allocate(config, 1, 4)
    source.k[0][0, :, :2] = 7.0
    source.advance(2)
    cache.insert(1, source)
    assert cache.fill_levels.tolist() == [3, 2] and cache.starts.tolist() == [0, 1]
    assert cache.k[0][1, 0, 1:3, 0].tolist() == [7.0, 7.0]
    cache.relayout(6)  # every row moves 3 slots right
    assert cache.starts.tolist() == [3, 4] and cache.k[0][0, 0, 3:6, 0].tolist() == [0.0, 1.0, 2.0]
    cache.release(0)
    assert cache.fill_levels.tolist() == [0, 2]
    cache.relayout(2, 4)  # compaction into a smaller cache: row 1 keeps its two slots
    assert cache.max_len == 4 and cache.k[0][1, 0, :2, 0].tolist() == [7.0, 7.0]
    with pytest.raises(ValueError, match="cannot move rows of up to 2 slots to end at 1"):
        cache.relayout(1)
    longer = KVCache.allocate(config, 1, 4)
    longer.advance(3)
    with pytest.raises(ValueError, match="does not fit before the clock"):
        cache.insert(0, longer)
