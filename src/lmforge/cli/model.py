"""Model commands: `lmforge info` and `lmforge convert`."""

from __future__ import annotations

import json
from typing import Literal

import lmforge


def info(model: str, json_output: bool = False) -> dict:
    """Show a model's family, parameters, dtype, memory and context length.

    Args:
        model: asset name (smollm2, minilm), checkpoint directory or .gguf file.
        json_output: print JSON instead of a table.
    """
    facts = lmforge.load(model, device="cpu").info()
    if json_output:
        print(json.dumps(facts, indent=2))
    else:
        width = max(len(k) for k in facts)
        for key, value in facts.items():
            shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
            print(f"{key:<{width}}  {shown}")
    return facts


def convert(
    src: str,
    dst: str,
    dtype: Literal["float32", "bfloat16", "float16"] = "float32",
    to: Literal["lmforge", "gguf"] = "lmforge",
    type: Literal["q8_0", "q4_0", "q4_1", "f16", "f32"] = "q8_0",
) -> str:
    """Convert a model (GGUF file, HF or lmforge directory) into an lmforge checkpoint directory, or
    (--to gguf) a GGUF file llama.cpp reads.

    Standard families (gpt2, llama, qwen2, mistral, bert) are written so that transformers loads them.

    Args:
        src: asset name, checkpoint directory or .gguf file (--to gguf: an asset name or .gguf file).
        dst: output directory (written atomically; an existing one is replaced), or the .gguf file.
        dtype: weight dtype to store (lmforge checkpoints).
        to: lmforge (a checkpoint directory) or gguf (a GGUF file; its tokenizer from the source's).
        type: --to gguf: the GGUF weight type (Q8_0/Q4_0/Q4_1 made by the gguf package).
    """
    if to == "gguf":
        path = lmforge.export_gguf(src, dst, type)
        print(f"wrote {path} (GGUF {type.upper()}; lmforge.load or llama.cpp read it)")
        return str(path)
    lm = lmforge.load(src, dtype=dtype, device="cpu")
    path = lm.save(dst)
    print(f"wrote {path} ({lm.config.family}, {lm.model.num_parameters():,} parameters, {dtype})")
    return str(path)


COMMANDS = {"info": info, "convert": convert}
