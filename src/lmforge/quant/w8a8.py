"""int8 weights × int8 activations: `W8A8Linear` (w8a8-dynamic, also what SmoothQuant produces) and
`LLMInt8Linear` (LLM.int8: outlier input columns kept in floating point).

Per-token dynamic activation quantization, at run time for every input row m:
    s_x[m] = max_k |x[m, k]| / 127,  q_x[m, k] = round(x[m, k] / s_x[m])  (−127..127)
and with the weight's per-output-channel codes q_w (N, K) and scales s_w (N,):
    y[m, n] = s_x[m] · s_w[n] · Σ_k q_x[m, k] · q_w[n, k]  (+ bias)
The integer sum runs in int32 through `torch._int_mm` (exact; measured on SmolLM2's shapes at 1 thread
it is 2x faster than fp32 `F.linear` at decode and 3x at a 128-row prefill). torch's
`quantize_dynamic` (fbgemm) is faster still at decode (35 vs 70 µs on 1536 × 576) but quantizes the
activations per tensor to 7-bit unsigned codes, a coarser definition, so it is not used.

LLM.int8 (Dettmers et al., 2022), as bitsandbytes computes it: the input columns holding any value with
|x| ≥ `threshold` are found per batch; they are multiplied in floating point with the (dequantized)
weight columns, the other columns go through the int8 path above (their row scales taken without the
outlier columns).
Static activation quantization (w8a8-static): one scale per layer input, fixed at calibration,
    s_x = c / 127,  q_x[m, k] = round(x[m, k] / s_x)  (clamped to −127..127)
where c is the largest |x| seen on the calibration data (min-max) or a high percentile of |x| (values
beyond it are clipped: one rare outlier no longer costs every other value its resolution).
Activations enter and leave in their own dtype; the arithmetic around the integer matmul is fp32.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.quant.formats import QuantizedWeight, dequantize_int8


def per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of `x` (M, K) as int8 codes and their fp32 scales (M, 1)."""
    x = x.float()
    absmax = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
    # x · (127 / absmax), as bitsandbytes computes it: one rounding a compiled step repeats exactly
    return torch.round(x * (127 / absmax)).clamp(-127, 127).to(torch.int8), absmax / 127


def int8_matmul(q_x: torch.Tensor, q_w: torch.Tensor) -> torch.Tensor:
    """Σ_k q_x[m, k] · q_w[n, k] in int32 (M, N)."""
    if q_x.device.type == "cpu" or q_x.is_cuda:
        return torch._int_mm(q_x, q_w.t())
    return q_x.int() @ q_w.int().t()


class W8A8Linear(nn.Module):
    """y = (per-token int8 x) · (int8 per-channel W)ᵀ in int32, rescaled, + bias."""

    def __init__(self, weight: QuantizedWeight, bias: torch.Tensor | None = None, dtype=torch.float32):
        super().__init__()
        self.out_features, self.in_features = weight.codes.shape
        self.register_buffer("qweight", weight.codes.to(torch.int8))
        self.register_buffer("scale", weight.scale.to(torch.bfloat16))
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(dtype), requires_grad=False)
        self.path = "int_mm"

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_int8(self.qweight, self.scale, dtype)

    def _int8_part(self, rows: torch.Tensor) -> torch.Tensor:
        q_x, s_x = per_token(rows)
        return int8_matmul(q_x, self.qweight).float() * s_x * self.scale.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._int8_part(x.reshape(-1, self.in_features))
        y = y if self.bias is None else y + self.bias.float()
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class W8A8StaticLinear(W8A8Linear):
    """W8A8Linear whose activation scale is one calibrated number (`input_scale`), not per token."""

    def __init__(
        self,
        weight: QuantizedWeight,
        bias: torch.Tensor | None = None,
        dtype=torch.float32,
        input_scale: torch.Tensor | float = 1.0,
    ):
        super().__init__(weight, bias, dtype)
        # stored in bfloat16 like the weight scales (a checkpoint keeps its float tensors in one dtype)
        scale = torch.as_tensor(input_scale, dtype=torch.float32).reshape(())
        self.register_buffer("input_scale", scale.to(torch.bfloat16))

    def _int8_part(self, rows: torch.Tensor) -> torch.Tensor:
        s_x = self.input_scale.float()
        q_x = torch.round(rows.float() / s_x).clamp(-127, 127).to(torch.int8)
        return int8_matmul(q_x, self.qweight).float() * (s_x * self.scale.float())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, input_scale={float(self.input_scale):.4g}"


class LLMInt8Linear(W8A8Linear):
    """W8A8Linear whose outlier input columns (any |x| ≥ threshold in this batch) stay in floating point."""

    def __init__(
        self,
        weight: QuantizedWeight,
        bias: torch.Tensor | None = None,
        dtype=torch.float32,
        threshold: float = 6.0,
    ):
        super().__init__(weight, bias, dtype)
        self.threshold = threshold

    def outlier_columns(self, rows: torch.Tensor) -> torch.Tensor:
        """Indices of the input columns with any |x| ≥ threshold (none when threshold is 0)."""
        if self.threshold <= 0:
            return torch.empty(0, dtype=torch.long)
        return torch.nonzero((rows.abs() >= self.threshold).any(dim=0)).view(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()
        cols = self.outlier_columns(rows)
        if cols.numel():
            inliers = rows.index_fill(1, cols, 0.0)
            y = self._int8_part(inliers)
            w_cols = self.qweight.index_select(1, cols).float() * self.scale.float()[:, None]
            y = y + rows.index_select(1, cols) @ w_cols.T
        else:
            y = self._int8_part(rows)
        y = y if self.bias is None else y + self.bias.float()
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={self.threshold}"
