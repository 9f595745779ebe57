"""The model's linear layer: `nn.Linear` with a faster single-row path for bfloat16 on the CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Linear):
    """`nn.Linear`, but one row of bfloat16 input on the CPU goes through `torch.addmv`.

    With a single row, oneDNN's bf16 matrix-matrix product reads the weight about 1.5x slower than its
    matrix-vector product (SmolLM2's shapes, `benchmarks/gemv.py`); a one-token decode step is mostly
    that read. Both accumulate in fp32 and round once, so the results are bit-identical (tested). Under
    torch.compile the graph keeps `F.linear` (the compiler picks its own kernel, and a branch on the row
    count would specialise a graph traced with a symbolic batch size)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if (
            x.dtype is torch.bfloat16
            and w.dtype is torch.bfloat16
            and x.device.type == "cpu"
            and x.numel() == x.shape[-1]
            and not torch.compiler.is_compiling()
        ):
            v = x.reshape(-1)
            y = torch.mv(w, v) if self.bias is None else torch.addmv(self.bias, w, v)
            return y.reshape(*x.shape[:-1], w.shape[0])
        return F.linear(x, w, self.bias)
