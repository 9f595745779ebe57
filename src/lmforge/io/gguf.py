"""GGUF files (llama.cpp's format): metadata, model config and dequantized weights, for the Llama, Qwen2,
Phi-3 and GPT-2 architectures.

Every tensor type the `gguf` package can dequantize is supported; weights become float tensors in
the requested dtype one at a time, so peak memory stays near one copy of the model. llama.cpp's
converter permutes the rows of q/k projections for its interleaved RoPE; we undo that so the weights
fit the rotate-half layout of our attention (as Hugging Face's GGUF loader does).

`read_header` is the one reader of GGUF metadata in lmforge (the model loader, the tokenizer and
`read_metadata` all go through it). A GGUF file is untrusted input: every count and length in the header
is checked against the bytes left in the file before anything is built, array nesting is capped, and
anything malformed is one `LMForgeError` naming the file (tests/io/test_gguf_fuzz.py fuzzes it).
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import os
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

# ---- the header --------------------------------------------------------------------------------------

GGUF_VERSIONS = (2, 3)
MAX_DIMS = 4  # llama.cpp's GGML_MAX_DIMS
MAX_ARRAY_DEPTH = 8  # arrays of arrays nest no deeper; real files use one level
_SCALARS = {  # GGUF value type -> numpy dtype (little-endian)
    0: np.dtype("<u1"),
    1: np.dtype("<i1"),
    2: np.dtype("<u2"),
    3: np.dtype("<i2"),
    4: np.dtype("<u4"),
    5: np.dtype("<i4"),
    6: np.dtype("<f4"),
    7: np.dtype("?"),
    10: np.dtype("<u8"),
    11: np.dtype("<i8"),
    12: np.dtype("<f8"),
}
_STRING, _ARRAY = 8, 9
# the fewest bytes a value of each type takes: a count read from the file is checked against it
_MIN_BYTES = {**{t: d.itemsize for t, d in _SCALARS.items()}, _STRING: 8, _ARRAY: 12}


def _quote(text: str) -> str:
    """A name read from the file, for a message: quoted, escaped (one line) and cut short."""
    quoted = repr(text)
    return quoted if len(quoted) <= 60 else quoted[:57] + "..."


class _Corrupt(Exception):
    """The header contradicts itself or the file's size; `read_header` names the file."""


