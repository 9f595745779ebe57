import pytest
import torch
import torch.nn.functional as F

from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError
from lmforge.generate.cache import KVCache
from lmforge.model import Transformer
from lmforge.model.attention import single_query_attention
from tiny import tiny_config

CONFIGS = {
    "gpt": tiny_config("gpt2", vocab_size=64, max_seq_len=32),
    "llama-gqa": tiny_config("llama", vocab_size=64, d_mlp=48, max_seq_len=32),
    "mqa-window": tiny_config("llama", vocab_size=64, n_kv_head=1, sliding_window=4, max_seq_len=32),
    "sinusoidal-postnorm": tiny_config(
        "gpt2",
        vocab_size=64,
        max_seq_len=32,
        position="sinusoidal",
        norm_placement="post",
        final_norm=False,
        mlp="geglu",
    ),
    "bert": tiny_config("bert", vocab_size=64, max_seq_len=32),
}


def build(config: ModelConfig, **changes) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(config.replace(**changes) if changes else config)
    model.init_weights(seed=0)
    with torch.no_grad():  # non-trivial norm weights and biases
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name", CONFIGS)
def test_math_and_sdpa_backends_agree(name):
    ids = torch.randint(0, 64, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, :5] = 0
    math_model = build(CONFIGS[name], attn_backend="math")
    sdpa_model = build(CONFIGS[name], attn_backend="sdpa")
    sdpa_model.load_state_dict(math_model.state_dict())
    with torch.no_grad():
        for m in (None, mask):
            torch.testing.assert_close(
                math_model(ids, attention_mask=m), sdpa_model(ids, attention_mask=m), atol=1e-5, rtol=1e-5
            )


@pytest.mark.parametrize("heads", [(4, 4), (6, 2), (4, 1)])  # MHA, GQA, MQA
def test_single_query_attention_equals_sdpa(heads):
    """The compiled decode step's attention (broadcast products and sums) is SDPA for one query."""
    nh, nkv = heads
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, nh, 1, 16, generator=g)
    k, v = torch.randn(2, 3, nkv, 9, 16, generator=g)
    mask = torch.rand(3, 1, 1, 9, generator=g) > 0.3
    mask[..., -1] = True  # a row always sees its own slot
    for m in (None, mask):
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=m, enable_gqa=nkv != nh)
        torch.testing.assert_close(single_query_attention(q, k, v, m), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["gpt", "llama-gqa", "mqa-window", "sinusoidal-postnorm"])
def test_kv_cache_step_by_step_equals_full_forward(name):
    model = build(CONFIGS[name])
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        full = model(ids)
        cache = KVCache.allocate(model.config, 2, 16)
        pieces = [model(ids[:, :5], cache=cache)]
        cache.advance(5)
        for t in range(5, 12):
            pieces.append(model(ids[:, t : t + 1], cache=cache))
            cache.advance(1)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cache_crop_and_reorder():
    model = build(CONFIGS["llama-gqa"])
    ids = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        cache = KVCache.allocate(model.config, 2, 16)
        model(ids[:, :6], cache=cache)
        cache.advance(6)
        cache.crop(4)  # forget two tokens, then recompute them
        again = model(ids[:, 4:8], cache=cache)
        cache.advance(4)
        torch.testing.assert_close(again, model(ids)[:, 4:8], atol=1e-5, rtol=1e-5)
        cache.reorder(torch.tensor([1, 1]))
        nxt = model(ids[1:2, 7:8].repeat(2, 1), cache=cache)
    single = model(torch.cat([ids[1:2], ids[1:2, 7:8]], dim=1))[:, -1]
    torch.testing.assert_close(nxt[:, 0], single.repeat(2, 1), atol=1e-5, rtol=1e-5)


def test_sliding_window_limits_what_a_token_sees():
    model = build(CONFIGS["mqa-window"])
    ids = torch.randint(0, 64, (1, 12))
    changed = ids.clone()
    changed[0, 0] = (ids[0, 0] + 1) % 64
    with torch.no_grad():
        a, b = model(ids), model(changed)
    # with 2 layers and a window of 4, position 0 can influence positions up to 0 + 2 * 3 = 6
    assert not torch.allclose(a[0, 6], b[0, 6])
    torch.testing.assert_close(a[0, 7:], b[0, 7:])


def test_encoder_is_bidirectional_and_decoder_is_causal():
    for name, expect_future_effect in [("bert", True), ("gpt", False)]:
        model = build(CONFIGS[name])
        ids = torch.randint(0, 64, (1, 8))
        changed = ids.clone()
        changed[0, -1] = (ids[0, -1] + 1) % 64
        with torch.no_grad():
            moved = not torch.allclose(model(ids)[0, 0], model(changed)[0, 0])
        assert moved == expect_future_effect, name


def test_parameter_count_matches_config():
    for config in CONFIGS.values():
        model = Transformer(config)
        assert model.num_parameters() == config.num_parameters()


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(n_head=6, n_kv_head=4), "n_kv_head"),
        (dict(mlp="mish"), "mlp"),
        (dict(position="xpos"), "position"),  # alibi is a valid scheme now
        (dict(sliding_window=0), "sliding_window"),
        (dict(causal=False, head="lm"), "head"),
        (dict(dropout=1.5), "dropout"),
        (dict(n_layer=0), "n_layer"),
    ],
)
def test_invalid_config_names_the_field(changes, field):
    with pytest.raises(LMForgeError, match=f"ModelConfig.{field}="):
        ModelConfig(**{**dict(vocab_size=64, n_head=2, d_model=32), **changes})


def test_unknown_preset_lists_presets():
    with pytest.raises(LMForgeError, match="presets: .*gpt-nano"):
        ModelConfig.preset("gpt-huge")
