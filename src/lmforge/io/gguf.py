"""GGUF files (llama.cpp's format): metadata, model config and dequantized weights.

Every tensor type the `gguf` package can dequantize is supported; weights become float tensors in
the requested dtype one at a time, so peak memory stays near one copy of the model. llama.cpp's
converter permutes the rows of q/k projections for its interleaved RoPE; we undo that so the weights
fit the rotate-half layout of our attention (as Hugging Face's GGUF loader does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError


def open_reader(path: str | Path):
    from gguf import GGUFReader

    try:
        return GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError/struct.error/... on damaged files
        raise LMForgeError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None


def read_metadata(reader_or_path) -> dict[str, Any]:
    """All key/value metadata as plain Python values (str, int, float, bool, lists)."""
    reader = open_reader(reader_or_path) if isinstance(reader_or_path, (str, Path)) else reader_or_path
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        meta[key] = value.tolist() if isinstance(value, np.ndarray) else value
    return meta


# architecture -> (HF family, q/k rows permuted by llama.cpp's converter)
ARCHITECTURES = {"llama": ("llama", True), "qwen2": ("qwen2", False)}

TENSOR_NAMES = {  # GGUF name -> HF name, per layer where "{i}" appears
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_q.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "blk.{i}.attn_k.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "blk.{i}.attn_v.bias": "model.layers.{i}.self_attn.v_proj.bias",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}


def hf_name(gguf_name: str) -> str | None:
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        key = ".".join(["blk", "{i}", *parts[2:]])
        target = TENSOR_NAMES.get(key)
        return target.replace("{i}", parts[1]) if target else None
    return TENSOR_NAMES.get(gguf_name)


def config_from_metadata(meta: dict[str, Any], tensor_names: set[str], path: str | Path) -> ModelConfig:
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise LMForgeError(
            f"{path}: unsupported GGUF architecture '{arch}'; supported: {', '.join(ARCHITECTURES)}"
        )
    family, _ = ARCHITECTURES[arch]

    def get(key: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise LMForgeError(f"{path}: GGUF metadata lacks '{arch}.{key}'")
        return value

    d, nh = get("embedding_length"), get("attention.head_count")
    vocab = meta.get(f"{arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens", []))
    scaling = None
    if meta.get(f"{arch}.rope.scaling.type") == "linear":
        scaling = {"rope_type": "linear", "factor": meta[f"{arch}.rope.scaling.factor"]}
    return ModelConfig(
        vocab_size=vocab,
        n_layer=get("block_count"),
        n_head=nh,
        n_kv_head=get("attention.head_count_kv", nh),
        d_model=d,
        d_mlp=get("feed_forward_length"),
        head_dim=meta.get(f"{arch}.attention.key_length")
        or meta.get(f"{arch}.rope.dimension_count")
        or d // nh,
        max_seq_len=get("context_length"),
        norm="rmsnorm",
        norm_eps=get("attention.layer_norm_rms_epsilon", 1e-5),
        mlp="swiglu",
        position="rope",
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        qkv_bias="blk.0.attn_q.bias" in tensor_names,
        tie_embeddings="output.weight" not in tensor_names,
        family=family,
    )


def unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation (interleaved pairs -> rotate-half halves)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_gguf(path: str | Path, dtype: torch.dtype = torch.float32):
    """(config, HF-named tensor getter, tensor names, metadata) for a GGUF file."""
    from gguf.quants import dequantize

    reader = open_reader(path)
    meta = read_metadata(reader)
    tensors = {t.name: t for t in reader.tensors}
    config = config_from_metadata(meta, set(tensors), path)
    _, permuted = ARCHITECTURES[meta["general.architecture"]]
    names = {}
    for name in tensors:
        target = hf_name(name)
        if target is None:
            if name.startswith("rope_freqs"):
                continue
            raise LMForgeError(f"{path}: unexpected GGUF tensor '{name}'")
        names[target] = name

    def get(target: str) -> torch.Tensor:
        t = tensors[names[target]]
        try:
            array = dequantize(t.data, t.tensor_type)
        except NotImplementedError:
            raise LMForgeError(
                f"{path}: tensor '{t.name}' has type {t.tensor_type.name}, "
                "which the gguf package cannot dequantize"
            ) from None
        w = torch.from_numpy(np.ascontiguousarray(array)).to(dtype)
        if permuted and target.endswith(("q_proj.weight", "q_proj.bias")):
            w = unpermute(w, config.n_head)
        elif permuted and target.endswith(("k_proj.weight", "k_proj.bias")):
            w = unpermute(w, config.n_kv_head)
        return w

    return config, get, list(names), meta
