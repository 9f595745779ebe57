"""GPTQ (Frantar et al., 2022): quantize a linear layer's weight column by column, and after each
column spread its rounding error over the columns not yet quantized, weighted by the inverse Hessian
of the layer's reconstruction loss |X Wᵀ − X Ŵᵀ|², where H = 2 XᵀX over calibration inputs X.

- damping: λ = `damping` · mean(diag H) is added to the diagonal (H is often near-singular);
- act-order: columns with the largest diag H (the inputs that carry most energy) go first, while the
  error can still be absorbed by many columns; with act-order the group parameters are fixed up front
  from the unquantized weights ("static groups"), so each group is still a run of g input columns, the
  layout the int4 kernel reads;
- lazy batch updates: columns are processed in blocks of 128, the rest of W updated once per block.
The result is the same `QuantizedWeight` format RTN gives.
"""

from __future__ import annotations

import torch

from lmforge.quant.formats import (
    QuantizedWeight,
    int4_codes,
    int4_params,
    int8_codes,
    int8_scale,
)


class Hessian:
    """Running 2·XᵀX / n over the rows of every batch of inputs a layer sees."""

    def __init__(self, in_features: int):
        self.sum = torch.zeros(in_features, in_features, dtype=torch.float64)
        self.rows = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double()
        self.sum += x.T @ x
        self.rows += x.shape[0]

    def value(self) -> torch.Tensor:
        return (2 * self.sum / max(self.rows, 1)).float()


def _inverse_cholesky(h: torch.Tensor, damping: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + λI)⁻¹."""
    h = h.clone()
    h += damping * h.diagonal().mean() * torch.eye(h.shape[0])
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h.double()))
    return torch.linalg.cholesky(inverse, upper=True).float()


def gptq(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group_size: int | None = None,
    symmetric: bool = False,
    damping: float = 0.01,
    act_order: bool = True,
    block: int = 128,
) -> QuantizedWeight:
    """Quantize `weight` (N, K) to `bits` (8: per row; 4: groups of `group_size` columns)."""
    w = weight.detach().float().clone()
    n, k = w.shape
    h = hessian.float().clone()
    dead = h.diagonal() == 0  # inputs that were always zero: any weight there is free
    h[dead, dead] = 1
    w[:, dead] = 0

    # quantization parameters: per row (int8) or per group of original columns (int4)
    if bits == 8:
        scale = int8_scale(w)
        zero = None
    elif act_order:
        scale, zero = int4_params(w.reshape(n, k // group_size, group_size), symmetric)
    else:
        scale = torch.empty(n, k // group_size, dtype=torch.bfloat16)
        zero = torch.empty_like(scale)

    order = torch.argsort(h.diagonal(), descending=True) if act_order else torch.arange(k)
    w, h = w[:, order], h[order][:, order]
    hinv = _inverse_cholesky(h, damping)
    if group_size:  # a block holds whole groups
        block = max(block, group_size)
    codes = torch.empty(n, k, dtype=torch.int8 if bits == 8 else torch.uint8)

    for start in range(0, k, block):
        end = min(start + block, k)
        w_block = w[:, start:end].clone()
        errors = torch.zeros_like(w_block)
        for i in range(end - start):
            column = int(order[start + i])  # the column's original index
            col = w_block[:, i]
            if bits == 8:
                q = int8_codes(col[:, None], scale)[:, 0]
                approx = q.float() * scale.float()
            else:
                g = column // group_size
                if not act_order and column % group_size == 0:  # parameters from the updated weights
                    group = torch.cat([w_block[:, i:], w[:, end:]], dim=1)[:, :group_size]
                    scale[:, g], zero[:, g] = int4_params(group, symmetric)
                q = int4_codes(col[:, None], scale[:, g], zero[:, g])[:, 0]
                approx = (q.float() - 8) * scale[:, g].float() + zero[:, g].float()
            codes[:, column] = q
            err = (col - approx) / hinv[start + i, start + i]
            w_block[:, i:] -= err[:, None] * hinv[start + i, start + i : end][None, :]
            errors[:, i] = err
        w[:, end:] -= errors @ hinv[start:end, end:]
    return QuantizedWeight(bits, codes, scale, zero, group_size if bits == 4 else None)
