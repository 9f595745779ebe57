"""GGUF files (llama.cpp's format): metadata, model config and dequantized weights, for the Llama, Qwen2,
Phi-3 and GPT-2 architectures.

Every tensor type the `gguf` package can dequantize is supported; weights become float tensors in
the requested dtype one at a time, so peak memory stays near one copy of the model. llama.cpp's
converter permutes the rows of q/k projections for its interleaved RoPE; we undo that so the weights
fit the rotate-half layout of our attention (as Hugging Face's GGUF loader does).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError
from lmforge.io.hf import split_sizes
from lmforge.model.position import rope_inv_freq

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


@dataclasses.dataclass
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


@dataclasses.dataclass(frozen=True)
class Arch:
    """How one GGUF architecture maps onto our families (`lmforge.io.hf`)."""

    layout: str  # "llama" (RMSNorm, SwiGLU, RoPE) or "gpt2" (LayerNorm, GELU, learned positions)
    family: str  # the Hugging Face family its weights are named for
    permuted: bool = False  # q/k rows permuted by llama.cpp's converter for its interleaved RoPE
    fused: bool = False  # q/k/v in one attn_qkv tensor and gate+up in one ffn_up (Phi-3)
    sliding_window: bool = False  # honours `{arch}.attention.sliding_window`


ARCHITECTURES = {
    "llama": Arch("llama", "llama", permuted=True),
    "qwen2": Arch("llama", "qwen2"),
    # Phi-3 is Llama's computation with fused projections: its weights load as a Llama (or, with a
    # sliding window, a Mistral) and save as one
    "phi3": Arch("llama", "llama", fused=True, sliding_window=True),
    "gpt2": Arch("gpt2", "gpt2"),
}

LLAMA_TENSORS = {  # GGUF name -> HF name, per layer where "{i}" appears
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
FUSED_TENSORS = {  # Phi-3: a fused GGUF tensor -> the HF tensors it holds, in row order
    "blk.{i}.attn_qkv.weight": [f"model.layers.{{i}}.self_attn.{p}_proj.weight" for p in "qkv"],
    "blk.{i}.ffn_up.weight": ["model.layers.{i}.mlp.gate_proj.weight", "model.layers.{i}.mlp.up_proj.weight"],
}
GPT2_TENSORS = {
    "token_embd.weight": "transformer.wte.weight",
    "position_embd.weight": "transformer.wpe.weight",
    "output_norm.weight": "transformer.ln_f.weight",
    "output_norm.bias": "transformer.ln_f.bias",
    "output.weight": "lm_head.weight",
    **{
        f"blk.{{i}}.{ours}.{p}": f"transformer.h.{{i}}.{theirs}.{p}"
        for ours, theirs in [
            ("attn_norm", "ln_1"),
            ("ffn_norm", "ln_2"),
            ("attn_qkv", "attn.c_attn"),
            ("attn_output", "attn.c_proj"),
            ("ffn_up", "mlp.c_fc"),
            ("ffn_down", "mlp.c_proj"),
        ]
        for p in ("weight", "bias")
    },
}


def _table_key(gguf_name: str) -> tuple[str, str | None]:
    """("blk.{i}.attn_q.weight", "3") for "blk.3.attn_q.weight"; (name, None) outside the blocks."""
    parts = gguf_name.split(".")
    if parts[0] == "blk" and len(parts) > 2:
        return ".".join(["blk", "{i}", *parts[2:]]), parts[1]
    return gguf_name, None


def hf_names(gguf_name: str, arch: Arch) -> list[str]:
    """The HF tensor names a GGUF tensor holds (several for a fused one; none if unknown)."""
    key, block = _table_key(gguf_name)
    if arch.layout == "gpt2":
        targets = [GPT2_TENSORS[key]] if key in GPT2_TENSORS else []
    elif arch.fused and key in FUSED_TENSORS:
        targets = FUSED_TENSORS[key]
    else:
        targets = [LLAMA_TENSORS[key]] if key in LLAMA_TENSORS else []
    return [t.replace("{i}", block) for t in targets] if block is not None else targets


def _get(meta: dict[str, Any], arch: str, path: str | Path) -> Callable[..., Any]:
    def get(key: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise LMForgeError(f"{path}: GGUF metadata lacks '{arch}.{key}'")
        return value

    return get


def config_from_metadata(meta: dict[str, Any], tensor_names: set[str], path: str | Path) -> ModelConfig:
    name = meta.get("general.architecture")
    if name not in ARCHITECTURES:
        raise LMForgeError(
            f"{path}: unsupported GGUF architecture '{name}'; supported: {', '.join(ARCHITECTURES)}"
        )
    arch, get = ARCHITECTURES[name], _get(meta, name, path)
    d, nh = get("embedding_length"), get("attention.head_count")
    vocab = meta.get(f"{name}.vocab_size") or len(meta.get("tokenizer.ggml.tokens", []))
    common = dict(
        vocab_size=vocab,
        n_layer=get("block_count"),
        n_head=nh,
        d_model=d,
        d_mlp=get("feed_forward_length"),
        max_seq_len=get("context_length"),
        tie_embeddings="output.weight" not in tensor_names,
    )
    if arch.layout == "gpt2":
        return ModelConfig(
            **common,
            norm="layernorm",
            norm_eps=get("attention.layer_norm_epsilon", 1e-5),
            mlp="gelu_tanh",
            position="learned",
            qkv_bias=True,
            attn_out_bias=True,
            mlp_bias=True,
            family=arch.family,
        )
    scaling = None
    if meta.get(f"{name}.rope.scaling.type") == "linear":
        scaling = {"rope_type": "linear", "factor": meta[f"{name}.rope.scaling.factor"]}
    if any(t.startswith("rope_factors") for t in tensor_names):
        raise LMForgeError(
            f"{path}: RoPE with per-dimension factors (LongRoPE, as in Phi-3's 128k models) is not supported"
        )
    window = meta.get(f"{name}.attention.sliding_window") if arch.sliding_window else None
    return ModelConfig(
        **common,
        n_kv_head=get("attention.head_count_kv", nh),
        head_dim=meta.get(f"{name}.attention.key_length")
        or meta.get(f"{name}.rope.dimension_count")
        or d // nh,
        norm="rmsnorm",
        norm_eps=get("attention.layer_norm_rms_epsilon", 1e-5),
        mlp="swiglu",
        position="rope",
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        qkv_bias="blk.0.attn_q.bias" in tensor_names,
        sliding_window=window or None,
        family="mistral" if window else arch.family,  # Mistral is Llama with a sliding window
    )


def unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation (interleaved pairs -> rotate-half halves)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# Llama 3's RoPE scaling as Hugging Face's config states it; llama.cpp's converter writes it out as one
# factor per frequency (a `rope_freqs` tensor) and keeps no parameters in the metadata
LLAMA3_ROPE = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def rope_scaling_from_factors(config: ModelConfig, factors: torch.Tensor, path: str | Path) -> dict[str, Any]:
    """The Llama-3 `rope_scaling` whose frequencies are the base ones divided by `factors` (llama.cpp's
    meaning of `rope_freqs`): the factor is the largest one, the other parameters Llama 3's; anything
    those do not reproduce is refused rather than run with other frequencies."""
    scaling = {"rope_type": "llama3", "factor": float(factors.max()), **LLAMA3_ROPE}
    base = rope_inv_freq(dataclasses.replace(config, rope_scaling=None))
    ours = rope_inv_freq(dataclasses.replace(config, rope_scaling=scaling))
    if factors.shape != base.shape or not torch.allclose(ours, base / factors.float(), rtol=1e-5, atol=0):
        raise LMForgeError(
            f"{path}: its rope_freqs tensor is not Llama 3's RoPE scaling (factor, 1, 4, 8192); other "
            "per-frequency RoPE factors are not supported"
        )
    return scaling


def read_gguf(path: str | Path, dtype: torch.dtype = torch.float32):
    """(config, HF-named tensor getter, tensor names, metadata) for a GGUF file."""
    gguf_file = GGUFFile(path)
    meta = gguf_file.metadata
    config = config_from_metadata(meta, set(gguf_file.tensors), path)
    if "rope_freqs.weight" in gguf_file.tensors:
        factors = gguf_file.dequantize("rope_freqs.weight", torch.float32)
        config = dataclasses.replace(config, rope_scaling=rope_scaling_from_factors(config, factors, path))
    arch = ARCHITECTURES[meta["general.architecture"]]
    names: dict[str, tuple[str, int, int]] = {}  # HF name -> (GGUF name, first row, rows or -1)
    for name in gguf_file.tensors:
        targets = hf_names(name, arch)
        if not targets:
            if name == "rope_freqs.weight":  # read into the config above
                continue
            raise LMForgeError(f"{path}: unexpected GGUF tensor '{name}' for architecture '{arch.family}'")
        sizes = [-1]  # the whole tensor
        if len(targets) > 1:  # Phi-3's fused tensors hold their rows as our attn.qkv and mlp.fc do
            sizes = split_sizes(config, ".attn.qkv." if "attn_qkv" in name else ".mlp.fc.", len(targets))
        start = 0
        for target, rows in zip(targets, sizes):
            names[target] = (name, start, rows)
            start += rows

    last: dict[str, torch.Tensor] = {}  # the fused tensor last read: its parts are asked for in turn

    def get(target: str) -> torch.Tensor:
        name, start, rows = names[target]
        if name not in last:
            last.clear()
            last[name] = gguf_file.dequantize(name, dtype)
        w = last[name] if rows < 0 else last[name][start : start + rows]
        if arch.permuted and target.endswith(("q_proj.weight", "q_proj.bias")):
            w = unpermute(w, config.n_head)
        elif arch.permuted and target.endswith(("k_proj.weight", "k_proj.bias")):
            w = unpermute(w, config.n_kv_head)
        elif arch.layout == "gpt2" and w.dim() == 2 and ".h." in target:
            w = w.t()  # llama.cpp stores GPT-2's Conv1D weights as (out, in); HF keeps (in, out)
        return w

    return config, get, list(names), meta