class _Cursor:
    """Little-endian reads from a buffer. Every count and length is checked against the bytes left
    before anything is built, so a header cannot make us allocate more than the file holds."""

    def __init__(self, buf: bytes | mmap.mmap):
        self.buf, self.pos = buf, 0

    def left(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.left():
            raise _Corrupt(f"{what} needs {n} bytes at offset {self.pos}, {self.left()} are left")
        self.pos += n
        return self.buf[self.pos - n : self.pos]

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")

    def u64(self, what: str) -> int:
        return int.from_bytes(self.take(8, what), "little")

    def count(self, what: str, item_bytes: int) -> int:
        """A u64 count of items that each take at least `item_bytes`."""
        n = self.u64(what)
        if n * item_bytes > self.left():
            raise _Corrupt(f"{what} is {n}, more than the {self.left()} bytes left can hold")
        return n

    def string(self, what: str) -> str:
        n = self.u64(f"{what} length")
        try:
            return str(self.take(n, what), "utf-8")
        except UnicodeDecodeError:
            raise _Corrupt(f"{what} at offset {self.pos - n} is not UTF-8") from None

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            dtype = _SCALARS[vtype]
            return np.frombuffer(self.take(dtype.itemsize, what), dtype)[0].item()
        if vtype == _STRING:
            return self.string(what)
        if vtype != _ARRAY:
            raise _Corrupt(f"{what} has unknown value type {vtype}")
        if depth >= MAX_ARRAY_DEPTH:
            raise _Corrupt(f"{what} nests arrays deeper than {MAX_ARRAY_DEPTH} levels")
        item_type = self.u32(f"{what} item type")
        if item_type not in _MIN_BYTES:
            raise _Corrupt(f"{what} has unknown item type {item_type}")
        n = self.count(f"{what} item count", _MIN_BYTES[item_type])
        if item_type in _SCALARS:  # one numpy view for the whole array (a 49k-entry score list)
            dtype = _SCALARS[item_type]
            return np.frombuffer(self.take(n * dtype.itemsize, what), dtype).tolist()
        if item_type == _STRING:
            return self.strings(n, what)
        return [self.value(item_type, what, depth + 1) for _ in range(n)]

    def strings(self, n: int, what: str) -> list[str]:
        """`n` strings in a row: `string` unrolled, as a vocabulary holds tens of thousands."""
        buf, pos, end, out = self.buf, self.pos, len(self.buf), []
        for _ in range(n):
            if pos + 8 > end:
                break
            length = int.from_bytes(buf[pos : pos + 8], "little")
            if length > end - pos - 8:
                break
            pos += 8 + length
            out.append(buf[pos - length : pos])
        self.pos = pos
        if len(out) < n:
            self.string(f"{what} item {len(out)}")  # raises, naming what ran past the end
        try:
            return [str(item, "utf-8") for item in out]
        except UnicodeDecodeError:
            raise _Corrupt(f"{what} holds a string that is not UTF-8") from None


@dataclasses.dataclass
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # GGUF order: the fastest-varying dimension first
    qtype: GGMLQuantizationType
    offset: int  # from the start of the data section
    nbytes: int


@dataclasses.dataclass
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    data_start: int  # where the (aligned) tensor data section begins


def read_header(path: str | Path) -> GGUFHeader:
    """The metadata and tensor table of a GGUF file (v2/v3, little-endian), checked against its size.

    The one reader of GGUF headers in lmforge. A GGUF file is untrusted input: anything malformed
    (truncated, counts past the end, unknown types, tensors outside the file) is one `LMForgeError`
    that names the file, and nothing read from the header can make it allocate more than the file's size.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise LMForgeError(f"{path}: not a readable GGUF file (it is empty)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse_header(buf)
    except OSError as exc:
        raise LMForgeError(f"{path}: cannot read GGUF file ({exc.strerror or exc})") from None
    except _Corrupt as exc:
        raise LMForgeError(f"{path}: not a readable GGUF file ({exc})") from None


def _parse_header(buf: bytes | mmap.mmap) -> GGUFHeader:
    cur = _Cursor(buf)
    if bytes(buf[:4]) != b"GGUF":
        raise _Corrupt("bad magic bytes")
    cur.pos = 4
    version = cur.u32("version")
    if version not in GGUF_VERSIONS:
        raise _Corrupt(f"unsupported GGUF version {version}; versions 2 and 3 are supported")
    # a tensor entry takes at least 24 bytes (name length, dimension count, type, offset), a key/value 13
    n_tensors = cur.count("tensor count", 24)
    n_kv = cur.count("metadata count", 13)
    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = cur.string(f"metadata key {i}")
        if key in metadata:
            raise _Corrupt(f"metadata key {_quote(key)} appears twice")
        metadata[key] = cur.value(cur.u32(f"type of {_quote(key)}"), _quote(key))
    alignment = metadata.get("general.alignment", 32)
    if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
        raise _Corrupt(f"general.alignment is {alignment!r:.40}, not a positive power of two")
    infos = []
    for i in range(n_tensors):
        name = cur.string(f"tensor {i} name")
        n_dims = cur.u32(f"tensor {_quote(name)} dimension count")
        if not 1 <= n_dims <= MAX_DIMS:
            raise _Corrupt(f"tensor {_quote(name)} has {n_dims} dimensions (1 to {MAX_DIMS} are allowed)")
        dims = tuple(cur.u64(f"tensor {_quote(name)} dimensions") for _ in range(n_dims))
        code = cur.u32(f"tensor {_quote(name)} type")
        offset = cur.u64(f"tensor {_quote(name)} offset")
        try:
            qtype = GGMLQuantizationType(code)
        except ValueError:
            raise _Corrupt(f"tensor {_quote(name)} has unknown type {code}") from None
        block, type_size = GGML_QUANT_SIZES[qtype]
        if 0 in dims or dims[0] % block:
            raise _Corrupt(
                f"tensor {_quote(name)} has shape {dims}, not whole {qtype.name} blocks of {block}"
            )
        infos.append((name, dims, qtype, offset, dims[0] // block * type_size * math.prod(dims[1:])))
    data_start = -(-cur.pos // alignment) * alignment
    tensors, names = [], set()
    for name, dims, qtype, offset, nbytes in infos:
        if name in names:
            raise _Corrupt(f"tensor {_quote(name)} appears twice")
        names.add(name)
        if data_start + offset + nbytes > len(buf):
            raise _Corrupt(f"tensor {_quote(name)} runs past the end of the file (truncated?)")
        tensors.append(TensorInfo(name, dims, qtype, offset, nbytes))
    return GGUFHeader(version, metadata, tensors, data_start)


@dataclasses.dataclass
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # numpy order (rows first), as Hugging Face expects
    qtype: int
    data: np.ndarray  # raw bytes (uint8) or float view, memory-mapped


class GGUFFile:
    """A GGUF file: its metadata (`read_header`) and memory-mapped tensor data.

    The `gguf` package's reader builds a numpy view per metadata item and takes seconds on a 49k-token
    vocabulary; our header reader takes a fraction of that. Dequantization uses the `gguf` package.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        header = read_header(self.path)
        self.metadata = header.metadata
        buf = np.memmap(self.path, dtype=np.uint8, mode="r")
        self.tensors: dict[str, GGUFTensor] = {}
        for t in header.tensors:
            block, type_size = GGML_QUANT_SIZES[t.qtype]
            row_bytes = t.dims[0] // block * type_size
            shape = tuple(reversed(t.dims))
            begin = header.data_start + t.offset
            data = buf[begin : begin + t.nbytes].reshape(*shape[:-1], row_bytes)
            self.tensors[t.name] = GGUFTensor(t.name, shape, int(t.qtype), data)

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
                    f"{self.path}: tensor {name!r} has type {qtype.name}, which the gguf package cannot dequantize"
                ) from None
        return torch.from_numpy(np.array(array, dtype=np.float32, copy=True)).to(dtype)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """All key/value metadata of a GGUF file as plain Python values (str, int, float, bool, lists)."""
    return read_header(path).metadata


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


