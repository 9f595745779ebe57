"""HQQ (Badri & Shaji, 2023, "Half-Quadratic Quantization"): better int4 zero-points without data.

Round-to-nearest with min-max parameters minimises nothing in particular; a few outlier weights stretch a
group's range and the rest round coarsely. HQQ keeps the min-max scale s of each group and chooses its
zero-point z (in code units: w ≈ (q − z) · s) to minimise the lp error ‖W − (Q − z) s‖_p^p with p < 1,
which cares less about a few large errors (the outliers) than about many small ones. The lp term is
split off with an auxiliary variable E (half-quadratic splitting) and the two halves alternate:

1. Q = clamp(round(W / s + z), 0, 15)  — the codes for the current zero;
2. E = shrink_p(W − (Q − z) s, β)      — the part of the error the lp norm lets through: a generalised
   soft threshold that zeroes small errors and keeps large ones (the proximal step of |·|^p / β);
3. z = mean_g(Q − (W − E) / s)         — the closed-form zero that best explains W − E in the group;
4. β ← κ β                             — the quadratic coupling tightens each round.

It stops when the mean absolute error of the whole weight stops falling, keeping the best zero seen.
The result is the ordinary asymmetric int4 format (`formats.py`): scale s and zero (8 − z) · s, stored in
bfloat16 with the codes recomputed against the stored values, so the same kernel runs it.
Defaults are the paper's (p = 0.7, β = 10, κ = 1.01, 20 rounds).
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.errors import LMForgeError
from lmforge.quant.formats import PARAM_DTYPE, QuantizedWeight, groups, int4_codes, rtn

LP_NORM = 0.7
BETA = 10.0
KAPPA = 1.01
ROUNDS = 20
MAX_CODE = 15


def shrink(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    """Generalised soft threshold: sign(x) · max(|x| − |x|^(p−1) / β, 0) (p = 1: plain soft threshold).
    In place on one buffer: this runs on every weight each round, and is most of HQQ's time."""
    magnitude = x.abs()
    magnitude.sub_(magnitude.pow(p - 1).div_(beta)).clamp_(min=0)
    return magnitude.copysign_(x)


@torch.no_grad()
def optimize_zero(
    w: torch.Tensor,
    inverse_scale: torch.Tensor,
    zero: torch.Tensor,
    p: float = LP_NORM,
    beta: float = BETA,
    kappa: float = KAPPA,
    rounds: int = ROUNDS,
) -> torch.Tensor:
    """The zero-points z (..., 1) that HQQ's alternating updates reach for groups `w` (..., g) with fixed
    scales, given as 1/s (..., 1) as in the paper (w · (1/s) + z is the code before rounding), from `zero`."""
    best_error, best_zero = float("inf"), zero
    for _ in range(rounds):
        q = torch.round(w * inverse_scale + zero).clamp(0, MAX_CODE)
        error = w - (q - zero) / inverse_scale
        mean_error = error.abs().mean().item()
        if mean_error >= best_error:
            break
        best_error, best_zero = mean_error, zero
        sparse = shrink(error, beta, p)
        zero = (q - (w - sparse) * inverse_scale).mean(dim=-1, keepdim=True)
        beta *= kappa
    return best_zero


def hqq(w: torch.Tensor, group_size: int, rounds: int = ROUNDS) -> QuantizedWeight:
    """Asymmetric int4 codes of `w` (N, K) in groups of `group_size` columns, zero-points by HQQ."""
    g = groups(w.detach().float(), group_size)  # (N, K/g, g)
    low, high = g.amin(dim=-1, keepdim=True), g.amax(dim=-1, keepdim=True)
    scale = ((high - low) / MAX_CODE).clamp(min=1e-8)  # (N, K/g, 1), kept fixed
    inverse = MAX_CODE / (high - low).clamp(min=MAX_CODE * 1e-8)
    zero = optimize_zero(g, inverse, -low * inverse, rounds=rounds)  # min-max start: code 0 at the minimum
    stored_scale = scale[..., 0].to(PARAM_DTYPE)
    stored_zero = ((8 - zero[..., 0]) * scale[..., 0]).to(PARAM_DTYPE)  # our zero: the value of code 8
    codes = int4_codes(g, stored_scale, stored_zero).reshape(w.shape)
    return QuantizedWeight(4, codes, stored_scale, stored_zero, group_size)


def hqq_weights(model: nn.Module, targets: dict[str, int], group_size: int) -> dict[str, QuantizedWeight]:
    """HQQ for every int4 target; int8 targets (the LM head) keep RTN's symmetric rows, which have no
    zero-point to optimise."""
    out = {}
    for name, bits in targets.items():
        weight = model.get_submodule(name).weight
        if bits == 4:
            out[name] = hqq(weight, group_size)
        elif bits == 8:
            out[name] = rtn(weight, 8)
        else:
            raise LMForgeError(f"hqq has no {bits}-bit format for layer {name}")
    return out
