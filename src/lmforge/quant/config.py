"""`QuantizeConfig`: every option of `lmforge.quantize` / `lmforge quantize`, each declared once."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from lmforge.errors import LMForgeError
from lmforge.options import check_types, option
from lmforge.quant.formats import GROUP_SIZES

Scheme = Literal["bf16", "fp16", "int8", "int4", "w8a8-dynamic", "w8a8-static"]
SCHEMES: tuple[str, ...] = get_args(Scheme)
Method = Literal["rtn", "gptq", "awq", "smoothquant", "llm-int8", "hqq"]
CALIBRATED = ("gptq", "awq", "smoothquant")  # methods that read calibration text
RESCALING = ("awq", "smoothquant")  # methods that fold scales into the float weights before rounding them


@dataclass
class QuantizeConfig:
    """How to quantize: the scheme (storage format), the method (how codes are chosen), what stays in
    higher precision, the calibration data (GPTQ) and the quality card."""

    scheme: Scheme = option(
        "int8",
        "bf16 | fp16 (half-precision weights), int8 (per channel), int4 (groups), "
        "w8a8-dynamic (int8 weights and per-token int8 activations), w8a8-static (activation scales "
        "calibrated once per layer)",
    )
    method: Method = option(
        "rtn",
        "rtn (round to nearest), gptq (Hessian-aware), awq (activation-aware scales and clipping, "
        "int8/int4), smoothquant (w8a8-dynamic: migrate activation "
        "outliers into the weights), llm-int8 (int8 / w8a8-dynamic: outlier input columns in float), "
        "hqq (int4 asymmetric: zero-points by half-quadratic lp optimisation, no calibration data)",
    )
    group_size: int = option(64, "int4: input columns per scale/zero group (32, 64, 128 or 256)")
    symmetric: bool = option(False, "int4: scale only (zero = 0) instead of scale + zero per group")
    scales: Literal["search", "minmax"] = option(
        "search",
        "int4 with method rtn: each group's scale (and zero) searched for the lowest squared error, "
        "weighted by each column's input second moment as estimated from the weights (about 40 s for "
        "SmolLM2-135M on 2 cores), or taken from the group's min and max (absmax if symmetric)",
    )
    keep_indivisible: bool = option(
        False,
        "int4: layers whose input width the group size does not divide stay as they are (else an error)",
    )
    keep: list[str] = option(default_factory=list, help="globs of linear layers to leave unquantized")
    auto_keep: bool = option(
        False,
        "leave the layers most sensitive to rounding (KL of the next-token distributions on the "
        "calibration text, per extra MB) "
        "in float while the checkpoint fits --budget-mb",
    )
    budget_mb: float | None = option(None, "--auto-keep: the checkpoint's size limit in MB")
    lm_head: Literal["int8", "float"] = option(
        "int8", "int8/int4 schemes: the LM head (and a tied embedding) as int8 per row, or left in float"
    )
    compute_dtype: Literal["auto", "bfloat16", "float32"] = option(
        "auto",
        "int8/int4: dtype of activations, norms and biases (auto: bfloat16 where its matmul runs natively and faster)",
    )
    act_clip: Literal["minmax", "percentile"] = option(
        "minmax",
        "w8a8-static: activation range from the largest |x| seen in calibration, or a percentile of |x|",
    )
    act_percentile: float = option(99.99, "w8a8-static with --act-clip percentile: the percentile of |x|")
    alpha: float = option(0.5, "smoothquant: migration strength, s = max|x|^alpha / max|w|^(1-alpha)")
    threshold: float = option(
        6.0, "llm-int8: input columns with any |x| >= threshold (per batch) stay in floating point"
    )
    calibration: str = option(
        "shakespeare",
        "gptq, awq, smoothquant, w8a8-static: calibration text (shakespeare, held-out play excluded, or a .txt file)",
    )
    calibration_samples: int = option(64, "gptq, awq, smoothquant, w8a8-static: calibration sequences")
    calibration_length: int = option(256, "gptq, awq, smoothquant: tokens per calibration sequence")
    damping: float = option(0.01, "gptq: fraction of the mean Hessian diagonal added to it")
    act_order: bool = option(True, "gptq: quantize the columns with the largest Hessian diagonal first")
    report: bool = option(
        True, "measure the quality card (perplexity, KL, SQNR, size, speed) before and after"
    )
    report_chars: int = option(
        8000, "characters of each held-out text the card scores (The Tempest, the Wikipedia excerpt)"
    )
    aot: bool = option(
        True,
        "with --out: compile the checkpoint's one-token decode step ahead of time for this machine "
        "(about 1.5 min for SmolLM2 on 2 cores), so that lmforge.load(OUT) decodes through it by default",
    )
    seed: int = option(0, "seed for choosing calibration windows")

    def __post_init__(self) -> None:
        check_types(self, "quantize options")
        if self.scheme == "int4" and self.group_size not in GROUP_SIZES:
            raise LMForgeError(f"group size {self.group_size} is not supported; use one of {GROUP_SIZES}")
        if self.calibration_samples <= 0 or self.calibration_length < 2:
            raise LMForgeError("calibration_samples must be positive and calibration_length at least 2")
        if not 0 <= self.damping < 1:
            raise LMForgeError(f"damping must be in [0, 1), got {self.damping}")
        if self.method == "gptq" and self.scheme not in ("int8", "int4", "w8a8-dynamic", "w8a8-static"):
            raise LMForgeError(f"method gptq chooses integer codes; scheme {self.scheme} has none")
        if self.method == "awq" and self.scheme not in ("int8", "int4"):
            raise LMForgeError(f"method awq is for weight-only int8 / int4, not scheme {self.scheme}")
        if self.method == "smoothquant" and not self.scheme.startswith("w8a8"):
            raise LMForgeError(
                f"method smoothquant quantizes activations: use scheme w8a8-dynamic or w8a8-static, "
                f"not {self.scheme}"
            )
        if self.method == "llm-int8" and self.scheme not in ("int8", "w8a8-dynamic"):
            raise LMForgeError(f"method llm-int8 is an int8 method: use scheme int8, not {self.scheme}")
        if self.method == "hqq" and (self.scheme != "int4" or self.symmetric):
            raise LMForgeError(
                "method hqq optimises int4 zero-points: use scheme int4 without --symmetric, "
                f"not {self.scheme}{' --symmetric' if self.symmetric else ''}"
            )
        if self.auto_keep != (self.budget_mb is not None):
            raise LMForgeError("--auto-keep and --budget-mb go together: give both or neither")
        if self.auto_keep and not self.bits:
            raise LMForgeError(
                f"--auto-keep chooses layers to leave unquantized; scheme {self.scheme} has none"
            )
        if not 50 <= self.act_percentile <= 100:
            raise LMForgeError(f"act_percentile must be in [50, 100], got {self.act_percentile}")
        if not 0 <= self.alpha <= 1:
            raise LMForgeError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.threshold < 0:
            raise LMForgeError(f"threshold must be at least 0, got {self.threshold}")

    @property
    def bits(self) -> int | None:
        return {"int8": 8, "int4": 4, "w8a8-dynamic": 8, "w8a8-static": 8}.get(self.scheme)

    @property
    def activations(self) -> str | None:
        """How linear layers in the blocks take their inputs: None (float), "w8a8", "w8a8-static" or
        "llm-int8"."""
        if self.method == "llm-int8":
            return "llm-int8"
        return {"w8a8-dynamic": "w8a8", "w8a8-static": "w8a8-static"}.get(self.scheme)

    @property
    def search_scales(self) -> bool:
        """Whether RTN's int4 groups get searched parameters (`formats.int4_search`)."""
        return self.scheme == "int4" and self.method == "rtn" and self.scales == "search"

    @property
    def calibrated(self) -> bool:
        """Whether quantizing reads calibration text (the method, or static activation scales)."""
        return self.method in CALIBRATED or self.scheme == "w8a8-static" or self.auto_keep

    def record(self) -> dict[str, Any]:
        """What a checkpoint's config.json keeps (the `lmforge.quantization` block)."""
        keys = ("scheme", "method", "lm_head", "keep")  # kept layers (--auto-keep's too) are in "kept"
        out = {k: v for k, v in asdict(self).items() if k in keys}
        if self.scheme == "int4":
            out.update(group_size=self.group_size, symmetric=self.symmetric)
        if self.search_scales:
            out.update(scales="search")
        if self.method == "smoothquant":
            out.update(
                alpha=self.alpha, calibration=self.calibration, calibration_samples=self.calibration_samples
            )
        if self.method == "llm-int8":
            out.update(threshold=self.threshold)
        if self.scheme == "w8a8-static":
            out.update(
                act_clip=self.act_clip,
                calibration=self.calibration,
                calibration_samples=self.calibration_samples,
            )
            if self.act_clip == "percentile":
                out.update(act_percentile=self.act_percentile)
        if self.method == "awq":
            out.update(calibration=self.calibration, calibration_samples=self.calibration_samples)
        if self.method == "gptq":
            out.update(
                calibration=self.calibration,
                calibration_samples=self.calibration_samples,
                damping=self.damping,
                act_order=self.act_order,
            )
        return out
