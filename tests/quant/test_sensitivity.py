"""--auto-keep --budget-mb: the scan finds the layer that rounding hurts most, the choice keeps it in
float within the budget, and the budget is checked against the size with every layer quantized."""

from __future__ import annotations

import pytest
import torch

import lmforge
from lmforge.errors import LMForgeError
from lmforge.lm import LM
from lmforge.model.linear import Linear
from lmforge.quant import convert
from lmforge.quant.config import QuantizeConfig
from lmforge.quant.convert import plan, rtn_weights
from lmforge.quant.report import checkpoint_bytes
from lmforge.quant.sensitivity import layer_bytes, scan
from tiny import tiny_chat_tokenizer, tiny_model

TEXT = "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun. " * 30
FRAGILE = "blocks.1.mlp.proj"


def _fragile_model():
    """A tiny llama whose FRAGILE layer has one huge weight per row group: int4 min-max rounding then
    flattens the rest of each group, so rounding that layer alone costs the most loss."""
    model = tiny_model("llama", vocab_size=320, seed=2)
    with torch.no_grad():
        w = model.get_submodule(FRAGILE).weight
        w.mul_(4)
        w[:, ::32] = 40 * w.abs().max()
    return model


def test_scan_ranks_the_fragile_layer_first():
    model = _fragile_model()
    config = QuantizeConfig(scheme="int4", group_size=32, scales="minmax", auto_keep=True, budget_mb=100)
    targets, _ = plan(model, config)
    windows = torch.randint(0, 320, (4, 33), generator=torch.Generator().manual_seed(0))
    sensitivity = scan(model, rtn_weights(model, targets, config), windows)
    assert "lm_head" not in sensitivity and set(sensitivity) == set(targets) - {"lm_head"}
    assert max(sensitivity, key=sensitivity.get) == FRAGILE
    before = model(windows)
    assert torch.equal(model(windows), before)  # the scan puts every weight back


def test_auto_keep_keeps_the_fragile_layer_within_the_budget(tmp_path):
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    lm = LM(_fragile_model(), tiny_chat_tokenizer([TEXT]), compile="eager")
    common = dict(scheme="int4", group_size=32, scales="minmax", calibration=str(text), calibration_samples=4)
    common.update(calibration_length=32, report=False, compute_dtype="float32")
    floor = lmforge.quantize(lm, **common).card["disk_mb_after"]
    linear = lm.model.get_submodule(FRAGILE)
    extra = (layer_bytes(linear, None, 0, 4) - layer_bytes(linear, 4, 32, 0)) / 2**20
    budget = floor + extra * 1.05  # room for the fragile layer, not for any second one of its size
    result = lmforge.quantize(lm, out=tmp_path / "q", aot=False, auto_keep=True, budget_mb=budget, **common)
    kept = result.lm.model.quantization["kept"]
    assert FRAGILE in kept and kept[FRAGILE].startswith("--auto-keep")
    assert type(result.lm.model.get_submodule(FRAGILE)) is Linear  # kept in float
    assert checkpoint_bytes(result.lm.model) <= budget * 2**20  # tensors; the file adds its JSON header
    assert max(result.card["sensitivity"], key=result.card["sensitivity"].get) == FRAGILE
    loaded = lmforge.load(tmp_path / "q", device="cpu", compile="eager")
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    assert torch.equal(loaded.model(ids), result.lm.model(ids))
    with pytest.raises(LMForgeError, match="below the size with every layer quantized"):
        lmforge.quantize(lm, auto_keep=True, budget_mb=floor / 2, **common)


def test_auto_keep_rounds_each_layer_once(tmp_path, monkeypatch):
    """The scan's rounding sizes the all-quantized floor and becomes the checkpoint's codes: no layer is
    rounded a second time (with the moment-weighted scale search, SmolLM2's rounding takes ~40 s)."""
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    lm = LM(_fragile_model(), tiny_chat_tokenizer([TEXT]), compile="eager")
    options = dict(scheme="int4", group_size=32, calibration=str(text), calibration_samples=4)
    options.update(calibration_length=32, report=False, compute_dtype="float32")
    plain = lmforge.quantize(lm, **options)
    linear = lm.model.get_submodule(FRAGILE)
    extra = (layer_bytes(linear, None, 0, 4) - layer_bytes(linear, 4, 32, 0)) / 2**20
    budget = plain.card["disk_mb_after"] + extra * 1.05  # keeps the fragile layer alone
    rounded = []
    rtn = convert.rtn

    def counting_rtn(weight, *args, **kwargs):
        rounded.append(weight.data_ptr())
        return rtn(weight, *args, **kwargs)

    monkeypatch.setattr(convert, "rtn", counting_rtn)
    result = lmforge.quantize(lm, auto_keep=True, budget_mb=budget, **options)
    targets, _ = plan(lm.model, QuantizeConfig(scheme="int4", group_size=32))
    assert len(rounded) == len(set(rounded)) == len(targets)
    assert list(result.lm.model.quantization["kept"]) == [FRAGILE]
    expected, quantized = plain.lm.model.state_dict(), result.lm.model.state_dict()
    for name in result.lm.model.quantization["layers"]:  # the others hold the plain quantize's codes
        for key in (k for k in quantized if k.startswith(f"{name}.")):
            assert torch.equal(quantized[key], expected[key]), key


def test_auto_keep_options_go_together():
    with pytest.raises(LMForgeError, match="go together"):
        QuantizeConfig(scheme="int8", auto_keep=True)
    with pytest.raises(LMForgeError, match="go together"):
        QuantizeConfig(scheme="int8", budget_mb=10.0)
    with pytest.raises(LMForgeError, match="has none"):
        QuantizeConfig(scheme="bf16", auto_keep=True, budget_mb=10.0)
