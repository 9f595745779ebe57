"""The integer weight formats, as arithmetic: what a stored code means, and round-to-nearest into it.

- int8, per output channel, symmetric: w[n, k] ≈ q[n, k] · s[n], q in −127..127, s = max|w[n]| / 127.
- int4, group-wise along the input (K/g groups of g columns per row), codes q in 0..15:
  w[n, k] ≈ (q[n, k] − 8) · s[n, k // g] + z[n, k // g] — the form torch's CPU int4 kernel computes.
  Asymmetric: s = (max − min) / 15 and z = min + 8·s, so code 0 is the group's minimum;
  symmetric: z = 0 and s = −x/8 for the group's value x of largest magnitude (llama.cpp's Q4_0 rule):
  x gets code 0 and all 16 codes are in use (s is negative when x is positive), a step of max|w|/8
  where max|w|/7 would leave code 0 unused.
Scales and zeros are stored in bfloat16 (what the kernels read); codes are computed against the
rounded scale and zero, so a stored code is the nearest one for the parameters actually stored.
Min-max parameters let one large weight stretch its group's grid; `int4_search` (the `rtn` method's
default, `--scales search`) instead picks each group's parameters for the lowest weighted squared error,
each column weighted by its input's second moment as estimated from the model's weights (`moments`).
`QuantizedWeight` is what every method (RTN, GPTQ) returns and every quantized module is built from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.errors import LMForgeError

PARAM_DTYPE = torch.bfloat16  # scales and zeros
GROUP_SIZES = (32, 64, 128, 256)  # what torch's CPU int4 kernel accepts


@dataclass
class QuantizedWeight:
    """Integer codes with their scales (and zeros): int8 → codes (N, K) int8, scale (N,);
    int4 → codes (N, K) uint8 in 0..15, scale and zero (N, K/g)."""

    bits: int
    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None = None
    group_size: int | None = None

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if self.bits == 8:
            return dequantize_int8(self.codes, self.scale, dtype)
        return dequantize_int4(self.codes, self.scale, self.zero, self.group_size, dtype)


def int8_scale(w: torch.Tensor) -> torch.Tensor:
    """(N,) per-row symmetric scales, rounded to the stored dtype; never zero."""
    return (w.float().abs().amax(dim=1) / 127).clamp(min=1e-8).to(PARAM_DTYPE)


def int8_codes(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.round(w.float() / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)


def dequantize_int8(codes: torch.Tensor, scale: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return (codes.float() * scale.float()[:, None]).to(dtype)


def int4_params(w: torch.Tensor, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero of each row of `w` (rows are groups here: callers reshape (N, K/g, g) → rows)."""
    w = w.float()
    if symmetric:
        extreme = _largest(w).squeeze(-1)
        scale = torch.where(extreme.abs() < 8e-8, -1e-8, -extreme / 8)  # never zero
        return scale.to(PARAM_DTYPE), torch.zeros_like(scale, dtype=PARAM_DTYPE)
    low, high = w.amin(dim=-1), w.amax(dim=-1)
    scale = ((high - low) / 15).clamp(min=1e-8).to(PARAM_DTYPE)
    zero = (low + 8 * scale.float()).to(PARAM_DTYPE)
    return scale, zero


# int4_search's starting grids: asymmetric, steps (max − min) / (15 + d) for d in ASYM_STRETCH; symmetric,
# steps −x/8 · f for f in SYM_STRETCH (x the group's value of largest magnitude). Chosen on Hamlet's
# perplexity (development text; the card scores The Tempest).
ASYM_STRETCH = torch.linspace(-1.0, 1.0, 21).tolist()
SYM_STRETCH = torch.linspace(0.8, 1.1, 31).tolist()
REFITS = 2


