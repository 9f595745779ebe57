"""`lmforge.model.linear.Linear`: its one-row bf16 path on the CPU (`torch.mv` / `addmv`) gives bit for
bit what `F.linear` gives and is the path one row of bf16 takes; its float32 inference path runs the
kernel the machine's probe chose, equals `F.linear`, stays out of autograd and out of compiled graphs'
own lowering (the custom op); every other case is `F.linear`."""

from __future__ import annotations

import gc
import json

import pytest
import torch
import torch.nn.functional as F

from lmforge import hardware
from lmforge.model import linear
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


@pytest.fixture
def onednn_chosen(monkeypatch):
    """Every float32 shape runs oneDNN's linear, whatever this machine's probe would choose; the calls
    are counted."""
    calls = []
    real = torch.ops.mkldnn._linear_pointwise
    monkeypatch.setattr(linear, "fp32_kernel", lambda *shape: "onednn")
    monkeypatch.setattr(
        torch.ops.mkldnn, "_linear_pointwise", lambda *a: calls.append(a[0].shape) or real(*a)
    )
    return calls


@pytest.mark.parametrize("bias", [False, True])
def test_fp32_onednn_path_equals_f_linear(onednn_chosen, bias):
    torch.manual_seed(0)
    layer = Linear(576, 960, bias=bias)
    with torch.no_grad():
        if bias:
            layer.bias.normal_()
        inputs = [torch.randn(1, 1, 576), torch.randn(8, 576), torch.randn(3, 5, 576)]
        inputs.append(torch.randn(5, 3, 576).transpose(0, 1))  # not contiguous
        for x in inputs:
            got = layer(x)
            assert got.shape == (*x.shape[:-1], 960)
            torch.testing.assert_close(got, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
        assert len(onednn_chosen) == len(inputs)
        assert layer(torch.randn(0, 576)).shape == (0, 960)  # no rows: aten's, which takes them
        assert len(onednn_chosen) == len(inputs)


def test_fp32_onednn_path_stays_out_of_autograd(onednn_chosen):
    layer = Linear(64, 32)
    x = torch.randn(2, 64, requires_grad=True)
    layer(x).sum().backward()  # training: F.linear, with gradients
    assert onednn_chosen == [] and x.grad is not None and layer.weight.grad is not None
    layer(torch.randn(2, 64)).sum().backward()  # weights that learn: F.linear too
    assert onednn_chosen == []
    with torch.no_grad():
        layer(torch.randn(2, 64))
    with torch.inference_mode():
        layer(torch.randn(2, 64))
    layer.requires_grad_(False)
    layer(torch.randn(2, 64))  # frozen and given plain input: nothing to differentiate
    assert len(onednn_chosen) == 3


def test_fp32_compiled_graph_calls_the_kernel_choice_at_run_time(monkeypatch):
    """Under torch.compile the layer is the custom op, so the kernel is picked per call (rows 1 and 4
    through one graph with a symbolic batch) and the result equals eager. (oneDNN's op is not wrapped
    here: inductor reads the real op namespace when it builds its decomposition table.)"""
    asked = []
    monkeypatch.setattr(linear, "fp32_kernel", lambda *shape: asked.append(shape) or "onednn")
    torch.manual_seed(0)
    layer = Linear(48, 100)
    compiled = torch.compile(layer, dynamic=True)
    with torch.no_grad():
        for rows in (1, 4):
            x = torch.randn(rows, 48)
            torch.testing.assert_close(compiled(x), F.linear(x, layer.weight, layer.bias))
    assert asked[-2:] == [(100, 48, 1), (100, 48, 4)]


def test_fp32_kernel_choice_is_measured_once_per_machine_and_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    linear._fp32_kernel.cache_clear()
    measured = []
    figures = {  # seconds per call for each bucket: oneDNN 2x faster at one row, 5% at 8, slower at 128
        1: {"aten": 2.0, "onednn": 1.0},
        8: {"aten": 1.05, "onednn": 1.0},
        128: {"aten": 1.0, "onednn": 1.5},
    }
    monkeypatch.setattr(
        linear, "measure_fp32_linear", lambda o, i, rows: measured.append((o, i, rows)) or figures[rows]
    )
    try:
        chosen = [linear.fp32_kernel(960, 576, rows) for rows in (1, 5, 32, 33, 4096)]
        assert chosen == ["onednn", "aten", "aten", "aten", "aten"]  # a 5% win is within the noise
        assert measured == [(960, 576, 1), (960, 576, 8), (960, 576, 128)]
        assert linear.fp32_kernel(16, 8, 1) == "aten" and len(measured) == 3  # too small to probe
        linear._fp32_kernel.cache_clear()  # a new process reads the figures from disk
        assert linear.fp32_kernel(960, 576, 1) == "onednn" and len(measured) == 3
        (record,) = (tmp_path / "hardware").glob("*.json")
        assert record.stem == hardware.probe_key("cpu")
        assert json.loads(record.read_text())["fp32_linear_seconds"]["960x576 rows 1"] == figures[1]
    finally:
        linear._fp32_kernel.cache_clear()


def test_fp32_probe_times_both_kernels():
    figures = linear.measure_fp32_linear(512, 512, 1, rounds=1)
    assert set(figures) == set(linear.KERNELS) and all(0 < t < 1 for t in figures.values())


def test_packed_fp32_weights_equal_f_linear_and_follow_the_weight():
    """`pack_fp32` gives big float32 weights a oneDNN-packed copy that the inference path reads (eager and
    compiled); small and bf16 weights are left alone; a weight changed in place is read plain again,
    and the copy goes with the weight."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(Linear(576, 960), Linear(960, 576, bias=False), Linear(16, 8))
    half = Linear(576, 960).to(torch.bfloat16)
    assert linear.pack_fp32(model) == (576 * 960 + 960 * 576) * 4 and linear.pack_fp32(half) == 0
    big, other, small = model
    assert linear.packed_weight(big.weight) is not None and linear.packed_weight(small.weight) is None
    assert linear.pack_fp32(model) == 0  # packed already
    x = torch.randn(3, 5, 576)
    with torch.no_grad():
        for rows in (x[:1, :1], x[0], x):
            torch.testing.assert_close(big(rows), F.linear(rows, big.weight, big.bias), rtol=1e-5, atol=1e-5)
        read = []
        real = linear.packed_weight
        linear.packed_weight = lambda w: read.append(real(w) is not None) or real(w)
        try:
            compiled = torch.compile(model[:2], dynamic=True)
            torch.testing.assert_close(
                compiled(x), other(F.linear(x, big.weight, big.bias)), rtol=1e-5, atol=1e-5
            )
        finally:
            linear.packed_weight = real
        assert len(read) >= 2 and all(read)  # the layers read their packed copies in the compiled graph
        big.weight.mul_(-1)  # in place: the packed copy is stale
        assert linear.packed_weight(big.weight) is None
        torch.testing.assert_close(big(x), F.linear(x, big.weight, big.bias))
        assert linear.pack_fp32(model) == 576 * 960 * 4  # packed anew
    key = id(other.weight)
    del model, big, other, small, compiled
    gc.collect()
    assert key not in linear._PACKED
