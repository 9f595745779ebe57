import math

import pytest
import torch

from lmforge.errors import LMForgeError
from lmforge.model import Transformer
from lmforge.train.optim import LRSchedule, Muon, build_optimizer, param_groups
from tiny import tiny_config


def test_cosine_schedule_values():
    s = LRSchedule(lr=1.0, total_steps=110, warmup_steps=10, decay="cosine", min_lr=0.1)
    assert s.lr_at(0) == pytest.approx(0.1)  # warmup: (step + 1) / warmup
    assert s.lr_at(4) == pytest.approx(0.5)
    assert s.lr_at(9) == pytest.approx(1.0)
    assert s.lr_at(10) == pytest.approx(1.0)  # decay starts at the peak
    assert s.lr_at(60) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: cos(pi/2) = 0
    assert s.lr_at(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert s.lr_at(110) == pytest.approx(0.1)
    assert s.lr_at(500) == pytest.approx(0.1)


def test_linear_and_constant_schedules():
    lin = LRSchedule(lr=2.0, total_steps=100, warmup_steps=0, decay="linear", min_lr=0.0)
    assert [lin.lr_at(s) for s in (0, 25, 50, 100)] == pytest.approx([2.0, 1.5, 1.0, 0.0])
    const = LRSchedule(lr=3e-4, total_steps=50, warmup_steps=5, decay="constant")
    assert const.lr_at(2) == pytest.approx(3e-4 * 3 / 5)
    assert const.lr_at(5) == const.lr_at(49) == pytest.approx(3e-4)


def test_schedule_rejects_bad_settings():
    with pytest.raises(LMForgeError, match="min_lr"):
        LRSchedule(lr=1e-3, total_steps=10, min_lr=1e-2)
    with pytest.raises(LMForgeError, match="warmup"):
        LRSchedule(lr=1e-3, total_steps=10, warmup_steps=20)


def test_param_groups_decay_only_matrices():
    model = Transformer(tiny_config("gpt2"))
    groups = {g["weight_decay"]: set(g["names"]) for g in param_groups(model, 0.1)}
    decay, no_decay = groups[0.1], groups[0.0]
    assert "blocks.0.attn.qkv.weight" in decay and "blocks.1.mlp.proj.weight" in decay
    assert "tok_emb.weight" in no_decay and "pos_emb.weight" in no_decay  # embeddings (tied head too)
    assert "blocks.0.norm1.weight" in no_decay and "blocks.0.norm1.bias" in no_decay
    assert "blocks.0.attn.qkv.bias" in no_decay and "norm.weight" in no_decay
    assert not decay & no_decay
    every = {n for n, _ in model.named_parameters()}
    assert decay | no_decay == every
    assert all(not n.endswith("bias") and "norm" not in n and "emb" not in n for n in decay)


def test_weight_decay_is_decoupled_and_skips_no_decay_group():
    """With zero gradients AdamW only applies decay: w <- w - lr * wd * w on matrices, nothing else."""
    model = Transformer(tiny_config("gpt2"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, lr=0.1, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        factor = 1 - 0.1 * 0.5 if name == "blocks.0.mlp.fc.weight" or name.endswith("qkv.weight") else None
        if factor is not None:
            torch.testing.assert_close(p.detach(), before[name] * factor)
        if name in ("tok_emb.weight", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias"):
            torch.testing.assert_close(p.detach(), before[name])


def test_frozen_parameters_are_left_out():
    model = Transformer(tiny_config("gpt2"))
    model.tok_emb.weight.requires_grad_(False)
    names = {n for g in param_groups(model, 0.1) for n in g["names"]}
    assert "tok_emb.weight" not in names and "blocks.0.attn.qkv.weight" in names


def _newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The quintic Newton–Schulz iteration of Keller Jordan's Muon, written out in float64."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.double()
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / x.norm()
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def test_muon_steps_the_hidden_matrices_and_adamw_the_rest():
    """One step from zero momentum: a hidden matrix moves by lr·0.2·√max(shape)·NS(g) after decay
    (Moonlight's RMS matching; the first Nesterov update is (1 - μ²)·g, which NS normalises away);
    embeddings, norms, biases and an untied head follow a plain AdamW step on the same gradients."""
    torch.manual_seed(0)
    model = Transformer(tiny_config("gpt2", tie_embeddings=False))
    twin = Transformer(tiny_config("gpt2", tie_embeddings=False))
    twin.load_state_dict(model.state_dict())
    opt = build_optimizer(model, 1e-2, weight_decay=0.1, name="muon")
    names = {n for g in opt.param_groups if g.get("names") for n in g["names"]}
    muon_names = set(opt.optimizers[0].param_groups[0]["names"])
    assert "blocks.0.attn.qkv.weight" in muon_names and "blocks.0.mlp.proj.weight" in muon_names
    assert not muon_names & {"tok_emb.weight", "pos_emb.weight", "lm_head.weight"}
    assert all(n.endswith("weight") and "norm" not in n for n in muon_names)
    assert names == {n for n, p in model.named_parameters()}

    # random full-rank gradients (a real tiny batch's are near rank-deficient, where bf16 noise in
    # PyTorch's iteration is amplified on purpose: NS pushes every singular value toward 1)
    directions = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    for m in (model, twin):
        sum((p * directions[n]).sum() for n, p in m.named_parameters()).backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    others = [(n, p) for n, p in twin.named_parameters() if n not in muon_names]
    reference = torch.optim.AdamW(
        [
            {"params": [p for n, p in others if n == "lm_head.weight"], "weight_decay": 0.1},
            {"params": [p for n, p in others if n != "lm_head.weight"], "weight_decay": 0.0},
        ],
        lr=1e-2,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    reference.step()
    twin_params = dict(twin.named_parameters())
    for n, p in model.named_parameters():
        if n in muon_names:
            grad = twin_params[n].grad
            step = -1e-2 * 0.2 * max(p.shape) ** 0.5 * _newton_schulz(grad)
            moved = p.detach().double() - before[n].double() * (1 - 1e-2 * 0.1)
            # iterated in bf16 or fp32 (as the CPU allows): the float64 step to bf16's rounding
            assert (moved - step).norm() / step.norm() < 0.03, n
        else:
            torch.testing.assert_close(p.detach(), twin_params[n].detach(), rtol=1e-6, atol=1e-7)


def _muon_pair(ns_dtype: torch.dtype):
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(48, 80)), torch.nn.Parameter(torch.randn(96, 32))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    options = dict(lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    return ours, theirs, Muon(ours, ns_dtype=ns_dtype, **options), torch.optim.Muon(theirs, **options)


def _step_both(ours, theirs, opt, reference, steps: int = 3) -> None:
    for _ in range(steps):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        opt.step()
        reference.step()


def test_muon_in_bfloat16_is_pytorchs_muon():
    """Three steps on a wide and a tall matrix: with bfloat16 iterations our Muon moves the parameters
    and the momentum exactly as torch.optim.Muon does, and each loads the other's state dict."""
    ours, theirs, opt, reference = _muon_pair(torch.bfloat16)
    _step_both(ours, theirs, opt, reference)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        torch.testing.assert_close(opt.state[a]["momentum_buffer"], reference.state[b]["momentum_buffer"])
    opt.load_state_dict(reference.state_dict())
    assert set(opt.state_dict()["state"][0]) == {"momentum_buffer"}


def test_muon_iterates_in_float32_where_bf16_is_emulated(monkeypatch):
    """On a CPU without native bf16 (where PyTorch's bf16 iteration is emulated, ~40x slower than its
    float32 matmul on a Zen 3) the optimizer build_optimizer makes iterates in float32, and its step is
    the float64 Newton–Schulz step to float32's rounding, closer than bfloat16 gets."""
    from lmforge import hardware

    monkeypatch.setattr(hardware, "native_support", lambda p, *a, **k: "native" if p == "fp32" else None)
    model = Transformer(tiny_config("gpt2"))
    assert build_optimizer(model, 1e-2, name="muon").optimizers[0].ns_dtype == torch.float32
    errors = {}
    for dtype in (torch.float32, torch.bfloat16):
        ours, _, opt, _ = _muon_pair(dtype)
        before = [p.detach().double().clone() for p in ours]
        for p in ours:
            p.grad = torch.randn_like(p)
        opt.step()
        errors[dtype] = max(
            ((p.detach().double() - b * (1 - 0.02 * 0.1)) - step).norm() / step.norm()
            for p, b in zip(ours, before)
            for step in [-0.02 * 0.2 * max(p.shape) ** 0.5 * _newton_schulz(p.grad)]
        )
    assert errors[torch.float32] < 1e-4 < 1e-3 < errors[torch.bfloat16] < 0.03, errors


def test_muon_state_round_trips_and_refuses_an_adamw_state():
    model = Transformer(tiny_config("gpt2"))
    opt = build_optimizer(model, 1e-3, name="muon")
    model(torch.randint(0, 256, (1, 8))).float().mean().backward()
    opt.step()
    fresh = build_optimizer(model, 1e-3, name="muon")
    fresh.load_state_dict(opt.state_dict())
    assert len(fresh.state) == len(opt.state) > 0
    with pytest.raises(LMForgeError, match="not Muon's"):
        fresh.load_state_dict(build_optimizer(model, 1e-3).state_dict())