def int4_search(
    w: torch.Tensor, symmetric: bool, importance: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero of each row of `w` (rows are groups, as in `int4_params`) with the lowest weighted
    squared error Σ a·(ŵ − w)². `importance` (shaped like `w`) is a: the layer's input second moment
    per column (`moments.input_moments`), so an error counts as much as it moves the output; without
    it, a = |w| + the group's RMS (larger weights carry more of a layer's output). From each starting
    grid the codes are rounded and the grid refitted to them by weighted least squares (scale and
    offset; symmetric: scale only), `REFITS` times (a symmetric grid with `importance` never clips its
    largest value); the error is measured on the stored (bfloat16) parameters, and min-max's own grid
    is a candidate, so the result is never worse than `int4_params` by this measure."""
    w = w.float()
    if importance is None:
        weight = w.pow(2).mean(-1, keepdim=True).sqrt() + w.abs()
    else:  # scaled to mean 1 per group: only the ratios within a group matter
        weight = importance.float()
        weight = weight / weight.mean(-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
    best_scale, best_zero = int4_params(w, symmetric)
    best_error = _weighted_error(w, weight, best_scale, best_zero)
    floor = None
    if symmetric:
        step = -_largest(w) / 8
        starts = [(step * f, None) for f in SYM_STRETCH]
        # weighted by estimated moments, the grid keeps its anchor (no step below max|w|/8): letting it
        # clip the group's largest value took SmolLM2's int4 g64 on Hamlet to +43% perplexity (+25% with it)
        floor = step.abs() if importance is not None else None
    else:
        low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
        starts = [((high - low) / (15 + d), low) for d in ASYM_STRETCH]
    for step, offset in starts:
        for _ in range(REFITS):
            step, offset = _refit(w, weight, step, offset)
            if floor is not None:
                step = torch.where(step.abs() < floor, torch.where(step < 0, -floor, floor), step)
        scale = step[..., 0].to(PARAM_DTYPE)
        zero = torch.zeros_like(scale) if offset is None else (offset + 8 * step)[..., 0].to(PARAM_DTYPE)
        error = _weighted_error(w, weight, scale, zero)
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best_scale, best_zero = torch.where(better, scale, best_scale), torch.where(better, zero, best_zero)
    return best_scale, best_zero


def _refit(w, weight, step, offset):
    """Round to the grid offset + step·L (L in 0..15; symmetric: step·L, L in −8..7), then the step (and
    offset) that fit those codes best by weighted least squares; a degenerate group keeps its grid."""
    eps = 1e-12
    if offset is None:
        safe = torch.where(step.abs() < 1e-8, 1e-8, step)
        codes = torch.round(w / safe).clamp(-8, 7)
        ll = (weight * codes * codes).sum(-1, keepdim=True)
        fitted = (weight * codes * w).sum(-1, keepdim=True) / ll.clamp(min=eps)
        return torch.where(ll > eps, fitted, step), None
    codes = torch.round((w - offset) / step.clamp(min=1e-8)).clamp(0, 15)
    n = weight.sum(-1, keepdim=True)
    sl, sw = (weight * codes).sum(-1, keepdim=True), (weight * w).sum(-1, keepdim=True)
    sll, slw = (weight * codes * codes).sum(-1, keepdim=True), (weight * codes * w).sum(-1, keepdim=True)
    det = n * sll - sl * sl
    ok = det > eps * n * n
    det = det.clamp(min=eps)
    step = torch.where(ok, (n * slw - sl * sw) / det, step).clamp(min=1e-8)
    offset = torch.where(ok, (sll * sw - sl * slw) / det, offset)
    return step, offset


def _weighted_error(w, weight, scale, zero) -> torch.Tensor:
    codes = int4_codes(w, scale, zero).float() - 8
    approx = codes * scale.float()[..., None] + zero.float()[..., None]
    return (weight * (approx - w).pow(2)).sum(-1)


def _largest(w: torch.Tensor) -> torch.Tensor:
    """Each row's value of largest magnitude, with its sign (..., 1): the symmetric grid's anchor."""
    return w.gather(-1, w.abs().argmax(dim=-1, keepdim=True))


def int4_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Nearest codes 0..15 of `w` (..., g) for scale and zero (...,)."""
    q = torch.round((w.float() - zero.float()[..., None]) / scale.float()[..., None]) + 8
    return q.clamp(0, 15).to(torch.uint8)


def groups(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N, K) as (N, K/g, g)."""
    n, k = w.shape
    return w.reshape(n, k // group_size, group_size)


def dequantize_int4(
    codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int, dtype=torch.float32
) -> torch.Tensor:
    q = groups(codes, group_size).float() - 8
    w = q * scale.float()[..., None] + zero.float()[..., None]
    return w.reshape(codes.shape).to(dtype)


def check_group_size(group_size: int, in_features: int, name: str, can_keep: bool = True) -> None:
    """A one-line error naming the layer whose input width the group size does not divide (`can_keep`:
    the command offers --keep-indivisible)."""
    if group_size not in GROUP_SIZES:
        raise LMForgeError(f"group size {group_size} is not supported; use one of {GROUP_SIZES}")
    if in_features % group_size:
        raise LMForgeError(
            f"group size {group_size} does not divide the input width {in_features} of layer {name}; "
            f"use {', '.join(str(g) for g in GROUP_SIZES if in_features % g == 0) or 'another scheme'}"
            + (" or --keep-indivisible to keep such layers in higher precision" if can_keep else "")
        )


def rtn(
    w: torch.Tensor,
    bits: int,
    group_size: int | None = None,
    symmetric: bool = False,
    search: bool = False,
    importance: torch.Tensor | None = None,
) -> QuantizedWeight:
    """Round to nearest: the codes closest to `w` (N, K) for min-max (or absmax) parameters, or (int4
    with `search`) for the parameters `int4_search` picks per group, weighing column k's errors by
    `importance[k]` (K,) where given."""
    w = w.detach().float()
    if bits == 8:
        scale = int8_scale(w)
        return QuantizedWeight(8, int8_codes(w, scale), scale)
    if bits != 4 or group_size is None:
        raise LMForgeError(f"no {bits}-bit format (int8, or int4 with a group size)")
    g = groups(w, group_size)
    if search:
        weight = None if importance is None else groups(importance.float().expand_as(w), group_size)
        scale, zero = int4_search(g, symmetric, weight)
    else:
        scale, zero = int4_params(g, symmetric)
    codes = int4_codes(g, scale, zero).reshape(w.shape)
    return QuantizedWeight(4, codes, scale, zero, group_size)


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 10·log10(|ref|² / |ref − approx|²)."""
    reference, approx = reference.float(), approx.float()
    noise = (reference - approx).pow(2).sum().item()
    signal = reference.pow(2).sum().item()
    return float("inf") if noise == 0 else 10 * torch.log10(torch.tensor(signal / noise)).item()
