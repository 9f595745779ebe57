"""GGUF files (llama.cpp's format): metadata, model config and dequantized weights.

Every tensor type the `gguf` package can dequantize is supported; weights become float tensors in
the requested dtype one at a time, so peak memory stays near one copy of the model. llama.cpp's
converter permutes the rows of q/k projections for its interleaved RoPE; we undo that so the weights
fit the rotate-half layout of our attention (as Hugging Face's GGUF loader does).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError

_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


@dataclass
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # numpy order (rows first), as Hugging Face expects
    qtype: int
    data: np.ndarray  # raw bytes (uint8) or float view, memory-mapped


class GGUFFile:
    """A minimal GGUF (v2/v3, little-endian) parser: metadata and memory-mapped tensor data.

    The `gguf` package's reader builds a numpy view per metadata item and takes seconds on a 49k-token
    vocabulary; reading the header with `struct` takes a fraction of that. Dequantization still uses
    the `gguf` package.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.buf = np.memmap(self.path, dtype=np.uint8, mode="r")
            self._parse()
        except LMForgeError:
            raise
        except (struct.error, IndexError, ValueError, UnicodeDecodeError, OSError) as exc:
            raise LMForgeError(
                f"{self.path}: not a readable GGUF file (truncated or corrupt: {type(exc).__name__}: {exc})"
            ) from None

    def _parse(self) -> None:
        raw = memoryview(self.buf)
        if bytes(raw[:4]) != b"GGUF":
            raise LMForgeError(f"{self.path}: not a readable GGUF file (bad magic bytes)")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", raw, 4)
        if version not in (2, 3):
            raise LMForgeError(f"{self.path}: unsupported GGUF version {version} (2 and 3 are supported)")
        self.pos = 24
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self._string(raw)
            (vtype,) = self._unpack(raw, "<I")
            self.metadata[key] = self._value(raw, vtype)
        infos = []
        for _ in range(n_tensors):
            name = self._string(raw)
            (n_dims,) = self._unpack(raw, "<I")
            dims = self._unpack(raw, f"<{n_dims}Q")
            qtype, offset = self._unpack(raw, "<IQ")
            infos.append((name, dims, qtype, offset))
        align = self.metadata.get("general.alignment", 32)
        start = -(-self.pos // align) * align
        self.tensors: dict[str, GGUFTensor] = {}
        for name, dims, qtype, offset in infos:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
            shape = tuple(reversed(dims))
            row_bytes = dims[0] // block * type_size
            nbytes = row_bytes * int(np.prod(dims[1:], dtype=np.int64))
            begin = start + offset
            if begin + nbytes > len(self.buf):
                raise LMForgeError(f"{self.path}: truncated GGUF file (tensor '{name}' runs past the end)")
            data = self.buf[begin : begin + nbytes].reshape(*shape[:-1], row_bytes)
            self.tensors[name] = GGUFTensor(name, shape, qtype, data)

    def _unpack(self, raw: memoryview, fmt: str) -> tuple:
        values = struct.unpack_from(fmt, raw, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def _string(self, raw: memoryview) -> str:
        (n,) = struct.unpack_from("<Q", raw, self.pos)
        self.pos += 8 + n
        if self.pos > len(raw):
            raise IndexError("string runs past the end of the file")
        return bytes(raw[self.pos - n : self.pos]).decode("utf-8")

    def _value(self, raw: memoryview, vtype: int) -> Any:
        if vtype == _STRING:
            return self._string(raw)
        if vtype == _ARRAY:
            item_type, count = self._unpack(raw, "<IQ")
            if item_type == _STRING:
                return [self._string(raw) for _ in range(count)]
            if item_type == _ARRAY:
                return [self._value(raw, _ARRAY) for _ in range(count)]
            fmt = _SCALARS[item_type]
            values = list(struct.unpack_from(f"<{count}{fmt[1]}", raw, self.pos))
            self.pos += struct.calcsize(fmt) * count
            return values
        if vtype not in _SCALARS:
            raise ValueError(f"unknown GGUF value type {vtype}")
        return self._unpack(raw, _SCALARS[vtype])[0]

    def dequantize(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        t = self.tensors[name]
        qtype = GGMLQuantizationType(t.qtype)
        if qtype == GGMLQuantizationType.F32:
            array = t.data.view(np.float32)
        elif qtype == GGMLQuantizationType.F16:
            array = t.data.view(np.float16)
        else:
            try:
                array = dequantize(t.data, qtype)
            except NotImplementedError:
                raise LMForgeError(
                    f"{self.path}: tensor '{name}' has type {qtype.name}, which the gguf package cannot dequantize"
                ) from None
        return torch.from_numpy(np.array(array, dtype=np.float32, copy=True)).to(dtype)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """All key/value metadata of a GGUF file as plain Python values."""
    return GGUFFile(path).metadata


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
    gguf_file = GGUFFile(path)
    meta = gguf_file.metadata
    config = config_from_metadata(meta, set(gguf_file.tensors), path)
    _, permuted = ARCHITECTURES[meta["general.architecture"]]
    names = {}
    for name in gguf_file.tensors:
        target = hf_name(name)
        if target is None:
            if name.startswith("rope_freqs"):
                continue
            raise LMForgeError(f"{path}: unexpected GGUF tensor '{name}'")
        names[target] = name

    def get(target: str) -> torch.Tensor:
        w = gguf_file.dequantize(names[target], dtype)
        if permuted and target.endswith(("q_proj.weight", "q_proj.bias")):
            w = unpermute(w, config.n_head)
        elif permuted and target.endswith(("k_proj.weight", "k_proj.bias")):
            w = unpermute(w, config.n_kv_head)
        return w

    return config, get, list(names), meta
