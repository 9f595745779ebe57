"""SmoothQuant (Xiao et al., 2022): move activation outliers into the weights before w8a8.

A linear y = x Wᵀ is unchanged by x' = x / s, W' = W · s (per input channel j). With
    s_j = max|x_j|^α / max|W_{:, j}|^(1−α)
(absmax of the activation channel over calibration data, of the weight column over its rows), the
activation channels become flatter (easier to quantize per token) and the weight columns take the
difference (α = 0.5 splits it evenly). 1/s is folded into the norm before the layer — RMSNorm's or
LayerNorm's weight (and LayerNorm's bias) — so nothing is added at run time. Layers with no norm right
before them (attention output, MLP down projection, post-norm blocks) are left as they are, as in the
paper; `smooth` returns the layers it smoothed.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.quant.calibrate import observe_inputs


def smoothing_scales(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """s (K,) for activation absmax (K,) and weight (N, K)."""
    w_absmax = weight.detach().float().abs().amax(dim=0)
    s = act_absmax.float().clamp(min=1e-5).pow(alpha) / w_absmax.clamp(min=1e-5).pow(1 - alpha)
    return s.clamp(min=1e-5)


def foldable(model: nn.Module) -> dict[str, nn.Module]:
    """Linear name → the norm whose output is its only input (pre-norm blocks: qkv and mlp.fc)."""
    out = {}
    for i, block in enumerate(model.blocks):
        if getattr(block, "pre_norm", False):
            out[f"blocks.{i}.attn.qkv"] = block.norm1
            out[f"blocks.{i}.mlp.fc"] = block.norm2
    return out


@torch.no_grad()
def activation_absmax(model: nn.Module, names: list[str], windows: torch.Tensor) -> dict[str, torch.Tensor]:
    """max |x_j| over every calibration token at the input of each named linear."""
    seen: dict[str, torch.Tensor] = {}

    def record(name: str, x: torch.Tensor) -> None:
        absmax = x.detach().reshape(-1, x.shape[-1]).abs().amax(dim=0).float()
        seen[name] = absmax if name not in seen else torch.maximum(seen[name], absmax)

    observe_inputs(model, names, windows, record)
    return seen


@torch.no_grad()
def smooth(model: nn.Module, targets: list[str], alpha: float, windows: torch.Tensor) -> list[str]:
    """Smooth every target that follows a norm, in place (weights and norms of the float model);
    returns their names."""
    norms = {n: norm for n, norm in foldable(model).items() if n in targets}
    absmax = activation_absmax(model, list(norms), windows)
    for name, norm in norms.items():
        linear = model.get_submodule(name)
        s = smoothing_scales(absmax[name], linear.weight, alpha)
        linear.weight.mul_(s.to(linear.weight.dtype)[None, :])
        norm.weight.div_(s.to(norm.weight.dtype))
        if getattr(norm, "bias", None) is not None:
            norm.bias.div_(s.to(norm.bias.dtype))
    return list(norms)
