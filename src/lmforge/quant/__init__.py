"""Quantization: bf16/fp16 weights, int8 (per channel) and int4 (group-wise) weight-only linears on
torch's CPU kernels, w8a8-dynamic (per-token int8 activations), chosen by round-to-nearest, GPTQ,
SmoothQuant or LLM.int8, with a quality card; GGUF export.

config.py (QuantizeConfig), formats.py (what a code means, RTN), kernels.py (torch's CPU kernels, what
is fast here), modules.py (Int8Linear, Int4Linear, Int8Embedding), w8a8.py (W8A8Linear, LLMInt8Linear),
gptq.py, smoothquant.py, calibrate.py, convert.py (which layer gets what, through `lmforge.model.swap`),
report.py (the card), api.py (`quantize`), gguf_export.py (`lmforge convert --to gguf`).
"""

from lmforge.quant.api import QuantizeResult, quantize
from lmforge.quant.config import SCHEMES, QuantizeConfig

__all__ = ["SCHEMES", "QuantizeConfig", "QuantizeResult", "quantize"]
