"""Mixed precision by sensitivity: which layers to leave in float under a size budget (`--auto-keep`).

The scan rounds one layer at a time (RTN in the chosen format, the rest of the model untouched) and
measures how far the next-token distributions on the calibration windows move: the mean KL divergence
from the float model's, in nats per token (always ≥ 0, unlike a loss change, which rounding noise can
lower by chance). Layers are then kept in float, most sensitive per extra megabyte first, while the
checkpoint stays within `--budget-mb`. The budget is the whole checkpoint (embeddings, norms and the
LM head included), so it is what the user sees on disk.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import LMForgeError
from lmforge.quant.config import QuantizeConfig
from lmforge.quant.convert import quantize_model
from lmforge.quant.formats import QuantizedWeight

SCAN_WINDOWS = 8  # calibration windows the scan scores (of --calibration-samples)


@torch.no_grad()
def _log_probs(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(model(windows).float(), dim=-1).reshape(-1, model.config.vocab_size)


@torch.no_grad()
def scan(model: nn.Module, rounded: dict[str, QuantizedWeight], windows: torch.Tensor) -> dict[str, float]:
    """Layer name → KL(float ‖ rounded) in nats/token when only that layer takes its `rounded` weight
    (`convert.rtn_weights`: as the checkpoint rounds it); the LM head is not scanned (it has its own
    rule, `--lm-head`)."""
    windows = windows[:SCAN_WINDOWS]
    base = _log_probs(model, windows)
    out = {}
    for name, weight in rounded.items():
        if name == "lm_head":
            continue
        linear = model.get_submodule(name)
        original = linear.weight.detach().clone()
        linear.weight.copy_(weight.dequantize())
        out[name] = F.kl_div(_log_probs(model, windows), base, log_target=True, reduction="batchmean").item()
        linear.weight.copy_(original)
    return out


def layer_bytes(linear: nn.Linear, bits: int | None, group_size: int, float_bytes: int) -> int:
    """Bytes a linear's weight takes in a checkpoint: float, int8 (+ bf16 row scales) or int4 (two
    codes a byte + bf16 scale and zero per group)."""
    n, k = linear.out_features, linear.in_features
    if bits is None:
        return n * k * float_bytes
    if bits == 8:
        return n * k + 2 * n
    return n * k // 2 + 4 * n * (k // group_size)


def choose(
    model: nn.Module,
    targets: dict[str, int],
    sensitivity: dict[str, float],
    config: QuantizeConfig,
    float_bytes: int,
    rounded: dict[str, QuantizedWeight],
) -> dict[str, str]:
    """Layer name → why it stays in float: the most sensitive per extra byte first, within the budget
    (`rounded`: every target's weight as the checkpoint would hold it, for the all-quantized size)."""
    from lmforge.quant.report import checkpoint_bytes

    trial = copy.deepcopy(model)
    # every target rounded: the smallest this scheme makes the model (static activation scales add
    # one number a layer, not measured here)
    sizing = dataclasses.replace(config, scheme="w8a8-dynamic") if config.scheme == "w8a8-static" else config
    quantize_model(trial, sizing, {n: rounded[n] for n in targets})
    floor = checkpoint_bytes(trial)
    budget = config.budget_mb * 2**20
    if floor > budget:
        raise LMForgeError(
            f"--budget-mb {config.budget_mb:g} is below the size with every layer quantized "
            f"({floor / 2**20:.1f} MB); raise the budget or use fewer bits"
        )

    def extra(name: str) -> int:
        linear, bits = model.get_submodule(name), targets[name]
        return layer_bytes(linear, None, 0, float_bytes) - layer_bytes(linear, bits, config.group_size, 0)

    kept, size = {}, floor
    for name in sorted(sensitivity, key=lambda n: sensitivity[n] / extra(n), reverse=True):
        if size + extra(name) > budget:
            continue
        size += extra(name)
        kept[name] = f"--auto-keep: KL {sensitivity[name]:.2e} nats/token when rounded alone"
    return kept
