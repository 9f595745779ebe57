"""AWQ (Lin et al., 2023): protect the weights that meet large activations, then clip each group.

1. Scales. A linear y = x Wᵀ is unchanged by W' = W · diag(s), x' = x / s. Rounding W' instead of W
   shrinks the relative error of the columns with s_j > 1, and those are the ones that matter when
   their activations are large. AWQ takes s_j = mean|x_j|^α (normalised so max·min = 1) and searches
   α on a grid for the smallest error of the quantized layer's output on calibration inputs.
2. Clipping. Per output row and group, the range RTN covers is shrunk to a fraction of the group's
   absmax where that lowers the group's share of the output error (outlier weights cost the rest
   of the group resolution).

1/s is folded into what produces x, so nothing runs at inference: the norm before the attention qkv
and the MLP fc (pre-norm blocks, as SmoothQuant), and the "up" half of a gated MLP's fused fc before
the MLP proj (its input is act(gate) · up). The attention output projection is only clipped: its input
mixes heads (and shared KV heads), so no single row of the qkv projection can take its scale.
Blocks run one after another on the scaled, clipped float weights, as in the reference code.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.quant.calibrate import _block_inputs
from lmforge.quant.formats import rtn
from lmforge.quant.smoothquant import foldable

GRID = 20  # α in 0, 0.05, ..., 0.95; clip ratios 1.0, 0.975, ..., 0.5
ROWS = 2048  # calibration tokens per layer used by the searches
CLIP_ROWS = 512


def fake_quantize(w: torch.Tensor, bits: int, group_size: int, symmetric: bool) -> torch.Tensor:
    """W after a round trip through the stored format (what the quantized layer will compute with)."""
    return rtn(w, bits, group_size, symmetric).dequantize(torch.float32)


@torch.no_grad()
def search_scale(x: torch.Tensor, w: torch.Tensor, bits: int, group: int, symmetric: bool) -> torch.Tensor:
    """s (K,) minimising |x Wᵀ − (x/s) Q(W s)ᵀ|² over the grid of α; ones when no α beats α = 0."""
    x, w = x.float(), w.float()
    x_mean = x.abs().mean(dim=0).clamp(min=1e-6)
    reference = x @ w.T
    best, best_s = float("inf"), torch.ones_like(x_mean)
    for i in range(GRID):
        s = x_mean.pow(i / GRID)
        s = s / (s.max() * s.min()).sqrt()
        q = fake_quantize(w * s, bits, group, symmetric) / s
        error = (x @ q.T - reference).pow(2).mean().item()
        if error < best:
            best, best_s = error, s
    return best_s


@torch.no_grad()
def search_clip(x: torch.Tensor, w: torch.Tensor, bits: int, group: int, symmetric: bool) -> torch.Tensor:
    """W with each (row, group) clamped to the fraction of its absmax that minimises that group's
    contribution to the output error on `x`."""
    x, w = x.float(), w.float()
    n, k = w.shape
    xg = x.reshape(x.shape[0], k // group, group)  # (T, G, g)
    wg = w.reshape(n, k // group, group)  # (N, G, g)
    absmax = wg.abs().amax(dim=-1, keepdim=True)  # (N, G, 1)
    best_err = torch.full((n, k // group), float("inf"))
    best = wg.clone()
    for i in range(GRID + 1):
        limit = absmax * (1 - i / (2 * GRID))
        clipped = wg.clamp(-limit, limit)
        q = fake_quantize(clipped.reshape(n, k), bits, group, symmetric).reshape(n, k // group, group)
        err = torch.einsum("tgk,ngk->tng", xg, q - wg).pow(2).mean(dim=0)  # (N, G)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better[..., None], clipped, best)
    return best.reshape(n, k)


def _pairs(block: nn.Module, i: int, folds: dict[str, nn.Module]) -> list[tuple[str, nn.Module, object]]:
    """(linear name, linear, what produces its input or None) in the order the block runs them."""
    p = f"blocks.{i}."
    mlp = block.mlp
    return [
        (p + "attn.qkv", block.attn.qkv, folds.get(p + "attn.qkv")),
        (p + "attn.proj", block.attn.proj, None),
        (p + "mlp.fc", mlp.fc, folds.get(p + "mlp.fc")),
        (p + "mlp.proj", mlp.proj, mlp.fc if mlp.gated else None),
    ]


def apply_scale(linear: nn.Linear, producer: nn.Module, s: torch.Tensor) -> None:
    """W ← W · diag(s) and the output channels of `producer` (a norm, or a gated MLP's fused fc, whose
    up half feeds `linear`) ← / s: the float model computes the same function."""
    linear.weight.mul_(s.to(linear.weight.dtype)[None, :])
    if isinstance(producer, nn.Linear):  # a gated MLP's fc: [gate | up], the up half
        rows = slice(producer.out_features // 2, producer.out_features)
        producer.weight[rows].div_(s[:, None].to(producer.weight.dtype))
        if producer.bias is not None:
            producer.bias[rows].div_(s.to(producer.bias.dtype))
        return
    producer.weight.div_(s.to(producer.weight.dtype))  # a norm
    if getattr(producer, "bias", None) is not None:
        producer.bias.div_(s.to(producer.bias.dtype))


@torch.no_grad()
def awq(
    model: nn.Module,
    targets: dict[str, int],
    windows: torch.Tensor,
    group_size: int,
    symmetric: bool,
) -> dict[str, float]:
    """Scale and clip the targeted block linears of the float `model` in place; returns each scaled
    layer's mean scale. The caller rounds the result (RTN)."""
    inputs, (rope, mask) = _block_inputs(model, windows)
    folds = foldable(model)
    scaled: dict[str, float] = {}
    for i, block in enumerate(model.blocks):
        for name, linear, producer in _pairs(block, i, folds):
            if name not in targets:
                continue
            x = _layer_input(block, i, linear, inputs, rope, mask)
            bits = targets[name]
            group = group_size if bits == 4 else linear.in_features
            if producer is not None:
                s = search_scale(x, linear.weight, bits, group, symmetric)
                apply_scale(linear, producer, s)
                x = x / s
                scaled[name] = float(s.mean())
            clip_x = x[torch.linspace(0, len(x) - 1, min(CLIP_ROWS, len(x))).long()]
            linear.weight.copy_(search_clip(clip_x, linear.weight, bits, group, symmetric))
        inputs = [block(h, rope, mask, None, i) for h in inputs]
    return scaled


def _layer_input(block, i, linear, inputs, rope, mask) -> torch.Tensor:
    """The rows `linear` sees when the block runs on `inputs` (evenly subsampled to ROWS)."""
    seen: list[torch.Tensor] = []
    handle = linear.register_forward_pre_hook(lambda m, a: seen.append(a[0].reshape(-1, a[0].shape[-1])))
    try:
        for h in inputs:
            block(h, rope, mask, None, i)
    finally:
        handle.remove()
    x = torch.cat(seen).float()
    return x[torch.linspace(0, len(x) - 1, min(ROWS, len(x))).long()]
