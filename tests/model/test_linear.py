"""`lmforge.model.linear.Linear`: its one-row bf16 path on the CPU (`torch.mv` / `addmv`) gives bit for
bit what `F.linear` gives, is the path one row of bf16 takes, and leaves every other case to `F.linear`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.model.linear import Linear


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("d_in", "d_out"), [(576, 960), (48, 100), (13, 7), (576, 4096)])
def test_one_bf16_row_equals_f_linear_bit_for_bit(d_in, d_out, bias):
    torch.manual_seed(d_in + d_out)
    layer = Linear(d_in, d_out, bias=bias).to(torch.bfloat16)
    with torch.no_grad():
        if bias:
            layer.bias.normal_()  # a zero bias would hide a second rounding
        for shape in [(d_in,), (1, d_in), (1, 1, d_in)]:
            x = torch.randn(shape, dtype=torch.bfloat16)
            got = layer(x)
            assert got.shape == (*shape[:-1], d_out)
            assert torch.equal(got, F.linear(x, layer.weight, layer.bias))


def test_the_matrix_vector_path_is_taken_for_one_bf16_row_only(monkeypatch):
    calls = []
    for name in ("mv", "addmv"):
        real = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    layer = Linear(16, 8).to(torch.bfloat16)
    no_bias = Linear(16, 8, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        layer(torch.randn(1, 1, 16, dtype=torch.bfloat16))
        no_bias(torch.randn(1, 16, dtype=torch.bfloat16))
        assert calls == ["addmv", "mv"]
        layer(torch.randn(2, 1, 16, dtype=torch.bfloat16))  # two rows: a matrix product
        layer.float()(torch.randn(1, 16))  # float32: F.linear
        assert calls == ["addmv", "mv"]


def test_gradients_flow_through_the_one_row_path():
    layer = Linear(8, 4).to(torch.bfloat16)
    x = torch.randn(1, 8, dtype=torch.bfloat16, requires_grad=True)
    layer(x).float().sum().backward()
    assert x.grad is not None and layer.weight.grad is not None and layer.bias.grad is not None
    assert torch.equal(layer.bias.grad, torch.ones(4, dtype=torch.bfloat16))
