"""w8a8-dynamic, LLM.int8 and SmoothQuant: each equals a reference written here from its definition
(LLM.int8 also bitsandbytes' own functional int8 path); quantize → save → load gives identical outputs."""

from __future__ import annotations

import pytest
import torch

import lmforge
from lmforge.io.checkpoint import write_checkpoint
from lmforge.lm import LM
from lmforge.quant.calibrate import input_scales
from lmforge.quant.formats import rtn
from lmforge.quant.smoothquant import smoothing_scales
from lmforge.quant.w8a8 import LLMInt8Linear, W8A8Linear, W8A8StaticLinear
from tiny import tiny_model

IDS = torch.randint(0, 256, (2, 11), generator=torch.Generator().manual_seed(0))


def _layer(n=96, k=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * 0.05, torch.randn(n, generator=g) * 0.1, g


def _reference_w8a8(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """From the definition, in float64: weight rows int8 with scale max|w_n| / 127 (rounded to bf16 as
    stored), each input row int8 with scale max|x_m| / 127, integer dot products, rescaled, + bias."""
    s_w = (w.abs().amax(1) / 127).to(torch.bfloat16).double()
    q_w = torch.clamp(torch.round(w.double() / s_w[:, None]), -127, 127)
    out = torch.empty(x.shape[0], w.shape[0], dtype=torch.float64)
    for m, row in enumerate(x.double()):
        s_x = row.abs().max() / 127
        q_x = torch.round(row / s_x)
        out[m] = (q_w @ q_x) * s_x * s_w + bias.double()
    return out


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_w8a8_linear_equals_the_definition(rows):
    w, b, g = _layer()
    module = W8A8Linear(rtn(w, 8), b)
    x = torch.randn(rows, 128, generator=g)
    torch.testing.assert_close(module(x).double(), _reference_w8a8(x, w, b), rtol=1e-5, atol=1e-5)
    # bf16 activations: quantized from the bf16 values, the result rounded to bf16
    xb = x.to(torch.bfloat16)
    ref = _reference_w8a8(xb.float(), w, b)
    torch.testing.assert_close(module(xb).double(), ref, rtol=2**-7, atol=2**-7 * ref.abs().max().item())


def test_llm_int8_matches_bitsandbytes_and_keeps_outlier_columns_exact():
    """bitsandbytes' functional LLM.int8 (int8_vectorwise_quant with threshold 6, int8_linear_matmul,
    int8_mm_dequant, plus the outlier columns times the dequantized weight columns in floating point) on a
    layer whose input has an outlier column: the outputs agree within 1% of the output scale. Every value
    of the injected column is above the threshold, so bitsandbytes' element-wise outlier masking for the
    row scales and our column-wise one agree."""
    F = pytest.importorskip("bitsandbytes.functional")
    w, b, g = _layer()
    x = torch.randn(16, 128, generator=g)
    x[:, 17] = 20 + torch.rand(16, generator=g)  # an outlier feature
    module = LLMInt8Linear(rtn(w, 8), b, threshold=6.0)
    assert module.outlier_columns(x).tolist() == [17]
    ours = module(x)

    c_x, s_x, cols = F.int8_vectorwise_quant(x.clone(), threshold=6.0)
    c_w, s_w, _ = F.int8_vectorwise_quant(w.clone())
    acc = F.int8_linear_matmul(c_x, c_w)
    theirs = F.int8_mm_dequant(acc, s_x, s_w).float()  # fp16, as bitsandbytes returns it
    w_deq = c_w.float() * s_w[:, None] / 127
    theirs = theirs + x[:, cols] @ w_deq[:, cols].T + b
    assert cols.tolist() == [17]
    scale = theirs.abs().max().item()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0.01 * scale)
    # plain int8 activations (no outlier split) are far off: the column squeezes every row's scale
    plain = W8A8Linear(rtn(w, 8), b)(x)
    assert (plain - x @ w.T - b).abs().max() > 3 * (ours - x @ w.T - b).abs().max()

    # the outlier column passes in floating point: moving it moves the output by exactly Δ · w_col
    shifted = x.clone()
    shifted[:, 17] += 0.123
    delta = module(shifted) - ours
    expected = 0.123 * module.dequantize()[:, 17].expand_as(delta)
    torch.testing.assert_close(delta, expected, rtol=0, atol=1e-5)


def test_smoothing_lowers_activation_quantization_error_on_an_outlier_channel():
    """A layer whose input has one channel 50x larger than the rest: with SmoothQuant's scales
    (alpha 0.5) the w8a8 output error is several times lower than plain w8a8's, and the float product
    is unchanged by the smoothing itself."""
    w, b, g = _layer(k=256)
    x = torch.randn(64, 256, generator=g)
    x[:, 3] *= 50
    s = smoothing_scales(x.abs().amax(0), w, alpha=0.5)
    exact = x @ w.T + b
    torch.testing.assert_close((x / s) @ (w * s).T + b, exact, rtol=1e-4, atol=1e-4)
    plain = W8A8Linear(rtn(w, 8), b)(x)
    smoothed = W8A8Linear(rtn(w * s, 8), b)(x / s)
    err_plain = (plain - exact).pow(2).mean()
    err_smoothed = (smoothed - exact).pow(2).mean()
    assert err_smoothed < 0.25 * err_plain, (err_smoothed, err_plain)


class _Bytes:
    """The least tokenizer calibration needs: UTF-8 bytes."""

    def encode(self, text: str, add_special_tokens: bool = False, **_) -> list[int]:
        return list(text.encode("utf-8"))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize(
    "options",
    [
        {"scheme": "w8a8-dynamic"},
        {"scheme": "w8a8-dynamic", "compute_dtype": "float32"},
        {"scheme": "int8", "method": "llm-int8", "threshold": 0.5},
        {"scheme": "w8a8-dynamic", "method": "smoothquant", "alpha": 0.6},
        {"scheme": "w8a8-static"},
        {"scheme": "w8a8-static", "act_clip": "percentile", "act_percentile": 99.0},
        {"scheme": "w8a8-static", "method": "smoothquant", "alpha": 0.6},
    ],
)
def test_quantize_save_load_gives_identical_outputs(tmp_path, family, options):
    lm = LM(tiny_model(family, vocab_size=320), _Bytes(), compile="eager")
    before = lm.model(IDS)
    calibration = {"calibration_samples": 4, "calibration_length": 32}
    result = lmforge.quantize(lm, report=False, **calibration, **options)
    q = result.lm
    out = q.model(IDS)
    # int8 weights, each layer against the float weight it was rounded from (smoothed, where it was)
    assert min(row["sqnr_db"] for row in result.card["layers"]) > 30
    assert (out.float() - before).abs().max() < 0.1 * before.abs().max()
    kind = LLMInt8Linear if options.get("method") == "llm-int8" else W8A8Linear
    kind = W8A8StaticLinear if options["scheme"] == "w8a8-static" else kind
    assert type(q.model.blocks[0].mlp.proj) is kind and type(q.model.blocks[1].attn.qkv) is kind
    record = q.model.quantization
    if options.get("method") == "smoothquant":
        expected = ["blocks.0.attn.qkv", "blocks.0.mlp.fc", "blocks.1.attn.qkv", "blocks.1.mlp.fc"]
        assert record["smoothed"] == (expected if family == "llama" or q.model.blocks[0].pre_norm else [])
        assert record["alpha"] == 0.6
    if options.get("method") == "llm-int8":
        assert q.model.blocks[0].mlp.fc.threshold == 0.5
    if options["scheme"] == "w8a8-static":
        assert record["act_clip"] == options.get("act_clip", "minmax")
        assert all(float(m.input_scale) > 0 for m in q.model.modules() if isinstance(m, W8A8StaticLinear))
    write_checkpoint(tmp_path / "q", q.model)
    loaded = lmforge.load(tmp_path / "q", device="cpu", compile="eager")
    assert [type(m) for m in loaded.model.modules()] == [type(m) for m in q.model.modules()]
    assert loaded.model.quantization == record
    assert torch.equal(loaded.model(IDS), out)


def test_w8a8_static_linear_equals_the_definition():
    """One fixed activation scale: codes round(x / s_x) clamped to ±127 (values beyond the calibrated
    range are clipped), integer dot products with the int8 weight rows, rescaled, + bias."""
    w, b, g = _layer()
    x = torch.randn(9, 128, generator=g)
    s_x = float(torch.tensor(2.0 / 127).to(torch.bfloat16))  # |x| above ~2 is clipped; stored in bf16
    out = W8A8StaticLinear(rtn(w, 8), b, input_scale=s_x)(x).double()
    s_w = (w.abs().amax(1) / 127).to(torch.bfloat16).double()
    q_w = torch.clamp(torch.round(w.double() / s_w[:, None]), -127, 127)
    q_x = torch.clamp(torch.round(x.double() / s_x), -127, 127)
    torch.testing.assert_close(out, (q_x @ q_w.T) * s_x * s_w + b.double(), rtol=1e-5, atol=1e-5)


def test_static_scales_minmax_and_percentile():
    """Minmax covers the largest |x| seen; a percentile ignores a rare outlier, which lowers the
    quantization error of every other value (what clipping is for)."""
    model = tiny_model("llama", vocab_size=320)
    windows = torch.randint(0, 320, (8, 32), generator=torch.Generator().manual_seed(1))
    seen = []
    hook = model.blocks[0].mlp.proj.register_forward_pre_hook(lambda m, a: seen.append(a[0].abs().max()))
    with torch.no_grad():
        model(windows)
    hook.remove()
    names = ["blocks.0.mlp.proj"]
    minmax = input_scales(model, names, windows, "minmax", 100.0)["blocks.0.mlp.proj"]
    assert minmax == pytest.approx(float(seen[0]) / 127, rel=1e-6)  # bf16 rounding happens in the module
    p99 = input_scales(model, names, windows, "percentile", 99.0)["blocks.0.mlp.proj"]
    assert p99 < minmax
    x = torch.randn(4096, 128, generator=torch.Generator().manual_seed(2))
    x[7, 3] = 60.0  # one outlier value
    w, b, _ = _layer()
    reference = x @ w.T + b

    def error(scale):
        return (W8A8StaticLinear(rtn(w, 8), b, input_scale=scale)(x) - reference)[8:].pow(2).mean()

    assert error(float(torch.quantile(x.abs().reshape(-1)[:1_000_000], 0.9999)) / 127) < error(60.0 / 127)


def test_bad_method_scheme_pairs():
    lm = LM(tiny_model("llama", vocab_size=320), compile="eager")
    with pytest.raises(lmforge.LMForgeError, match="smoothquant quantizes activations"):
        lmforge.quantize(lm, scheme="int8", method="smoothquant")
    with pytest.raises(lmforge.LMForgeError, match="llm-int8 is an int8 method"):
        lmforge.quantize(lm, scheme="int4", method="llm-int8")
    with pytest.raises(lmforge.LMForgeError, match="w8a8-static needs calibration text"):
        lmforge.quantize(lm, scheme="w8a8-static", report=False)
    with pytest.raises(lmforge.LMForgeError, match="llm-int8 is an int8 method"):
        lmforge.quantize(lm, scheme="w8a8-static", method="llm-int8")
    with pytest.raises(lmforge.LMForgeError, match="smoothquant needs calibration text"):
        lmforge.quantize(lm, scheme="w8a8-dynamic", method="smoothquant", report=False)


def test_cli_w8a8_and_llm_int8(tmp_path, capsys):
    from lmforge.cli import main

    write_checkpoint(tmp_path / "float", tiny_model("gpt2", vocab_size=320))
    args = ["quantize", str(tmp_path / "float"), "--no-report", "--no-aot", "--out"]
    assert main([*args, str(tmp_path / "a"), "--scheme", "w8a8-dynamic"]) == 0
    assert "w8a8-dynamic rtn" in capsys.readouterr().out
    assert main([*args, str(tmp_path / "b"), "--method", "llm-int8", "--threshold", "4"]) == 0
    assert "int8 llm-int8 threshold 4.0" in capsys.readouterr().out
    loaded = lmforge.load(tmp_path / "b", device="cpu", compile="eager")
    assert loaded.model.blocks[0].attn.qkv.threshold == 4.0
    assert main([*args, str(tmp_path / "c"), "--method", "smoothquant"]) == 2
    assert "use scheme w8a8-dynamic" in capsys.readouterr().err
