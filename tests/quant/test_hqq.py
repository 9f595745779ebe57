"""`hqq` (Mobius Labs' HQQ library, `Quantizer.quantize`) as the oracle for int4 group-wise asymmetric
round-to-nearest and for our HQQ method, on random weights and real SmolLM2 layers.

The two formats are one affine map written two ways. hqq: q = clamp(round(w · (1/s) + z_h), 0, 15), w ≈
(q − z_h) · s, with s = (max − min) / 15 and z_h = −min / s, all float32. Ours: w ≈ (q − 8) · s + z with
z = (8 − z_h) · s = min + 8 s; groups are runs of g input columns of a row in both (hqq, axis=1, reshapes
the row-major weight to (−1, g)). The one convention that differs: we store s and z in bfloat16 (what the
CPU int4 kernel reads) and round each weight against the stored values, so
- scales equal hqq's, zeros equal −z_h · s + 8 · s_stored (the minimum plus 8 stored steps), each
  rounded to bfloat16 and within one bfloat16 step: hqq's s is 1 / (15 / (max − min)), ours
  (max − min) / 15, one float32 ulp apart, which can round to neighbouring bfloat16 values (often on
  SmolLM2, whose weights come from fp16 Q4_1 blocks and so sit on ties of the bfloat16 grid);
- codes equal hqq's wherever hqq's unrounded position w / s + z_h is farther from a rounding tie (a
  half-integer) than the bfloat16 rounding can move it: 2⁻⁸ · (|w − z| + 8 s + |z|) / s code steps (from
  (w − z)/s with s and z each off by at most one bfloat16 step, 2⁻⁸ relative, and z = min + 8 s carrying
  s's error eight times). Elsewhere they differ by one step;
- dequantized weights differ by at most one step s (where a code differs) plus bfloat16 rounding, and the
  reconstruction errors agree within 1% plus what bfloat16 storage of s and z adds (which is all of ours
  on SmolLM2 at g32: its weights lie on that grid, so hqq's float32 error there is ~0).
Our int8 (symmetric, per row, no zero) and symmetric int4 (zero 0, codes 1..15) have no hqq
counterpart: hqq's quantizer is always min-max asymmetric.
"""

from __future__ import annotations

import pytest
import torch
from hqq.core.quantize import Quantizer

import lmforge
from lmforge.errors import LMForgeError
from lmforge.lm import LM
from lmforge.quant.formats import QuantizedWeight, groups, rtn, sqnr_db
from lmforge.quant.hqq import hqq
from lmforge.quant.modules import Int4Linear, Int8Linear
from tiny import tiny_model

LAYERS = ["blocks.0.attn.qkv", "blocks.7.mlp.proj"]  # K = 576 and 1536


