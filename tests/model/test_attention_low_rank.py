"""Linformer (`linformer_k`) and Performer FAVOR+ (`performer_features`) as ModelConfig fields of the one
model. Linformer is checked against softmax(Q (E K)ᵀ / √d) (F V) computed head by head from the paper's
definition; Performer's estimate against exact softmax attention as its features grow, its causal mask
by changing later tokens, its KV-cache generation against full forwards. Both train with
`lmforge.pretrain` (Linformer as a masked-LM encoder, Performer as a causal LM) and round-trip through a
checkpoint; HF and GGUF exports refuse both."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lmforge
from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError
from lmforge.generate.cache import KVCache
from lmforge.model import Transformer
from lmforge.model.attention import (
    Attention,
    math_attention,
    orthogonal_random_features,
    performer_attention,
)
from tiny import tiny_config

# -- Linformer --------------------------------------------------------------------------------------


def linformer_config(**more) -> ModelConfig:
    return tiny_config("bert", vocab_size=64, max_seq_len=24, linformer_k=6, **more)


@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_linformer_equals_the_papers_definition(n_kv_head):
    c = linformer_config(n_kv_head=n_kv_head)
    torch.manual_seed(0)
    attn = Attention(c).eval()
    T = 20  # shorter than the context: E and F's first T columns
    x = torch.randn(2, T, c.d_model)
    with torch.no_grad():
        got = attn(x, None, None)
        hd, nh, nkv = c.head_dim, c.n_head, c.n_kv_head
        q, k, v = attn.qkv(x).split([nh * hd, nkv * hd, nkv * hd], dim=-1)
        e, f = (p[:, :T].double().numpy() for p in (attn.linformer_e, attn.linformer_f))
        out = np.zeros((2, T, nh * hd))
        for b in range(2):
            for h in range(nh):
                kv = h // (nh // nkv)  # the K/V head this query head shares
                qh = q[b, :, h * hd : (h + 1) * hd].double().numpy()
                kh, vh = (t[b, :, kv * hd : (kv + 1) * hd].double().numpy() for t in (k, v))
                scores = qh @ (e @ kh).T / math.sqrt(hd)  # (T, k)
                weights = np.exp(scores - scores.max(-1, keepdims=True))
                out[b, :, h * hd : (h + 1) * hd] = (weights / weights.sum(-1, keepdims=True)) @ (f @ vh)
        want = attn.proj(torch.from_numpy(out).float())
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_linformer_padding_is_invisible():
    """A right-padded row gives its real tokens the outputs the row alone gets: padding keys are zeroed
    before the projection, which is E's first T columns applied to the unpadded keys."""
    torch.manual_seed(0)
    model = Transformer(linformer_config(head="none")).eval()
    ids = torch.randint(0, 64, (1, 20))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 20), torch.zeros(1, 4)], dim=1).long()
    with torch.no_grad():
        alone = model(ids)
        batched = model(padded, attention_mask=mask)
        unmasked = model(padded)
    torch.testing.assert_close(batched[:, :20], alone, atol=1e-5, rtol=1e-4)
    assert (unmasked[:, :20] - alone).abs().max() > 1e-3  # the mask is what makes it so


def test_linformer_refuses_a_causal_model_and_a_longer_sequence():
    with pytest.raises(LMForgeError, match=r"ModelConfig.linformer_k=8: Linformer .* cannot be causal"):
        tiny_config("gpt2", linformer_k=8)
    model = Transformer(linformer_config(head="none", position="rope")).eval()
    with pytest.raises(LMForgeError, match="Linformer projects at most max_seq_len=24 keys, got 30"):
        model(torch.zeros(1, 30, dtype=torch.long))


# -- Performer FAVOR+ --------------------------------------------------------------------------------


def test_performer_converges_to_softmax_attention():
    """Relative error of the causal FAVOR+ output against exact softmax attention, averaged over 4 draws
    of the features, falls as the features grow. Tolerance: each kernel estimate exp(qᵀk/√d) has relative
    spread about √((exp|x+y|² - 1)/m) with x = q d^-1/4, y = k d^-1/4; with entries N(0, 0.5²) and d = 16,
    E|x+y|² = 2, so √(6.4/1024) ≈ 0.08 at 1024 features, and the output, a ratio of sums over keys,
    errs less: 0.1 bounds it (measured 0.06). At 16 features it is ≥ 3x worse (1/√m predicts 8x)."""
    torch.manual_seed(0)
    B, h, T, d = 2, 4, 48, 16
    q, k, v = torch.randn(B, h, T, d) * 0.5, torch.randn(B, h, T, d) * 0.5, torch.randn(B, h, T, d)
    exact = math_attention(q.double(), k.double(), v.double(), None, is_causal=True).float()
    errors = []
    for m in (16, 64, 256, 1024):
        draws = []
        for seed in range(4):
            omega = orthogonal_random_features(m, d, torch.Generator().manual_seed(seed))
            y = performer_attention(q, k, v, omega, None, is_causal=True, chunk=16)
            draws.append(float((y - exact).norm() / exact.norm()))
        errors.append(sum(draws) / len(draws))
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < 0.1 and errors[0] > 3 * errors[-1], errors


