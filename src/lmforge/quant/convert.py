"""Turn a float model into a quantized one in place: which layers, in which format, through one swap.

The rules, by layer kind:
- linear layers in the blocks (attention qkv and output, MLP): the scheme's format; `keep` globs,
  and (with `keep_indivisible`) int4 layers whose input width the group size does not divide, stay
  in `compute_dtype`;
- LM head: int8 per output channel in both integer schemes (it is the layer whose error reaches the
  logits unmixed; llama.cpp likewise keeps its output layer at 6 bits or more), or left in float with
  `lm_head="float"`;
- token embedding: tied to an int8 head, it reads the head's int8 rows (one copy); otherwise it stays in
  float, like positional embeddings, norms and biases (all small, and norms are sensitive).
`model.quantization` records what was done; checkpoints keep it in config.json (`lmforge.quantization`)
and `prepare_for_load` rebuilds the same modules, empty, for the weights to be loaded into.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lmforge.errors import LMForgeError
from lmforge.model.swap import linear_layers, matches, swap_modules
from lmforge.quant import kernels
from lmforge.quant.config import QuantizeConfig
from lmforge.quant.formats import QuantizedWeight, check_group_size, rtn
from lmforge.quant.modules import BF16Linear, Int4Linear, Int8Embedding, Int8Linear, is_quantized
from lmforge.quant.moments import input_moments
from lmforge.quant.w8a8 import LLMInt8Linear, W8A8Linear, W8A8StaticLinear

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def compute_dtype(config: QuantizeConfig) -> torch.dtype:
    if config.scheme in ("bf16", "fp16"):
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[config.scheme]
    if config.compute_dtype == "auto":
        return kernels.matmul_dtype()
    return DTYPES[config.compute_dtype]


def plan(model: nn.Module, config: QuantizeConfig) -> tuple[dict[str, int], dict[str, str]]:
    """(layer name → bits, layer name → why it stays in float) for an integer scheme."""
    targets: dict[str, int] = {}
    kept: dict[str, str] = {}
    matched: set[str] = set()
    for name, linear in linear_layers(model).items():
        hit = [g for g in config.keep if matches(name, g)]
        matched.update(hit)
        if hit:
            kept[name] = f"--keep {hit[0]}"
        elif config.bits == 4 and linear.in_features % config.group_size:
            if not config.keep_indivisible:
                check_group_size(config.group_size, linear.in_features, name)
            kept[name] = (
                f"group size {config.group_size} does not divide its input width {linear.in_features}"
            )
        else:
            targets[name] = config.bits
    if set(config.keep) - matched:
        raise LMForgeError(f"--keep {sorted(set(config.keep) - matched)} match no linear layer")
    if getattr(model, "lm_head", None) is not None:
        if config.lm_head == "int8":
            targets["lm_head"] = 8
        else:
            kept["lm_head"] = "--lm-head float"
    return targets, kept


def rtn_weights(
    model: nn.Module, targets: dict[str, int], config: QuantizeConfig
) -> dict[str, QuantizedWeight]:
    group, search = config.group_size, config.search_scales
    moments = input_moments(model) if search else {}
    return {
        name: rtn(model.get_submodule(name).weight, bits, group, config.symmetric, search, moments.get(name))
        for name, bits in targets.items()
    }


def quantize_model(
    model: nn.Module,
    config: QuantizeConfig,
    weights: dict[str, QuantizedWeight] | None = None,
    kept: dict[str, str] | None = None,
    input_scales: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Quantize `model` in place (`weights` from a method such as GPTQ, else RTN; `input_scales` the
    calibrated activation scales of w8a8-static); returns its record."""
    if is_quantized(model) or getattr(model, "quantization", None):
        raise LMForgeError(
            f"this model is already quantized ({describe(model.quantization)}); quantize the original"
        )
    dtype = compute_dtype(config)
    device = next(model.parameters()).device
    if config.scheme in ("bf16", "fp16"):
        model.to(dtype)
        model.init_buffers(device)  # RoPE frequencies and position tables stay fp32, as a load makes them
        model.quantization = {**config.record(), "compute_dtype": str(dtype).removeprefix("torch.")}
        if config.scheme == "bf16":
            bf16_linears(model)
        return model.quantization
    if weights is None:
        targets, kept = plan(model, config)
        weights = rtn_weights(model, targets, config)
    model.to(dtype)  # what stays in float: embeddings, norms, biases, kept layers
    model.init_buffers(device)
    layers = {n: _kind(n, w.bits, config.activations) for n, w in weights.items()}
    model.quantization = {
        **config.record(),
        "compute_dtype": str(dtype).removeprefix("torch."),
        "layers": layers,
        "kept": kept or {},
    }
    if config.scheme == "w8a8-static" and input_scales is None:
        raise LMForgeError(
            "w8a8-static needs calibrated activation scales: quantize through lmforge.quantize"
        )
    _swap(model, model.quantization, dtype, lambda n, m: weights[n], (input_scales or {}).get)
    return model.quantization


