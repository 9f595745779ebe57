"""CLM window sampling (determinism, exact resume, ranks) and MLM masking statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmforge.data.loaders import CLMBatchSampler, MLMCollator, check_tokenizer, word_continuation_table
from lmforge.errors import LMForgeError


@pytest.fixture
def dataset(tmp_path):
    """Two shards holding consecutive integers, so every window's content is predictable."""
    lengths = [5000, 3001]
    shards, offset = [], 0
    for k, n in enumerate(lengths):
        np.arange(offset, offset + n, dtype=np.uint16).tofile(tmp_path / f"train_{k:03d}.bin")
        shards.append({"file": f"train_{k:03d}.bin", "tokens": n, "documents": 1})
        offset += n
    manifest = {
        "format": "lmforge-shards",
        "version": 1,
        "dtype": "uint16",
        "tokenizer": {"fingerprint": "abc123", "vocab_size": 65536, "eos_token_id": 0},
        "splits": {"train": {"shards": shards, "tokens": sum(lengths), "documents": 2, "bytes": 0}},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def test_windows_are_contiguous_and_targets_shifted(dataset):
    sampler = CLMBatchSampler(dataset, batch_size=16, seq_len=64, seed=0)
    for _ in range(20):
        x, y = sampler.next_batch()
        assert x.shape == y.shape == (16, 64) and x.dtype == torch.long
        assert torch.equal(y[:, :-1], x[:, 1:])
        assert torch.all(torch.diff(torch.cat([x, y[:, -1:]], 1), dim=1) == 1)  # one shard, no gap
        assert torch.all(x[:, 0] + 64 < 8001)


def test_random_windows_cover_every_start_uniformly(dataset):
    sampler = CLMBatchSampler(dataset, batch_size=512, seq_len=64, seed=1)
    starts = torch.cat([sampler.next_batch()[0][:, 0] for _ in range(40)]).numpy()
    in_second = (starts >= 5000).mean()
    # valid starts: 5000 - 64 in shard 0, 3001 - 64 in shard 1
    assert in_second == pytest.approx((3001 - 64) / (8001 - 128), abs=0.02)
    assert starts.min() < 50 and 4936 - 50 < starts[starts < 5000].max() <= 4935
    assert starts.max() <= 5000 + 3001 - 65


def test_deterministic_and_exactly_resumable(dataset):
    a = CLMBatchSampler(dataset, batch_size=4, seq_len=32, seed=3)
    full = [a.next_batch()[0] for _ in range(10)]
    b = CLMBatchSampler(dataset, batch_size=4, seq_len=32, seed=3)
    for _ in range(6):
        b.next_batch()
    state = json.loads(json.dumps(b.state_dict()))  # survives a JSON round trip
    c = CLMBatchSampler(dataset, batch_size=4, seq_len=32, seed=3)
    c.load_state_dict(state)
    for k in range(6, 10):
        assert torch.equal(c.next_batch()[0], full[k])
    other = CLMBatchSampler(dataset, batch_size=4, seq_len=32, seed=4).next_batch()[0]
    assert not torch.equal(other, full[0])


def test_state_from_another_configuration_is_refused(dataset):
    state = CLMBatchSampler(dataset, batch_size=4, seq_len=32).state_dict()
    with pytest.raises(LMForgeError, match="seq_len: saved 32 vs now 16"):
        CLMBatchSampler(dataset, batch_size=4, seq_len=16).load_state_dict(state)


def test_sequential_mode_walks_each_shard_in_order(dataset):
    sampler = CLMBatchSampler(dataset, batch_size=3, seq_len=1000, mode="sequential")
    # shard 0 holds 4 windows (4·1000 + 1 ≤ 5000), shard 1 holds 3 (3·1000 + 1 ≤ 3001)
    starts = [int(s) for _ in range(3) for s in sampler.next_batch()[0][:, 0]]
    assert starts == [0, 1000, 2000, 3000, 5000, 6000, 7000, 0, 1000]
    assert sampler.batches_per_epoch() == 7 // 3


def test_ranks_split_the_batches_of_one_process(dataset):
    single = CLMBatchSampler(dataset, batch_size=4, seq_len=32, seed=9)
    ranks = [
        CLMBatchSampler(dataset, batch_size=4, seq_len=32, seed=9, rank=r, world_size=2) for r in range(2)
    ]
    for _ in range(3):
        # one process with gradient accumulation 2 sees micro-batches 2s and 2s+1
        accumulated = [single.next_batch()[0], single.next_batch()[0]]
        assert torch.equal(ranks[0].next_batch()[0], accumulated[0])
        assert torch.equal(ranks[1].next_batch()[0], accumulated[1])


def test_tokenizer_mismatch_and_short_data_are_clear_errors(dataset):
    with pytest.raises(LMForgeError, match="made with another tokenizer .* run `lmforge prepare"):
        CLMBatchSampler(dataset, fingerprint="different")
    assert check_tokenizer(dataset, "abc123")["dtype"] == "uint16"
    with pytest.raises(LMForgeError, match="use 65536 token ids but the model has only 1000"):
        check_tokenizer(dataset, "abc123", vocab_size=1000)
    with pytest.raises(LMForgeError, match="has no shard of seq_len"):
        CLMBatchSampler(dataset, seq_len=6000)
    with pytest.raises(LMForgeError, match="rank 2"):
        CLMBatchSampler(dataset, rank=2, world_size=2)


# ---- MLM masking -------------------------------------------------------------------------------

SPECIAL = [0, 1, 2, 3]  # e.g. PAD, CLS, SEP, MASK
MASK = 3
VOCAB = 1000


def _batch(rows=64, cols=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (rows, cols), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2  # CLS ... SEP
    ids[: rows // 4, -100:] = 0  # padding
    return ids


def test_mlm_masking_statistics():
    ids = _batch()
    collate = MLMCollator(MASK, VOCAB, special_token_ids=SPECIAL)
    inputs, labels = collate(ids, generator=torch.Generator().manual_seed(1))
    special = torch.isin(ids, torch.tensor(SPECIAL))
    selected = labels != -100
    assert not (selected & special).any()
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected])  # nothing else changes
    n = (~special).sum().item()
    rate = selected.sum().item() / n
    assert rate == pytest.approx(0.15, abs=3 * np.sqrt(0.15 * 0.85 / n))
    k = selected.sum().item()
    masked = (inputs[selected] == MASK).float().mean().item()
    kept = (inputs[selected] == ids[selected]).float().mean().item()
    randomized = 1 - masked - kept
    assert masked == pytest.approx(0.8, abs=4 * np.sqrt(0.8 * 0.2 / k))
    # a random replacement equals the original with probability 1/996, so "kept" is 0.1 + 0.1/996
    assert kept == pytest.approx(0.1, abs=4 * np.sqrt(0.09 / k) + 0.001)
    assert randomized == pytest.approx(0.1, abs=4 * np.sqrt(0.09 / k) + 0.001)
    assert not torch.isin(inputs[selected & (inputs != ids)], torch.tensor([0, 1, 2])).any()


def test_mlm_is_deterministic_for_a_generator():
    ids = _batch(8, 64)
    collate = MLMCollator(MASK, VOCAB, special_token_ids=SPECIAL)
    a = collate(ids, generator=torch.Generator().manual_seed(5))
    b = collate(ids, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_whole_word_masking_masks_words_together():
    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[MASK]": 3}
    for i in range(4, VOCAB):
        vocab[f"##p{i}" if i % 3 == 0 else f"w{i}"] = i  # a third of the ids continue a word
    table = word_continuation_table(vocab)
    assert table[6] and not table[5] and not table[1]
    ids = _batch(32, 256, seed=2)
    collate = MLMCollator(MASK, VOCAB, special_token_ids=SPECIAL, whole_word=True, continuation=table)
    inputs, labels = collate(ids, generator=torch.Generator().manual_seed(3))
    selected = labels != -100
    special = torch.isin(ids, torch.tensor(SPECIAL))
    assert not (selected & special).any()
    cont = torch.as_tensor(table)[ids] & ~special
    cont[:, 1:] &= ~special[:, :-1]
    cont[:, 0] = False
    # a continuation token is selected exactly when the token before it (same word) is
    assert torch.equal(selected[:, 1:][cont[:, 1:]], selected[:, :-1][cont[:, 1:]])
    words = (~special & ~cont).sum().item()
    word_selected = (selected & ~special & ~cont).sum().item()
    assert word_selected / words == pytest.approx(0.15, abs=3 * np.sqrt(0.15 * 0.85 / words))


def test_byte_level_continuation_table(tiny_tok):
    table = word_continuation_table(tiny_tok.get_vocab(), tiny_tok.vocab_size)
    assert not table[tiny_tok.token_to_id("Ġriver")]
    assert table[tiny_tok.token_to_id("et")]