def _hqq(w: torch.Tensor, group_size: int, optimize: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """hqq's codes (N, K), scales and zeros (N, K/g), float32, in hqq's convention."""
    q, meta = Quantizer.quantize(
        w.float(),
        nbits=4,
        group_size=group_size,
        optimize=optimize,
        axis=1,
        bitpack=False,
        compute_dtype=torch.float32,
        device="cpu",
    )
    n = w.shape[0]
    return q.reshape(w.shape), meta["scale"].reshape(n, -1), meta["zero"].reshape(n, -1)


def _within_one_bf16_step(
    ours: torch.Tensor, reference: torch.Tensor, floor: float | torch.Tensor = 0
) -> bool:
    step = reference.abs().clamp(min=1e-30) * 2**-7 + floor  # a bfloat16 step is at most 2⁻⁷ of the value
    return bool(((ours.float() - reference).abs() <= step).all())


def _check_rtn_against_hqq(w: torch.Tensor, group_size: int) -> float:
    """The conventions in the module docstring, checked; returns the share of codes that differ."""
    ours = rtn(w, 4, group_size)
    q_h, s_h, z_h = _hqq(w, group_size, optimize=False)
    assert _within_one_bf16_step(ours.scale, s_h)
    low = -z_h * s_h  # the group minimum, as hqq keeps it
    assert _within_one_bf16_step(ours.zero, low + 8 * ours.scale.float(), floor=low.abs() * 2**-20)

    s, z = ours.scale.float()[..., None], ours.zero.float()[..., None]
    position = groups(w.float(), group_size) / s_h[..., None] + z_h[..., None]  # hqq's, before rounding
    to_tie = (position - position.floor() - 0.5).abs()
    bound = 2**-8 * ((groups(w.float(), group_size) - z).abs() + 8 * s + z.abs()) / s
    differ = groups(ours.codes.int(), group_size) != groups(q_h.int(), group_size)
    assert not differ[to_tie > bound].any(), "a code differs away from a rounding tie"
    assert (ours.codes.int() - q_h.int()).abs().max() <= 1

    deq_h = (groups(q_h, group_size) - z_h[..., None]) * s_h[..., None]
    deq = groups(ours.dequantize(), group_size)
    assert ((deq - deq_h).abs() <= s * (1 + 2**-6)).all()
    err, err_h = (deq - groups(w, group_size)).pow(2).mean(), (deq_h - groups(w, group_size)).pow(2).mean()
    storage = (2**-6 * s + 2**-9 * z.abs()).pow(2).mean()  # what bfloat16 s and z add, at most
    assert abs(err - err_h) < 0.01 * err_h + storage, f"reconstruction error {err:.4e} vs hqq's {err_h:.4e}"
    return differ.float().mean().item()


@pytest.mark.parametrize("group_size", [32, 64, 128, 256])
def test_int4_rtn_matches_hqq_on_random_weights(group_size):
    w = torch.randn(96, 512, generator=torch.Generator().manual_seed(group_size)) * 0.02
    w[3, 7] = 0.5  # an outlier stretches its group's range
    assert _check_rtn_against_hqq(w, group_size) < 0.02


@pytest.mark.parametrize("group_size", [32, 64])
def test_int4_rtn_matches_hqq_on_smollm2_layers(smollm2, group_size):
    for name in LAYERS:
        w = smollm2.model.get_submodule(name).weight.detach()[:256]
        assert _check_rtn_against_hqq(w, group_size) < 0.02, name


def _check_hqq_method_against_hqq(w: torch.Tensor, group_size: int) -> tuple[QuantizedWeight, float]:
    """Our HQQ against hqq's optimize=True (its proximal solver, same p, β, κ, rounds): zero-points within
    0.05 code steps for ≥ 99.9% of groups (bfloat16 storage moves ours by up to ~0.03) and within 0.5
    everywhere, codes equal for ≥ 99% of weights, reconstruction error within 0.5%. The rest: the iteration
    is a fixed point of rounding, so a last-bit difference at an exact rounding tie (common on SmolLM2,
    whose weights sit on a Q4_1 grid) sends a group down another path (3 of 8,640 groups of
    blocks.0.attn.qkv end 0.3 code steps apart). Where hqq's early stop fires, ours keeps the best zero
    seen and hqq the one after it."""
    ours = hqq(w, group_size)
    q_h, s_h, z_h = _hqq(w, group_size, optimize=True)
    assert _within_one_bf16_step(ours.scale, s_h)  # HQQ leaves the min-max scale as it is
    z = 8 - ours.zero.float() / ours.scale.float()  # our zero in hqq's convention
    apart = (z - z_h).abs()
    assert (apart < 0.05).float().mean() >= 0.999 and apart.max() < 0.5
    same = (ours.codes.int() == q_h.int()).float().mean().item()
    assert same > 0.99
    deq_h = ((groups(q_h, group_size) - z_h[..., None]) * s_h[..., None]).reshape(w.shape)
    err, err_h = (ours.dequantize() - w).pow(2).mean(), (deq_h - w).pow(2).mean()
    assert abs(err / err_h - 1) < 0.005, f"reconstruction error {err:.4e} vs hqq's {err_h:.4e}"
    return ours, same


@pytest.mark.parametrize("group_size", [32, 128])
def test_hqq_method_matches_hqq_on_random_heavy_tailed_weights(group_size):
    torch.manual_seed(group_size)
    w = torch.distributions.StudentT(3.0).sample((128, 512)) * 0.02
    ours, _ = _check_hqq_method_against_hqq(w, group_size)
    assert (ours.dequantize() - w).pow(2).mean() < 0.95 * (rtn(w, 4, group_size).dequantize() - w).pow(
        2
    ).mean()


def test_hqq_method_matches_hqq_and_beats_rtn_on_smollm2_layers(smollm2):
    """At g64 (not g32: SmolLM2's Q4_1 weights already lie on an asymmetric g32 grid, see test_gptq),
    HQQ's zero-points raise the SQNR of every layer over RTN's."""
    for name in LAYERS:
        w = smollm2.model.get_submodule(name).weight.detach()
        ours, _ = _check_hqq_method_against_hqq(w, 64)
        gain = sqnr_db(w, ours.dequantize()) - sqnr_db(w, rtn(w, 4, 64).dequantize())
        assert gain > 0.3, f"{name}: HQQ gains {gain:.2f} dB over RTN"


def test_quantize_method_hqq_saves_and_loads(tmp_path):
    lm = LM(tiny_model("llama", vocab_size=320), compile="eager")
    ids = torch.randint(0, 320, (2, 11), generator=torch.Generator().manual_seed(0))
    result = lmforge.quantize(
        lm, out=tmp_path / "q", scheme="int4", group_size=32, method="hqq", report=False
    )
    model = result.lm.model
    assert model.quantization["method"] == "hqq" and isinstance(model.blocks[0].mlp.fc, Int4Linear)
    assert isinstance(model.lm_head, Int8Linear)  # the head stays symmetric int8 per row
    w = lm.model.blocks[0].mlp.fc.weight.detach()
    assert torch.equal(model.blocks[0].mlp.fc.dequantize().float(), hqq(w, 32).dequantize())
    loaded = lmforge.load(tmp_path / "q", device="cpu", compile="eager")
    assert torch.equal(loaded.model(ids), model(ids))


@pytest.mark.parametrize(
    "options", [{"scheme": "int8"}, {"scheme": "int4", "symmetric": True}, {"scheme": "w8a8-dynamic"}]
)
def test_method_hqq_refuses_schemes_without_a_zero_point(options):
    with pytest.raises(LMForgeError, match="method hqq optimises int4 zero-points"):
        lmforge.QuantizeConfig(method="hqq", **options)