_REQUIRED = object()


def _typed_getter(meta: dict[str, Any], arch: str, path: str | Path) -> Callable[..., Any]:
    """`get(key, default, kind)` for `{arch}.{key}`: a missing required key or a value of the wrong
    type (a string where a count belongs) is a one-line error naming the key."""

    def get(key: str, default: Any = _REQUIRED, kind: type = int) -> Any:
        full = f"{arch}.{key}"
        if full not in meta:
            if default is _REQUIRED:
                raise LMForgeError(f"{path}: GGUF metadata lacks '{full}'")
            return default
        value = meta[full]
        if kind is float and type(value) is int:
            value = float(value)
        if type(value) is not kind:
            raise LMForgeError(f"{path}: GGUF metadata '{full}' is {value!r:.40}, expected {kind.__name__}")
        return value

    return get


def _block_count(tensor_names: set[str]) -> int:
    """How many transformer blocks the tensors hold (`blk.{i}.*`)."""
    return len({n.split(".")[1] for n in tensor_names if n.startswith("blk.") and n.count(".") >= 2})


def config_from_metadata(meta: dict[str, Any], tensor_names: set[str], path: str | Path) -> ModelConfig:
    """Our ModelConfig for a GGUF file's metadata; a value ModelConfig refuses is an error naming the file."""
    try:
        return _config_from_metadata(meta, tensor_names, path)
    except LMForgeError as exc:
        message = str(exc)
        raise LMForgeError(message if message.startswith(f"{path}: ") else f"{path}: {message}") from None


def _config_from_metadata(meta: dict[str, Any], tensor_names: set[str], path: str | Path) -> ModelConfig:
    name = meta.get("general.architecture")
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise LMForgeError(
            f"{path}: unsupported GGUF architecture {name!r:.40}; supported: {', '.join(ARCHITECTURES)}"
        )
    arch, get = ARCHITECTURES[name], _typed_getter(meta, name, path)
    d, nh, n_layer = get("embedding_length"), get("attention.head_count"), get("block_count")
    if n_layer != _block_count(tensor_names):
        raise LMForgeError(
            f"{path}: GGUF metadata says {n_layer} blocks, the file has tensors for {_block_count(tensor_names)}"
        )
    tokens = meta.get("tokenizer.ggml.tokens", [])
    vocab = get("vocab_size", None) or (len(tokens) if isinstance(tokens, list) else None)
    common = dict(
        vocab_size=vocab,
        n_layer=n_layer,
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
            norm_eps=get("attention.layer_norm_epsilon", 1e-5, float),
            mlp="gelu_tanh",
            position="learned",
            qkv_bias=True,
            attn_out_bias=True,
            mlp_bias=True,
            family=arch.family,
        )
    scaling = None
    if get("rope.scaling.type", None, str) == "linear":
        scaling = {"rope_type": "linear", "factor": get("rope.scaling.factor", kind=float)}
    if any(t.startswith("rope_factors") for t in tensor_names):
        raise LMForgeError(
            f"{path}: RoPE with per-dimension factors (LongRoPE, as in Phi-3's 128k models) is not supported"
        )
    window = get("attention.sliding_window", None) if arch.sliding_window else None
    return ModelConfig(
        **common,
        n_kv_head=get("attention.head_count_kv", nh),
        head_dim=get("attention.key_length", None) or get("rope.dimension_count", None),
        norm="rmsnorm",
        norm_eps=get("attention.layer_norm_rms_epsilon", 1e-5, float),
        mlp="swiglu",
        position="rope",
        rope_theta=get("rope.freq_base", 10000.0, float),
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
    # the embedding table pins vocab_size and d_model to the file's real tensors before a model is built
    embedding = gguf_file.tensors.get("token_embd.weight")
    if embedding is None or embedding.shape != (config.vocab_size, config.d_model):
        raise LMForgeError(
            f"{path}: token_embd.weight has shape {embedding.shape if embedding else None}, the metadata "
            f"says vocab_size={config.vocab_size} x embedding_length={config.d_model}"
        )
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
            raise LMForgeError(f"{path}: unexpected GGUF tensor {name!r} for architecture '{arch.family}'")
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
        if arch.permuted and target.endswith(
            ("q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias")
        ):
            heads = config.n_head if ".q_proj." in target else config.n_kv_head
            if w.shape[0] != heads * config.head_dim:  # the metadata's head counts disagree with the tensor
                raise LMForgeError(
                    f"{path}: tensor {name!r} has {w.shape[0]} rows, the metadata says {heads} heads "
                    f"of {config.head_dim}"
                )
            w = unpermute(w, heads)
        elif arch.layout == "gpt2" and w.dim() == 2 and ".h." in target:
            w = w.t()  # llama.cpp stores GPT-2's Conv1D weights as (out, in); HF keeps (in, out)
        return w

    return config, get, list(names), meta
