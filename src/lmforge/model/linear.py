"""The model's linear layer: `nn.Linear` with faster inference paths on the CPU, chosen per machine."""

from __future__ import annotations

import functools
import math
import time
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from lmforge import hardware
from lmforge.model.ops import define_op

KERNELS = ("aten", "onednn")
MIN_PROBE_WEIGHT = 1 << 18  # smaller weights stay in cache and cost microseconds: aten, unprobed
ONEDNN_MARGIN = 1.1  # oneDNN is chosen where the probe measures it at least this much faster


class Linear(nn.Linear):
    """`nn.Linear`, with two inference paths on the CPU that read the weight faster:

    - one row of bfloat16 goes through `torch.mv`: oneDNN's bf16 matrix-matrix product reads the
      weight about 1.5x slower than its matrix-vector product (`benchmarks/gemv.py`); both accumulate
      in fp32 and round once, so the results are bit-identical (tested); eager only (under
      torch.compile the compiler picks its own kernel, and a branch on the row count would specialise
      a graph traced with a symbolic batch size);
    - float32 without autograd runs oneDNN's linear where a probe on this machine measured it faster
      than aten's (MKL) for the weight's shape and the row count's bucket (`fp32_kernel`): on a Zen 3
      with 2 threads MKL streams a wide one-row weight at ~11 GB/s and oneDNN at ~18-22 GB/s, and at 8
      rows (a served batch) oneDNN is up to 2x faster on the LM head. Compiled and exported graphs
      call it as the custom op `lmforge::linear_fp32`, which picks the kernel at run time (inductor
      lowers oneDNN's linear itself only for frozen weights). A weight given a packed copy by
      `pack_fp32` (what `lmforge serve` does) is read from that copy instead."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if x.device.type == "cpu":
            if x.dtype is torch.float32 and w.dtype is torch.float32:
                if not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)):
                    if torch.compiler.is_compiling():
                        return torch.ops.lmforge.linear_fp32(x, w, self.bias)
                    return linear_fp32(x, w, self.bias)
            elif (
                x.dtype is torch.bfloat16
                and w.dtype is torch.bfloat16
                and x.numel() == x.shape[-1]
                and not torch.compiler.is_compiling()
            ):
                v = x.reshape(-1)
                y = torch.mv(w, v) if self.bias is None else torch.addmv(self.bias, w, v)
                return y.reshape(*x.shape[:-1], w.shape[0])
        return F.linear(x, w, self.bias)


def linear_fp32(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear` for float32 on the CPU through the kernel this machine runs fastest (no autograd): the
    weight's oneDNN-packed copy where `pack_fp32` made one, else the probe's choice."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if not rows:
        return F.linear(x, weight, bias)
    packed = packed_weight(weight)
    if packed is not None:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    if fp32_kernel(*weight.shape, rows) == "onednn":
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


# id(weight) -> (a weak reference to it, its version when packed, the packed copy); see pack_fp32
_PACKED: dict[int, tuple[weakref.ref, int, torch.Tensor]] = {}
PACK_ROWS = 8  # the row count oneDNN lays the packed weights out for (a served batch)


def pack_fp32(model: nn.Module) -> int:
    """Give each float32 `Linear` weight of `model` on the CPU a copy in oneDNN's packed layout, which its
    inference path then reads instead: at 8 rows (a served batch) 1.3-1.8x faster than the plain layout
    on SmolLM2's shapes, and as fast at 1 and 128 rows (`benchmarks/gemv.py`). The copy costs the
    weights' memory once more; it is ignored from the moment the weight changes in place (its version)
    and freed with the weight. Returns the bytes added."""
    if not _has_onednn_linear():
        return 0
    added = 0
    for module in model.modules():
        w = module.weight if isinstance(module, Linear) else None
        if w is None or w.dtype is not torch.float32 or w.device.type != "cpu":
            continue
        if w.numel() < MIN_PROBE_WEIGHT or packed_weight(w) is not None:
            continue
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), PACK_ROWS)
        forget = functools.partial(_PACKED.pop, id(w), None)
        _PACKED[id(w)] = (weakref.ref(w, lambda _, forget=forget: forget()), w._version, packed)
        added += w.numel() * w.element_size()
    return added


def packed_weight(weight: torch.Tensor) -> torch.Tensor | None:
    """`weight`'s packed copy, if `pack_fp32` made one and the weight has not changed since."""
    entry = _PACKED.get(id(weight))
    if entry is None or entry[0]() is not weight or entry[1] != weight._version:
        return None
    return entry[2]


define_op(
    "linear_fp32(Tensor x, Tensor weight, Tensor? bias) -> Tensor",
    linear_fp32,
    lambda x, weight, bias: x.new_empty(*x.shape[:-1], weight.shape[0]),
)


def row_bucket(rows: int) -> int:
    """The row count a probe measures for `rows`: one (a decode step), a served batch, or a prompt."""
    return 1 if rows <= 1 else 8 if rows <= 32 else 128


def fp32_kernel(out_features: int, in_features: int, rows: int) -> str:
    """Which kernel runs a float32 linear of this shape fastest here ("aten" or "onednn"): measured once
    per machine, shape and row bucket, cached on disk beside the matmul probe (`lmforge.hardware`)."""
    return _fp32_kernel(out_features, in_features, row_bucket(rows), torch.get_num_threads())


@functools.cache
def _fp32_kernel(out_features: int, in_features: int, rows: int, threads: int) -> str:
    if out_features * in_features < MIN_PROBE_WEIGHT or not _has_onednn_linear():
        return "aten"
    times = hardware.cached_probe(
        "fp32_linear_seconds",
        f"{out_features}x{in_features} rows {rows}",
        lambda: measure_fp32_linear(out_features, in_features, rows),
    )
    return "onednn" if times["onednn"] * ONEDNN_MARGIN <= times["aten"] else "aten"


@functools.cache
@hardware.on_cpu
def _has_onednn_linear() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        x, w = torch.ones(2, 4), torch.ones(3, 4)
        return torch.equal(torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""), x @ w.T)
    except (AttributeError, RuntimeError):
        return False


def measure_fp32_linear(out_features: int, in_features: int, rows: int, rounds: int = 3) -> dict:
    """Seconds per call of each kernel, the best of `rounds` alternating passes over enough copies of the
    weight that they do not fit in a CPU cache (as in a decode step, which streams every layer's)."""
    g = torch.Generator().manual_seed(0)  # never the global generator
    copies = max(2, math.ceil((64 << 20) / (out_features * in_features * 4)))
    weights = [torch.randn(out_features, in_features, generator=g) for _ in range(copies)]
    x = torch.randn(rows, in_features, generator=g)
    run = {
        "aten": lambda w: F.linear(x, w),
        "onednn": lambda w: torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""),
    }
    best = dict.fromkeys(run, math.inf)
    with torch.no_grad():
        for _ in range(rounds):
            for name, kernel in run.items():
                kernel(weights[0])
                start = time.perf_counter()
                for w in weights:
                    kernel(w)
                best[name] = min(best[name], (time.perf_counter() - start) / copies)
    return best
