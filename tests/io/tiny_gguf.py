"""Hand-built GGUF files for tests: the raw pieces of a header (strings, key/values, tensor entries)
so a test can write any header, true or lying, and a tiny Llama (2 blocks, 8 wide, a 16-token BPE)."""

from __future__ import annotations

import struct

import numpy as np

U32, U64, STRING, ARRAY = 4, 10, 8, 9  # GGUF value types


def gguf_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def header(
    kvs: list[bytes], tensors: list[bytes] = (), n_kv: int | None = None, n_tensors: int | None = None
):
    counts = struct.pack(
        "<IQQ", 3, len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv
    )
    return b"GGUF" + counts + b"".join(kvs) + b"".join(tensors)


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return gguf_string(key) + struct.pack("<I", vtype) + payload


def tensor(name: str, dims: list[int], qtype: int = 0, offset: int = 0) -> bytes:
    return gguf_string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, qtype, offset)


def nested_arrays(depth: int) -> bytes:
    """An array holding one array holding one array ... `depth` levels, ending in an empty u8 array."""
    return struct.pack("<IQ", ARRAY, 1) * (depth - 1) + struct.pack("<IQ", 0, 0)


D, HEADS, KV_HEADS, FFN, VOCAB = 8, 2, 1, 16, 16
TINY_LLAMA = {
    "general.architecture": "llama",
    "llama.block_count": 2,
    "llama.context_length": 32,
    "llama.embedding_length": D,
    "llama.feed_forward_length": FFN,
    "llama.attention.head_count": HEADS,
    "llama.attention.head_count_kv": KV_HEADS,
    "llama.rope.freq_base": 10000.0,
    "llama.vocab_size": VOCAB,
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.tokens": [chr(c) for c in range(ord("a"), ord("a") + VOCAB - 1)] + ["ab"],
    "tokenizer.ggml.merges": ["a b"],
    "tokenizer.ggml.bos_token_id": 0,
    "tokenizer.ggml.eos_token_id": 1,
}


def tiny_llama_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (VOCAB, D), "output_norm.weight": (D,)}
    kv = D // HEADS * KV_HEADS
    for i in range(TINY_LLAMA["llama.block_count"]):
        b = f"blk.{i}."
        shapes |= {b + "attn_norm.weight": (D,), b + "ffn_norm.weight": (D,), b + "attn_q.weight": (D, D)}
        shapes |= {
            b + "attn_k.weight": (kv, D),
            b + "attn_v.weight": (kv, D),
            b + "attn_output.weight": (D, D),
        }
        shapes |= {
            b + "ffn_gate.weight": (FFN, D),
            b + "ffn_up.weight": (FFN, D),
            b + "ffn_down.weight": (D, FFN),
        }
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def typed_value(value) -> bytes:
    """A metadata value as GGUF writes it: str, float32, uint32, or an array of str or of uint32."""
    if isinstance(value, str):
        return struct.pack("<I", STRING) + gguf_string(value)
    if isinstance(value, float):
        return struct.pack("<If", 6, value)
    if isinstance(value, list) and value and isinstance(value[0], str):
        return struct.pack("<IIQ", ARRAY, STRING, len(value)) + b"".join(gguf_string(v) for v in value)
    if isinstance(value, list):
        return struct.pack(f"<IIQ{len(value)}I", ARRAY, U32, len(value), *value)
    return struct.pack("<II", U32, value)


def f32_gguf(meta: dict, tensors: dict[str, np.ndarray]) -> bytes:
    """A GGUF file with these metadata values (any key, any type) and float32 tensors."""
    kvs = [gguf_string(k) + typed_value(v) for k, v in meta.items()]
    infos, offset = [], 0
    for name, array in tensors.items():
        infos.append(tensor(name, list(reversed(array.shape)), offset=offset))
        offset += -(-array.nbytes // 32) * 32
    head = header(kvs, infos)
    data = b"".join(a.tobytes().ljust(-(-a.nbytes // 32) * 32, b"\0") for a in tensors.values())
    return head.ljust(-(-len(head) // 32) * 32, b"\0") + data
