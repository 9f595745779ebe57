"""Quantization: bf16/fp16 weights, int8 (per channel) and int4 (group-wise) weight-only linears on
torch's CPU kernels, w8a8-dynamic (per-token int8 activations) and w8a8-static (calibrated activation
scales), chosen by round-to-nearest, GPTQ, AWQ, SmoothQuant, LLM.int8 or HQQ; mixed precision by
sensitivity under a size budget; a quality card; GGUF export.

config.py (QuantizeConfig), formats.py (what a code means, RTN), kernels.py (torch's CPU kernels, what
is fast here), modules.py (Int8Linear, Int4Linear, Int8Embedding), w8a8.py (W8A8Linear,
W8A8StaticLinear, LLMInt8Linear), gptq.py, awq.py, smoothquant.py, hqq.py, calibrate.py, sensitivity.py, convert.py (which layer gets what, through `lmforge.model.swap`),
report.py (the card), api.py (`quantize`), gguf_export.py (`lmforge convert --to gguf`).
"""

from lmforge.quant.api import QuantizeResult, quantize
from lmforge.quant.config import SCHEMES, QuantizeConfig

__all__ = ["SCHEMES", "QuantizeConfig", "QuantizeResult", "quantize"]