def test_orthogonal_features_are_orthogonal_within_a_block():
    omega = orthogonal_random_features(40, 16, torch.Generator().manual_seed(0))
    block = omega[:16] / omega[:16].norm(dim=1, keepdim=True)
    torch.testing.assert_close(block @ block.T, torch.eye(16), atol=1e-5, rtol=0)
    assert omega.shape == (40, 16)


def test_performer_prefix_sums_equal_the_explicit_causal_matrix():
    """The blockwise prefix sums (every chunk size, T not a multiple of it) equal φ(Q) φ(K)ᵀ with the
    upper triangle zeroed, row-normalised, computed as one matrix."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 21, 8), torch.randn(1, 2, 21, 8), torch.randn(1, 2, 21, 8)  # GQA
    omega = orthogonal_random_features(32, 8, torch.Generator().manual_seed(1))
    causal = torch.ones(21, 21, dtype=torch.bool).tril()[None, None]
    want = performer_attention(q, k, v, omega, causal, is_causal=False)
    for chunk in (1, 4, 64):
        got = performer_attention(q, k, v, omega, None, is_causal=True, chunk=chunk)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def performer_model(**more) -> Transformer:
    torch.manual_seed(0)
    return Transformer(tiny_config("llama", vocab_size=64, performer_features=16, **more)).eval()


@pytest.mark.parametrize("T", [30, 128])  # part of one 64-query block; two whole blocks
def test_performer_is_causal_exactly(T):
    model = performer_model()
    ids = torch.randint(0, 64, (2, T))
    changed = ids.clone()
    changed[:, 20:] = (ids[:, 20:] + 7) % 64
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :20], b[:, :20], atol=1e-6, rtol=1e-6)
    assert (a[:, 20:] - b[:, 20:]).abs().max() > 1e-2


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_performer_generates_through_the_kv_cache(family):
    """Prefill then one token at a time through the cache equals the full forward, and a left-padded
    batch row equals the row alone."""
    torch.manual_seed(0)
    model = Transformer(tiny_config(family, vocab_size=64, max_seq_len=40, performer_features=16)).eval()
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
        padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids[:1]], dim=1)
        mask = torch.cat([torch.zeros(1, 3), torch.ones(1, 14)], dim=1).long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        got = model(padded, positions=positions, attention_mask=mask)[:, 3:]
        torch.testing.assert_close(got, full[:1], atol=1e-5, rtol=1e-4)


def test_performer_bad_fields_name_the_field():
    for changes in (dict(performer_features=0), dict(performer_features=8, sliding_window=4)):
        with pytest.raises(LMForgeError, match="ModelConfig.performer_features"):
            tiny_config("llama", **changes)
    with pytest.raises(LMForgeError, match="ModelConfig.performer_features=8: choose one"):
        tiny_config("bert", performer_features=8, linformer_k=4)


def test_new_fields_count_their_parameters():
    for c in (linformer_config(), tiny_config("llama", performer_features=16)):
        assert c.num_parameters() == Transformer(c).num_parameters()


# -- training with lmforge.pretrain, checkpoints, exports ---------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A 320-token BPE with [MASK] and prepared shards of 40 kB of Macbeth."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from lmforge.assets import shakespeare_files
    from lmforge.data.pipeline import PrepareOptions, prepare
    from lmforge.tokenizer import Tokenizer

    text = next(f for f in shakespeare_files() if f.stem.startswith("macbeth")).read_text("utf-8")[:40_000]
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "[MASK]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([text], trainer)
    tok_dir = tmp_path_factory.mktemp("tok")
    specials = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "mask_token": "[MASK]"}
    Tokenizer(backend, specials).save(tok_dir)
    src = tmp_path_factory.mktemp("text")
    for i in range(10):
        (src / f"part{i}.txt").write_text(text[i * 4000 : (i + 1) * 4000], encoding="utf-8")
    out = tmp_path_factory.mktemp("shards") / "data"
    options = PrepareOptions(near_dup=False, quality=None, pii=False, val_fraction=0.1, seed=0, workers=1)
    prepare([str(src)], Tokenizer.from_dir(tok_dir), out, options, tokenizer_source=str(tok_dir))
    return out


TRAIN = dict(n_layer=1, n_head=2, d_model=32, seq_len=32, batch_size=4, steps=25, lr=1e-2, eval_every=0)
TRAIN.update(eval_batches=2, warmup_steps=0, progress=False, tensorboard=False, precision="fp32")


def _initial(config: ModelConfig) -> Transformer:
    """The model `lmforge.pretrain` starts from at its default seed."""
    seed = lmforge.PretrainConfig().seed
    torch.manual_seed(seed)
    model = Transformer(config)
    model.init_weights(seed)
    return model


def _losses(run) -> list[float]:
    from lmforge.train.logging import read_log

    return [r["loss"] for r in read_log(run / "log.jsonl") if r["kind"] == "train"]


def test_linformer_encoder_pretrains_and_round_trips(shards, tmp_path):
    overrides = {"linformer_k": 8, "max_seq_len": 32}
    result = lmforge.pretrain(
        shards, out=tmp_path / "run", preset="bert-tiny", objective="mlm", model_overrides=overrides, **TRAIN
    )
    losses = _losses(tmp_path / "run")
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    lm = lmforge.load(result.final, device="cpu")
    assert lm.config.linformer_k == 8
    initial = _initial(lm.config)  # pretrain's own seeded initialisation: E and F were trained
    for name in ("linformer_e", "linformer_f"):
        trained = getattr(lm.model.blocks[0].attn, name)
        assert (
            trained.shape == (8, 32) and (trained - getattr(initial.blocks[0].attn, name)).abs().max() > 1e-3
        )
    ids = torch.randint(0, 320, (2, 32))
    rebuilt = Transformer(lm.config).eval()
    rebuilt.load_state_dict(lm.model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids), rebuilt(ids))


def test_performer_decoder_pretrains_generates_and_round_trips(shards, tmp_path):
    overrides = {"performer_features": 16}
    result = lmforge.pretrain(
        shards, out=tmp_path / "run", preset="gpt-tiny", model_overrides=overrides, **TRAIN
    )
    losses = _losses(tmp_path / "run")
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    lm = lmforge.load(result.final, device="cpu", compile="eager")
    assert lm.config.performer_features == 16
    omega = lm.model.blocks[0].attn.performer_omega
    initial = _initial(lm.config)  # the features drawn at initialisation are the ones saved and loaded
    assert torch.equal(initial.blocks[0].attn.performer_omega, omega)
    assert not torch.equal(Transformer(lm.config).blocks[0].attn.performer_omega, omega)  # a new draw
    trained = lm.model.blocks[0].attn.qkv.weight
    assert (trained - initial.blocks[0].attn.qkv.weight).abs().max() > 1e-3
    # greedy generation through the engine's KV cache = argmax of full forwards, token by token
    out = lm.generate("Macbeth", max_new_tokens=8, temperature=0.0)
    ids = lm.tokenizer.encode("Macbeth")
    with torch.no_grad():
        for _ in range(8):
            ids.append(int(lm.model(torch.tensor([ids]))[0, -1].argmax()))
    assert out.token_ids == ids[-8:] and out.finish_reason == "length"


@pytest.mark.parametrize("fields", [{"performer_features": 16}, {"linformer_k": 8}])
def test_exports_refuse_what_hf_and_gguf_cannot_carry(tmp_path, fields):
    """An HF-family model with either field is written under lmforge's names (an HF reader would drop
    the variant), loads back with the field and the same logits; GGUF export names the field."""
    from lmforge.io.checkpoint import write_checkpoint
    from lmforge.quant.gguf_export import tensors

    family = "llama" if "performer_features" in fields else "bert"
    torch.manual_seed(0)
    model = Transformer(tiny_config(family, vocab_size=320, max_seq_len=40, **fields)).eval()
    write_checkpoint(tmp_path / "m", model)
    loaded = lmforge.load(tmp_path / "m", device="cpu", compile="eager")
    assert {k: getattr(loaded.config, k) for k in fields} == fields
    ids = torch.randint(0, 320, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.model(ids), model(ids))
    if family == "llama":
        name, value = next(iter(fields.items()))
        with pytest.raises(LMForgeError, match=f"cannot carry \\({name} {value}\\)"):
            tensors(model)


def test_linformer_attention_weights_reproduce_the_layer():
    """`Attention.probs` (what the training monitor's entropy reads) for Linformer: softmax weights over
    the k projected rows, which applied to F v give the layer's output."""
    torch.manual_seed(0)
    attn = Attention(linformer_config()).eval()
    x = torch.randn(2, 20, attn.config.d_model)
    p = attn.probs(x, None, None)
    assert p.shape == (2, 4, 20, 6)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 4, 20))
    with torch.no_grad():
        _, _, v = attn.project(x, None)
        y = (p @ (attn.linformer_f[:, :20] @ v)).transpose(1, 2).reshape(2, 20, -1)
        torch.testing.assert_close(attn.proj(y), attn(x, None, None), atol=1e-5, rtol=1e-4)
