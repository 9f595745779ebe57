"""LoRA: starts equal to the base model, trains only adapters, merges to the same logits, round-trips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmforge.errors import LMForgeError
from lmforge.model import Transformer
from lmforge.train import lora as lora_lib
from lmforge.train.lora import LoRAConfig, LoRALinear
from tiny import tiny_config


def _model(**overrides) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(tiny_config("gpt2", vocab_size=320, **overrides))
    model.init_weights(0)
    return model.eval()


def _randomise_adapters(model: nn.Module) -> None:
    """B starts at zero (so LoRA starts as a no-op); give it values so the update is visible."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


IDS = torch.randint(0, 320, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("targets", [["q", "v"], ["qkv", "o", "mlp"], ["blocks.1.mlp.fc"]])
def test_merge_gives_the_same_logits(targets):
    model = _model(n_kv_head=1)  # GQA: the q and v slices have different widths
    base_logits = model(IDS)
    lora_lib.apply_lora(model, LoRAConfig(rank=4, alpha=8, targets=targets))
    torch.testing.assert_close(model(IDS), base_logits)  # B = 0: no change yet
    _randomise_adapters(model)
    adapted = model(IDS)
    assert (adapted - base_logits).abs().max() > 1e-3
    lora_lib.merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(IDS), adapted, rtol=1e-5, atol=1e-5)


def test_qv_slices_equal_separate_q_and_v_adapters():
    """LoRA on the q and v slices of the fused projection = W x + s·B_q A_q x on q rows, B_v A_v x on v rows."""
    model = _model()
    lora_lib.apply_lora(model, LoRAConfig(rank=2, alpha=4, targets=["q", "v"]))
    _randomise_adapters(model)
    layer = model.blocks[0].attn.qkv
    x = torch.randn(3, 32)
    d = 32  # n_head * head_dim = n_kv_head * head_dim (4 x 8)
    ref = layer.base(x).clone()
    (a_q, a_v), (b_q, b_v) = layer.lora_A, layer.lora_B
    ref[:, :d] += 2.0 * x @ a_q.T @ b_q.T
    ref[:, 2 * d :] += 2.0 * x @ a_v.T @ b_v.T
    torch.testing.assert_close(layer(x), ref)


def test_only_adapters_train():
    model = _model()
    names = lora_lib.apply_lora(model, LoRAConfig(rank=4, targets=["q", "v"]))
    assert names == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)


def test_adapter_round_trip(tmp_path):
    model = _model()
    cfg = LoRAConfig(rank=4, alpha=8, targets=["q", "v", "o"])
    lora_lib.apply_lora(model, cfg)
    _randomise_adapters(model)
    expected = model(IDS)
    lora_lib.save_adapter(model, tmp_path / "adapter", cfg, base_model="tiny")
    fresh = _model()
    assert lora_lib.load_adapter(fresh, tmp_path / "adapter") == cfg
    torch.testing.assert_close(fresh(IDS), expected)
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors"]


def test_bad_targets_and_adapters_are_clear_errors(tmp_path):
    with pytest.raises(LMForgeError, match="match no linear layer"):
        lora_lib.apply_lora(_model(), LoRAConfig(targets=["blocks.*.nonexistent"]))
    with pytest.raises(LMForgeError, match="not a LoRA adapter directory"):
        lora_lib.load_adapter(_model(), tmp_path)
    model = _model()
    cfg = LoRAConfig(rank=4, targets=["q"])
    lora_lib.apply_lora(model, cfg)
    lora_lib.save_adapter(model, tmp_path / "a", cfg)
    with pytest.raises(LMForgeError, match="other modules or another model shape"):
        lora_lib.load_adapter(_model(n_layer=3), tmp_path / "a")
