"""The data-free estimate of each block linear's input second moments (`quant.moments`), and RTN's int4
search weighing errors by it."""

from __future__ import annotations

import pytest
import torch

import lmforge
from lmforge.lm import LM
from lmforge.quant.formats import rtn
from lmforge.quant.moments import input_moments
from tiny import tiny_model


def _spread_norms(model, seed=1):
    """Norm gains spread over 0.1..2.1 and (LayerNorm) biases ±0.3, so the estimate has shape to find."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "norm" in name and name.endswith("weight"):
            p.data = torch.rand(p.shape, generator=g) * 2 + 0.1
        elif "norm" in name and name.endswith("bias"):
            p.data = torch.randn(p.shape, generator=g) * 0.3


@torch.no_grad()
def _measured(model, samples=8192):
    """E[x²] of each block linear's input when every block reads normalised Gaussian hidden states, one
    token per sequence (so attention's output is its value row, as the estimate assumes)."""
    seen = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(
            lambda mod, inputs, out, name=name: seen.__setitem__(name, inputs[0].reshape(-1, mod.in_features))
        )
        for name in input_moments(model)
    ]
    g = torch.Generator().manual_seed(2)
    d = model.config.d_model
    positions = torch.zeros(samples, 1, dtype=torch.long)
    rope = model.rope(positions, torch.float32) if model.rope is not None else None
    previous = model.emb_norm
    for i, block in enumerate(model.blocks):
        x = torch.randn(samples, 1, d, generator=g)
        block(x if block.pre_norm else previous(x), rope, None, None, i)
        previous = block.norm2
    for h in hooks:
        h.remove()
    return {name: x.square().mean(0) for name, x in seen.items()}


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_estimated_input_moments_match_the_measured_ones(family):
    overrides = {"n_kv_head": 1} if family == "llama" else {}  # grouped value heads
    model = tiny_model(family, vocab_size=320, **overrides)
    _spread_norms(model)
    estimated, measured = input_moments(model), _measured(model)
    kinds = {name.split(".", 2)[2] for name in estimated}
    assert kinds == {"attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"} and estimated.keys() == measured.keys()
    for name, est in estimated.items():
        relative = (est - measured[name]).abs() / measured[name]
        # gated MLPs: gate and up share their input, which the estimate treats as independent (~5%)
        assert relative.median() < 0.1 and relative.max() < 0.5, (name, relative.median(), relative.max())
        spread = measured[name] / measured[name].mean()  # a uniform estimate would be off by this much
        assert (spread - 1).abs().median() > 0.1, name


def test_post_norm_blocks_read_the_norm_before_them():
    """BERT-style blocks normalise after each sublayer: attention reads the previous block's second norm
    (the embedding norm for the first), the MLP its own block's first norm."""
    model = tiny_model("bert", vocab_size=320)
    _spread_norms(model)
    estimated = input_moments(model)

    def second(norm):
        return norm.weight.detach().square() + norm.bias.detach().square()

    torch.testing.assert_close(estimated["blocks.0.attn.qkv"], second(model.emb_norm))
    torch.testing.assert_close(estimated["blocks.1.attn.qkv"], second(model.blocks[0].norm2))
    torch.testing.assert_close(estimated["blocks.1.mlp.fc"], second(model.blocks[1].norm1))


@pytest.mark.parametrize("symmetric", [False, True])
def test_weighing_by_input_moments_lowers_the_expected_output_error(symmetric):
    """E‖(Ŵ − W)x‖² = Σ m_k (Ŵ − W)²_nk for inputs with second moments m: the search weighted by m
    lowers it against the search weighted by the weights' own magnitudes."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(96, 256, generator=g) * 0.05
    m = torch.exp(torch.randn(256, generator=g) * 1.5)
    m[::37] *= 100  # a few massive channels, as in SmolLM2's MLP

    def expected_error(q):
        return ((q.dequantize() - w).square() * m).sum()

    weighted = rtn(w, 4, 64, symmetric, search=True, importance=m)
    plain = rtn(w, 4, 64, symmetric, search=True)
    assert expected_error(weighted) < (0.95 if symmetric else 0.65) * expected_error(plain)
    if symmetric:  # the symmetric grid keeps each group's largest value within reach (no clipping)
        largest = w.reshape(96, -1, 64).abs().amax(-1)
        assert (weighted.scale.float().abs() >= largest / 8 * 0.99).all()
    again = rtn(w, 4, 64, symmetric, search=True, importance=m * 3)  # only the ratios matter
    assert torch.equal(again.dequantize(), weighted.dequantize())


def test_quantize_weighs_rtn_int4_by_the_estimated_moments():
    model = tiny_model("llama", vocab_size=320)
    _spread_norms(model)
    moments = input_moments(model)
    originals = {name: model.get_submodule(name).weight.detach().clone() for name in moments}
    q = lmforge.quantize(LM(model, compile="eager"), scheme="int4", group_size=32, aot=False, report=False)
    differs = 0
    for name, w in originals.items():
        ours = q.lm.model.get_submodule(name).dequantize()
        assert torch.equal(ours, rtn(w, 4, 32, search=True, importance=moments[name]).dequantize()), name
        differs += not torch.equal(ours, rtn(w, 4, 32, search=True).dequantize())
    assert differs == len(originals)


def test_every_stack_of_blocks_is_estimated_under_its_own_name():
    """A vision tower's blocks inside a larger model get estimates too, named as `linear_layers` names
    them (what `lmforge.quantize` looks them up by)."""
    from torch import nn

    from lmforge.model.swap import linear_layers
    from lmforge.model.vision import VisionConfig, VisionTransformer

    class TwoTowers(nn.Module):
        def __init__(self):
            super().__init__()
            self.text = tiny_model("llama", vocab_size=320)
            config = VisionConfig(image_size=16, patch_size=4, vision_d_model=16, vision_n_layer=2)
            self.vision = VisionTransformer(config)

    model = TwoTowers()
    estimated = input_moments(model)
    linears = linear_layers(model)
    assert {"vision.blocks.1.mlp.proj", "text.blocks.1.attn.proj"} <= estimated.keys() <= linears.keys()
    for name, est in estimated.items():
        assert est.shape == (linears[name].in_features,) and (est > 0).all(), name
