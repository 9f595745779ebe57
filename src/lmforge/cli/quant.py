"""`lmforge quantize`: a thin layer over `lmforge.quantize`; its options are `QuantizeConfig`'s fields."""

from __future__ import annotations

from typing import Any

import lmforge
from lmforge.options import with_options


@with_options(lmforge.QuantizeConfig)
def quantize(model: str, *, out: str, **options: Any) -> lmforge.QuantizeResult:
    """Quantize a model's weights (bf16, fp16, int8 per channel, int4 group-wise, int8 activations; RTN,
    GPTQ, AWQ, SmoothQuant, LLM.int8 or HQQ) and write the quantized checkpoint with its quality card
    (OUT/quant_report.json and .md).

    Args:
        model: asset name (smollm2), checkpoint directory or .gguf file.
        out: output checkpoint directory (`lmforge.load(OUT)` reads it back).
    """
    result = lmforge.quantize(model, out=out, **options)
    print(result.markdown)
    print(f"wrote {result.out} (lmforge generate --model {result.out})")
    return result


COMMANDS = {"quantize": quantize}
