"""Reading a model from disk: an asset name, a checkpoint directory or a GGUF file becomes the pieces of
an `LM` (model, tokenizer, generation defaults, embedding recipe).

Nothing is ever downloaded: a hub name gives an error that names the local-path form.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmforge.assets import ASSETS, asset_path
from lmforge.errors import LMForgeError
from lmforge.io import checkpoint
from lmforge.io.sentence_transformers import EmbeddingSpec
from lmforge.model import Transformer

if TYPE_CHECKING:
    from lmforge.tokenizer import Tokenizer

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

# generation_config.json field -> the GGUF tokenizer key that holds it
GGUF_GENERATION_KEYS = {
    "bos_token_id": "tokenizer.ggml.bos_token_id",
    "eos_token_id": "tokenizer.ggml.eos_token_id",
    "pad_token_id": "tokenizer.ggml.padding_token_id",
}


@dataclass
class LoadedModel:
    """What a model source holds; `lmforge.load` wraps it in an `LM`."""

    model: Transformer  # on its device, in eval mode
    tokenizer: Tokenizer | None = None
    generation_config: dict[str, Any] = field(default_factory=dict)
    embedding: EmbeddingSpec | None = None


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (the exact default; `"auto"` picks bf16 where this CPU runs it faster); bf16 on a GPU
    that supports it."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """A dtype given by name (`bf16`, `float32`, ...), as a torch dtype, or None for the device's default.
    `"auto"`: bf16 where the hardware supports it natively and the cached matmul probe finds it faster
    (`lmforge.hardware.choose_precision`; prefill-heavy work such as scoring and reranking gains most),
    else the device's default."""
    if dtype is None:
        return default_dtype(device)
    if dtype == "auto":
        from lmforge.hardware import choose_precision

        return (
            torch.bfloat16 if choose_precision("auto", device).precision == "bf16" else default_dtype(device)
        )
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise LMForgeError(f"unknown dtype '{dtype}'; use auto or one of {', '.join(DTYPES)}")
        return DTYPES[dtype]
    return dtype


def resolve_source(source: str | Path) -> Path:
    """Map an asset name or a path to a local path; explain hub names instead of downloading."""
    if isinstance(source, str) and source in ASSETS:
        return asset_path(source)
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    looks_like_hub = re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", text) is not None and path.suffix not in (
        ".gguf",
        ".safetensors",
        ".bin",
        ".json",
    )
    if looks_like_hub:
        raise LMForgeError(
            f"'{text}' is not a local path, and lmforge never downloads models. Fetch the checkpoint "
            f"elsewhere and pass its directory, e.g. lmforge.load('/path/to/{text.split('/')[-1]}'); "
            f"shipped assets: {', '.join(n for n in ASSETS if n != 'shakespeare')}"
        )
    raise LMForgeError(f"no such file or directory: {text}")


def gguf_generation_config(meta: dict[str, Any]) -> dict[str, Any]:
    """The generation defaults a GGUF file states (its BOS/EOS/pad token ids)."""
    return {ours: meta[key] for ours, key in GGUF_GENERATION_KEYS.items() if key in meta}


def read_model(
    source: str | Path,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
) -> LoadedModel:
    """Read a model from an asset name, a checkpoint directory or a `.gguf` file, with its weights in
    `dtype` on `device` (defaults: `default_device()` and `default_dtype(device)`)."""
    device = torch.device(device) if device is not None else default_device()
    requested, dtype = dtype, resolve_dtype(dtype, device)
    path = resolve_source(source)
    from lmforge.tokenizer import Tokenizer  # deferred: `import lmforge` need not load `tokenizers`

    embedding = None
    if path.is_file():
        if path.suffix != ".gguf":
            raise LMForgeError(
                f"{path}: unknown model file type; expected a .gguf file or a checkpoint directory"
            )
        from lmforge.io.gguf import read_gguf  # deferred: the `gguf` package takes 0.3 s to import
        from lmforge.io.hf import state_from_hf

        config, get, names, meta = read_gguf(path)
        state = state_from_hf(config, names, get, str(path))
        try:
            tokenizer = Tokenizer.from_gguf_metadata(meta)
        except LMForgeError as exc:
            raise LMForgeError(f"{path}: {exc}") from None
        generation_config = gguf_generation_config(meta)
    else:
        config, naming = checkpoint.read_config(path)
        state = checkpoint.read_state(path, config, naming)
        has_tokenizer = (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file()
        tokenizer = Tokenizer.from_dir(path) if has_tokenizer else None
        gen_path = path / "generation_config.json"
        generation_config = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
        embedding = EmbeddingSpec.from_dir(path)
    quantization = None if path.is_file() else checkpoint.read_quantization(path)
    with torch.device("meta"):
        model = Transformer(config)
        if quantization:  # the same quantized modules, empty; float tensors load in their saved dtype
            from lmforge.quant.convert import prepare_for_load

            saved = prepare_for_load(model, quantization)
            dtype = saved if requested is None else dtype
    checkpoint.load_into(model, state, str(path), dtype, device)
    model.eval()
    return LoadedModel(model, tokenizer, generation_config, embedding)
