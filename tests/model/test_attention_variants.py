"""Sparse attention patterns as ModelConfig fields of the one model: Sparse Transformer's strided
pattern (`sparse_stride`) and global tokens beside a sliding window (`global_tokens`). Each is checked
against a direct reference computation with the mask built element by element from its definition,
with both backends, through the KV cache (generation), in training, and through a checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError
from lmforge.generate.cache import KVCache
from lmforge.model import Transformer
from lmforge.model.attention import Attention, build_attention_mask
from tiny import tiny_config

VARIANTS = {
    "strided": dict(sparse_stride=4),
    "strided+global": dict(sparse_stride=3, global_tokens=2),
    "window+global": dict(sliding_window=3, global_tokens=2),
    "window+strided": dict(sliding_window=2, sparse_stride=5),
}


def reference_mask(T: int, window: int | None, stride: int | None, n_global: int) -> torch.Tensor:
    """Query i may attend key j: j <= i and (i - j < local span, or stride divides i - j, or j global)."""
    span = window or stride
    mask = torch.zeros(T, T, dtype=torch.bool)
    for i in range(T):
        for j in range(i + 1):
            mask[i, j] = (i - j < span) or (stride is not None and (i - j) % stride == 0) or j < n_global
    return mask


def config(name: str, **more) -> ModelConfig:
    return tiny_config("gpt2", vocab_size=64, max_seq_len=32, **VARIANTS[name], **more)


@pytest.mark.parametrize("name", VARIANTS)
def test_mask_is_the_definition(name):
    c = config(name)
    got = build_attention_mask(c, 20, 20, 0, None, torch.device("cpu"))[0, 0]
    torch.testing.assert_close(got, reference_mask(20, c.sliding_window, c.sparse_stride, c.global_tokens))
    # one decode step at slot 19 (the cache holds 20 keys) sees the same row
    step = build_attention_mask(c, 1, 20, 19, None, torch.device("cpu"))[0, 0, 0]
    torch.testing.assert_close(step, got[19])


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("name", VARIANTS)
def test_attention_equals_a_direct_computation(name, backend):
    c = config(name, attn_backend=backend)
    torch.manual_seed(0)
    attn = Attention(c).eval()
    x = torch.randn(2, 20, c.d_model)
    mask = build_attention_mask(c, 20, 20, 0, None, x.device)
    with torch.no_grad():
        got = attn(x, None, mask)
        q, k, v = attn.qkv(x).split(c.d_model, dim=-1)
        allowed = reference_mask(20, c.sliding_window, c.sparse_stride, c.global_tokens).numpy()
        out = np.zeros((2, 20, c.d_model))
        for b in range(2):
            for h in range(c.n_head):
                cols = slice(h * c.head_dim, (h + 1) * c.head_dim)
                qh, kh, vh = (t[b, :, cols].double().numpy() for t in (q, k, v))
                for i in range(20):
                    js = np.flatnonzero(allowed[i])
                    scores = qh[i] @ kh[js].T / math.sqrt(c.head_dim)
                    weights = np.exp(scores - scores.max())
                    out[b, i, cols] = (weights / weights.sum()) @ vh[js]
        want = attn.proj(torch.from_numpy(out).float())
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", VARIANTS)
def test_cached_generation_equals_the_full_forward(name):
    torch.manual_seed(0)
    model = Transformer(config(name)).eval()
    ids = torch.randint(0, 64, (2, 14))
    with torch.no_grad():
        full = model(ids)
        cache = KVCache.allocate(model.config, 2, 16)
        pieces = [model(ids[:, :5], cache=cache)]
        cache.advance(5)
        for t in range(5, 14):
            pieces.append(model(ids[:, t : t + 1], cache=cache))
            cache.advance(1)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-4)


def test_a_global_token_reaches_past_the_window():
    torch.manual_seed(0)
    model = Transformer(config("window+global", n_layer=1)).eval()
    plain = Transformer(
        tiny_config("gpt2", vocab_size=64, max_seq_len=32, sliding_window=3, n_layer=1)
    ).eval()
    plain.load_state_dict(model.state_dict())
    ids = torch.randint(0, 64, (1, 12))
    changed = ids.clone()
    changed[0, 1] = (ids[0, 1] + 1) % 64  # a global token (slot 1 < 2)
    with torch.no_grad():
        assert not torch.allclose(model(ids)[0, 11], model(changed)[0, 11])
        torch.testing.assert_close(plain(ids)[0, 11], plain(changed)[0, 11])  # the window alone: no


def test_trains_and_round_trips_through_a_checkpoint(tmp_path):
    from lmforge.lm import load
    from lmforge.train.batches import CLMBatches
    from lmforge.train.logging import read_log
    from lmforge.train.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    model = Transformer(config("strided+global"))
    tokens = (torch.arange(3000) % 7) * 3  # a pattern the model learns in a few steps
    cfg = TrainConfig(
        steps=30, batch_size=4, seq_len=16, lr=1e-2, warmup_steps=0, progress=False, tensorboard=False
    )
    Trainer(model, cfg, CLMBatches(tokens, 4, 16), tmp_path / "run").fit()
    losses = [r["loss"] for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"]
    assert losses[-1] < losses[0] / 2
    loaded = load(tmp_path / "run" / "final", device="cpu")
    assert (loaded.config.sparse_stride, loaded.config.global_tokens) == (3, 2)


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(sparse_stride=1), "sparse_stride"),
        (dict(sparse_stride=4, causal=False, head="mlm"), "sparse_stride"),
        (dict(global_tokens=2), "global_tokens"),
        (dict(sliding_window=4, global_tokens=-1), "global_tokens"),
    ],
)
def test_bad_variant_fields_name_the_field(changes, field):
    with pytest.raises(LMForgeError, match=f"ModelConfig.{field}"):
        tiny_config("gpt2", vocab_size=64, **changes)


# -- ALiBi: linear biases instead of position embeddings ----------------------------------------------


def test_alibi_slopes_follow_the_paper():
    from lmforge.model.attention import alibi_slopes

    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    # 6 heads: the 4-head slopes, then every other slope of 8 heads
    torch.testing.assert_close(alibi_slopes(6), torch.tensor([2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]))


@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_alibi_attention_equals_a_direct_computation(backend):
    from lmforge.model.attention import alibi_slopes

    c = tiny_config("gpt2", vocab_size=64, max_seq_len=32, position="alibi", attn_backend=backend)
    torch.manual_seed(0)
    attn = Attention(c).eval()
    x = torch.randn(2, 12, c.d_model)
    with torch.no_grad():
        got = attn(x, None, build_attention_mask(c, 12, 12, 0, None, x.device))
        q, k, v = attn.qkv(x).split(c.d_model, dim=-1)
        slopes = alibi_slopes(c.n_head).double().numpy()
        out = np.zeros((2, 12, c.d_model))
        for b in range(2):
            for h in range(c.n_head):
                cols = slice(h * c.head_dim, (h + 1) * c.head_dim)
                qh, kh, vh = (t[b, :, cols].double().numpy() for t in (q, k, v))
                for i in range(12):
                    scores = qh[i] @ kh[: i + 1].T / math.sqrt(c.head_dim) - slopes[h] * (
                        i - np.arange(i + 1)
                    )
                    weights = np.exp(scores - scores.max())
                    out[b, i, cols] = (weights / weights.sum()) @ vh[: i + 1]
        want = attn.proj(torch.from_numpy(out).float())
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_alibi_model_has_no_position_embedding_and_caches_exactly(tmp_path):
    torch.manual_seed(0)
    model = Transformer(
        tiny_config("llama", vocab_size=64, max_seq_len=32, position="alibi", n_kv_head=1)
    ).eval()
    assert not any("pos" in n for n, _ in model.named_parameters())
    ids = torch.randint(0, 64, (2, 14))
    with torch.no_grad():
        full = model(ids)
        cache = KVCache.allocate(model.config, 2, 16)
        pieces = [model(ids[:, :5], cache=cache)]
        cache.advance(5)
        for t in range(5, 14):
            pieces.append(model(ids[:, t : t + 1], cache=cache))
            cache.advance(1)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-4)