def bf16_linears(model: nn.Module) -> None:
    """The bf16 scheme's linears (the LM head too) as `BF16Linear`s, which take decode rows through
    lmforge's bf16 kernel where it runs here; same parameters, so ties and checkpoints are unchanged."""
    swap_modules(model, list(linear_layers(model, lm_head=True)), lambda name, linear: BF16Linear.of(linear))


def _kind(name: str, bits: int, activations: str | None) -> int | str:
    """A layer's entry in the record: 8 or 4 (weight-only), or "w8a8" / "w8a8-static" / "llm-int8" (int8 activations
    too; the LM head stays weight-only int8: its error reaches the logits unmixed)."""
    return bits if activations is None or name == "lm_head" else activations


def _swap(
    model: nn.Module,
    record: dict[str, Any],
    dtype: torch.dtype,
    weight_of: Callable[[str, nn.Module], QuantizedWeight],
    input_scale_of: Callable[[str], float | None] = lambda name: None,
) -> None:
    layers = record.get("layers", {})

    def make(name: str, linear: nn.Module) -> nn.Module:
        kind = layers[name]
        if kind == "w8a8-static":  # a load fills the scale from the checkpoint
            scale = input_scale_of(name)
            return W8A8StaticLinear(
                weight_of(name, linear), linear.bias, dtype, 1.0 if scale is None else scale
            )
        if kind == "llm-int8":
            return LLMInt8Linear(weight_of(name, linear), linear.bias, dtype, record.get("threshold", 6.0))
        cls = {8: Int8Linear, 4: Int4Linear, "w8a8": W8A8Linear}[kind]
        return cls(weight_of(name, linear), linear.bias, dtype)

    swap_modules(model, list(layers), make)
    tie(model, dtype)


def tie(model: nn.Module, dtype: torch.dtype | None = None) -> None:
    """A tied embedding reads the int8 head's rows (after a swap or a load); float heads tie as usual."""
    head = getattr(model, "lm_head", None)
    if not (model.config.tie_embeddings and isinstance(head, Int8Linear)):
        model.tie_weights()
        return
    if isinstance(model.tok_emb, Int8Embedding):
        model.tok_emb.tie(head)
    else:
        dtype = dtype or model.tok_emb.weight.dtype
        model.tok_emb = Int8Embedding(None, dtype, tied_to=head)


def tied_names(model: nn.Module) -> list[str]:
    """State-dict entries a checkpoint leaves out because another entry holds the same tensor."""
    if isinstance(getattr(model, "tok_emb", None), Int8Embedding) and model.config.tie_embeddings:
        return ["tok_emb.qweight", "tok_emb.scale"]
    return []


def prepare_for_load(model: nn.Module, record: dict[str, Any]) -> torch.dtype:
    """Give a model built on the meta device the quantized modules `record` describes (empty, for
    `load_state_dict(assign=True)`); returns the dtype its float tensors were saved in."""
    dtype = DTYPES.get(record.get("compute_dtype", "float32"))
    if dtype is None:
        raise LMForgeError(f"unknown compute dtype in the quantization record: {record.get('compute_dtype')}")
    if record.get("scheme") == "bf16":
        bf16_linears(model)
    layers = record.get("layers", {})
    group = record.get("group_size")

    def empty(name: str, linear: nn.Module) -> QuantizedWeight:
        n, k = linear.out_features, linear.in_features
        bits = layers[name]
        if bits != 4:
            return QuantizedWeight(8, torch.empty(n, k, dtype=torch.int8), torch.empty(n))
        shape = (n, k // group)
        return QuantizedWeight(
            4, torch.empty(n, k, dtype=torch.uint8), torch.empty(shape), torch.empty(shape), group
        )

    _swap(model, record, dtype, empty)
    model.quantization = record
    return dtype


def describe(record: dict[str, Any] | None) -> str:
    if not record:
        return "float"
    text = f"{record['scheme']} {record.get('method', 'rtn')}"
    if record.get("method") == "smoothquant":
        text += f" alpha {record.get('alpha')}"
    if record.get("method") == "llm-int8":
        text += f" threshold {record.get('threshold')}"
    if record.get("act_clip"):
        text += f" activations {record['act_clip']}"
        if record["act_clip"] == "percentile":
            text += f" {record.get('act_percentile')}"
    if record.get("group_size") and record["scheme"] == "int4":
        text += f" g{record['group_size']}" + (" symmetric" if record.get("symmetric") else "")
    if record.get("scales") == "search":
        text += " (searched scales)"
    return text
