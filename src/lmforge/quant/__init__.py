"""Quantization: bf16/fp16 weights, int8 (per channel) and int4 (group-wise) weight-only linears on
torch's CPU kernels, chosen by round-to-nearest or GPTQ, with a quality card.

config.py (QuantizeConfig), formats.py (what a code means, RTN), kernels.py (torch's CPU kernels, what
is fast here), modules.py (Int8Linear, Int4Linear, Int8Embedding), gptq.py, calibrate.py, convert.py
(which layer gets what, through `lmforge.model.swap`), report.py (the card), api.py (`quantize`).
"""

from lmforge.quant.api import QuantizeResult, quantize
from lmforge.quant.config import SCHEMES, QuantizeConfig

__all__ = ["SCHEMES", "QuantizeConfig", "QuantizeResult", "quantize"]
