"""Quantization-aware training: train through the rounding, then round for real.

`QATLinear` is an `nn.Linear` (same parameters, same state-dict keys, so checkpoints and resume are
unchanged) whose forward uses the weight after a round trip through the target format — RTN in the
same int8 / int4 format `lmforge.quantize` stores — and whose backward passes the gradient straight
through the rounding (the straight-through estimator: w_q = w + (Q(w) − w).detach()). The float weights
learn to sit where rounding costs the loss least; `export` then quantizes them with RTN, which gives
exactly the codes the forward pass used.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.model.swap import linear_layers, swap_modules
from lmforge.quant.formats import check_group_size, rtn


class QATLinear(nn.Linear):
    """nn.Linear computing with its weight fake-quantized (RTN), gradients straight through."""

    bits: int = 8
    group_size: int | None = None
    symmetric: bool = False

    @classmethod
    def wrap(cls, linear: nn.Linear, bits: int, group_size: int | None, symmetric: bool) -> QATLinear:
        module = cls.__new__(cls)
        module.__dict__ = linear.__dict__.copy()  # the same Parameter objects: optimizers, LoRA, ties
        module.bits, module.group_size, module.symmetric = bits, group_size, symmetric
        return module

    def fake_quantized(self) -> torch.Tensor:
        with torch.no_grad():
            rounded = rtn(self.weight, self.bits, self.group_size, self.symmetric).dequantize(
                self.weight.dtype
            )
        return self.weight + (rounded - self.weight).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.fake_quantized(), self.bias)

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.bits == 4 else ""
        return f"{super().extra_repr()}, qat=int{self.bits}{group}"


def prepare(model: nn.Module, scheme: str, group_size: int = 64, symmetric: bool = False) -> list[str]:
    """Swap the block linears for `QATLinear`s of `scheme` ("int8" or "int4"), in place; the LM head and
    embeddings stay float (`lmforge.quantize` gives the head int8 per row anyway). Returns the names."""
    bits = {"int8": 8, "int4": 4}[scheme]
    layers = linear_layers(model)
    if bits == 4:
        for name, linear in layers.items():
            check_group_size(group_size, linear.in_features, name, can_keep=False)
    return swap_modules(
        model, layers, lambda n, m: QATLinear.wrap(m, bits, group_size if bits == 4 else None, symmetric)
    )


def strip(model: nn.Module) -> None:
    """Turn `QATLinear`s back into plain `nn.Linear`s (same parameters), in place."""
    names = [n for n, m in model.named_modules() if isinstance(m, QATLinear)]

    def plain(name: str, module: QATLinear) -> nn.Linear:
        linear = nn.Linear.__new__(nn.Linear)
        linear.__dict__ = module.__dict__.copy()
        return linear

    swap_modules(model, names, plain)


def export(lm, out: str | Path, scheme: str, group_size: int = 64, symmetric: bool = False):
    """The QAT-trained `lm` quantized for real (RTN in the trained format: min-max groups, the rounding
    its steps trained through) and saved to `out`."""
    from lmforge.quant.api import quantize

    strip(lm.model)
    options = (
        {"group_size": group_size, "symmetric": symmetric, "scales": "minmax"} if scheme == "int4" else {}
    )
    return quantize(lm, out=out, scheme=scheme, method="rtn", **options)
