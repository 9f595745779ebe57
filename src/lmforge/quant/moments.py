"""Each block linear's input second moments E[x_k²], estimated from the model's own weights (no data).

RTN's int4 search weighs each weight's rounding error by how large its input column runs: an error in
column k moves the output by x_k times as much. Calibration-based methods (GPTQ, AWQ) measure x on text;
here it is propagated from the weights, treating each normalised hidden state as independent unit
Gaussians per channel:
- after a norm with gain g (and bias b): mean b, variance g² — the input of `attn.qkv` and `mlp.fc`;
- through a linear (W, c): mean W·mean + c, variance (W²)·variance — the value heads, the MLP's gate/up;
- attention mixes value rows: each `attn.proj` input channel keeps its value channel's moments;
- an activation: E[act(a)²] for a ~ N(mean, variance), by Gauss–Hermite quadrature; gated MLPs multiply
  by the up projection's second moment — the input of `mlp.proj`.
Layers it cannot place (other heads, a post-norm first block without an embedding norm) are left out,
and their search falls back to the weights' own magnitudes (`formats.int4_search`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lmforge.model.transformer import Block

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(32)  # ∫ f(z) e^{-z²/2} dz ≈ Σ w_i f(z_i)


def input_moments(model: nn.Module) -> dict[str, torch.Tensor]:
    """Linear name → (in_features,) float32 estimated E[x²] of its input, for the linears of every stack
    of `Block`s in `model` (a language model's, a vision tower's)."""
    out: dict[str, torch.Tensor] = {}
    for name, owner in model.named_modules():
        blocks = getattr(owner, "blocks", None)
        if not isinstance(blocks, nn.ModuleList):
            continue
        prefix = f"{name}.blocks" if name else "blocks"
        previous = getattr(owner, "emb_norm", None)  # what feeds a post-norm block's attention
        for i, block in enumerate(blocks):
            if not isinstance(block, Block):
                break
            attn_in = block.norm1 if block.pre_norm else previous
            mlp_in = block.norm2 if block.pre_norm else block.norm1
            if attn_in is not None:
                mean, var = _norm(attn_in)
                out[f"{prefix}.{i}.attn.qkv"] = mean.square() + var
                out[f"{prefix}.{i}.attn.proj"] = _attention_output(block.attn, mean, var)
            mean, var = _norm(mlp_in)
            out[f"{prefix}.{i}.mlp.fc"] = mean.square() + var
            out[f"{prefix}.{i}.mlp.proj"] = _mlp_hidden(block.mlp, mean, var)
            previous = block.norm2
    return out


def _norm(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    gain = norm.weight.detach().float()
    bias = getattr(norm, "bias", None)
    mean = bias.detach().float() if bias is not None else torch.zeros_like(gain)
    return mean, gain.square()


def _linear(linear: nn.Module, rows: slice, mean: torch.Tensor, var: torch.Tensor):
    w = linear.weight.detach().float()[rows]
    out_mean = w @ mean
    if linear.bias is not None:
        out_mean = out_mean + linear.bias.detach().float()[rows]
    return out_mean, w.square() @ var


def _attention_output(attn: nn.Module, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Moments of each value channel, repeated for the query heads that read its kv head."""
    nh, nkv, hd = attn.n_head, attn.n_kv_head, attn.head_dim
    v_mean, v_var = _linear(attn.qkv, slice((nh + nkv) * hd, None), mean, var)
    second = (v_mean.square() + v_var).view(nkv, hd)
    return second.repeat_interleave(nh // nkv, dim=0).reshape(-1)


def _mlp_hidden(mlp: nn.Module, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    a_mean, a_var = _linear(mlp.fc, slice(None), mean, var)
    if not mlp.gated:
        return _activation_square(mlp.act, a_mean, a_var)
    (g_mean, u_mean), (g_var, u_var) = a_mean.chunk(2), a_var.chunk(2)
    return _activation_square(mlp.act, g_mean, g_var) * (u_mean.square() + u_var)


def _activation_square(act, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """E[act(a)²] for a ~ N(mean, var), per channel."""
    nodes = torch.as_tensor(_NODES, dtype=torch.float32)
    weights = torch.as_tensor(_WEIGHTS / np.sqrt(2 * np.pi), dtype=torch.float32)
    a = mean[:, None] + var.sqrt()[:, None] * nodes[None, :]
    return act(a).square() @ weights
