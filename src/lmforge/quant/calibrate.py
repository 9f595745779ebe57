"""Calibration: token windows from text the evaluation does not score, and GPTQ run block by block.

`calibration_windows` takes `samples` windows of `length` tokens: from the Shakespeare plays other than
the held-out Tempest (`shakespeare`), at seeded random places, or from a text file cut into consecutive
windows. `gptq_weights` runs the windows through the model one block at a time: the Hessian of every
targeted linear in a block is gathered from that block's inputs, its weights quantized with GPTQ, and
the block run again with the quantized weights to give the next block its inputs (so each block sees
the error of the ones before it, as it will at inference).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lmforge.errors import LMForgeError
from lmforge.quant.config import QuantizeConfig
from lmforge.quant.formats import QuantizedWeight, rtn
from lmforge.quant.gptq import Hessian, gptq

CHUNK = 8  # windows per forward pass


def calibration_windows(tokenizer, config: QuantizeConfig) -> torch.Tensor:
    """(samples, length) token ids."""
    if tokenizer is None:
        what = config.method if config.method != "rtn" else config.scheme
        raise LMForgeError(f"{what} needs calibration text, so a model with a tokenizer")
    n, length = config.calibration_samples, config.calibration_length
    if config.calibration == "shakespeare":
        from lmforge.assets import shakespeare_files

        rng = random.Random(config.seed)
        texts = [p.read_text(encoding="utf-8") for p in shakespeare_files(include_held_out=False)]
        windows = []
        for _ in range(n):
            text = rng.choice(texts)
            start = rng.randrange(0, max(1, len(text) - length * 8))
            ids = tokenizer.encode(text[start : start + length * 8], add_special_tokens=False)
            windows.append(ids[:length])
        if any(len(w) < length for w in windows):
            raise LMForgeError("calibration text too small for the requested window length")
        return torch.tensor(windows)
    path = Path(config.calibration).expanduser()
    if not path.is_file():
        raise LMForgeError(f"calibration data not found: {path} (use 'shakespeare' or a .txt file)")
    ids = tokenizer.encode(path.read_text(encoding="utf-8"), add_special_tokens=False)
    if len(ids) < n * length:
        raise LMForgeError(
            f"calibration data too small: {path} has {len(ids)} tokens, {n} samples of {length} need "
            f"{n * length}; lower --calibration-samples or --calibration-length"
        )
    return torch.tensor(ids[: n * length]).reshape(n, length)


@torch.no_grad()
def observe_inputs(
    model: nn.Module, names: list[str], windows: torch.Tensor, record: Callable[[str, torch.Tensor], None]
) -> None:
    """Run the calibration windows through `model` (CHUNK at a time), calling `record(name, x)` with the
    input `x` of each named module on every pass."""
    handles = [
        model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: record(n, a[0])) for n in names
    ]
    try:
        for chunk in windows.split(CHUNK):
            model(chunk)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def input_scales(
    model: nn.Module, names: list[str], windows: torch.Tensor, clip: str, percentile: float
) -> dict[str, float]:
    """Static int8 scale c / 127 of each named linear's input: c the largest |x| over the calibration
    windows (minmax) or the `percentile` of |x|, taken per chunk of windows and averaged (percentile)."""
    seen: dict[str, list[float]] = {n: [] for n in names}

    def record(name: str, x: torch.Tensor) -> None:
        x = x.detach().float().abs().reshape(-1)
        if clip == "minmax":
            seen[name].append(float(x.max()))
        else:  # kthvalue: exact, and without torch.quantile's 16M-element limit
            k = max(1, min(x.numel(), round(percentile / 100 * x.numel())))
            seen[name].append(float(x.kthvalue(k).values))

    observe_inputs(model, names, windows, record)
    reduce = max if clip == "minmax" else (lambda v: sum(v) / len(v))
    return {n: max(reduce(v), 1e-8) / 127 for n, v in seen.items()}


class _Stop(Exception):
    pass


@torch.no_grad()
def _block_inputs(model: nn.Module, windows: torch.Tensor) -> tuple[list[torch.Tensor], tuple]:
    """The first block's input for each chunk of windows, and its (rope, mask) arguments."""
    inputs: list[torch.Tensor] = []
    extra: list[tuple] = []

    def grab(module, args):
        inputs.append(args[0])
        extra[:] = [args[1:3]]
        raise _Stop

    handle = model.blocks[0].register_forward_pre_hook(grab)
    try:
        for chunk in windows.split(CHUNK):
            with contextlib.suppress(_Stop):  # the hook stops the pass at the first block
                model(chunk)
    finally:
        handle.remove()
    return inputs, extra[0]


@torch.no_grad()
def gptq_weights(
    model: nn.Module, targets: dict[str, int], config: QuantizeConfig, windows: torch.Tensor
) -> dict[str, QuantizedWeight]:
    """GPTQ codes for every target in the blocks, RTN (int8) for the LM head; `model` stays float but
    its targeted weights are replaced by their dequantized values on the way."""
    inputs, (rope, mask) = _block_inputs(model, windows)
    out: dict[str, QuantizedWeight] = {}
    for i, block in enumerate(model.blocks):
        prefix = f"blocks.{i}."
        names = [n for n in targets if n.startswith(prefix)]
        hessians = {n: Hessian(model.get_submodule(n).in_features) for n in names}
        handles = [
            model.get_submodule(n).register_forward_pre_hook(lambda m, a, h=hessians[n]: h.add(a[0]))
            for n in names
        ]
        for x in inputs:
            block(x, rope, mask, None, i)
        for h in handles:
            h.remove()
        for n in names:
            linear = model.get_submodule(n)
            q = gptq(
                linear.weight,
                hessians[n].value(),
                targets[n],
                config.group_size,
                config.symmetric,
                config.damping,
                config.act_order,
            )
            out[n] = q
            linear.weight.copy_(q.dequantize(linear.weight.dtype))
        inputs = [block(x, rope, mask, None, i) for x in inputs]
    for n, bits in targets.items():
        if n not in out:  # the LM head: its inputs are the final norm's; RTN is what it gets
            out[n] = rtn(model.get_submodule(n).weight, bits, config.group_size, config.symmetric)
    return out
