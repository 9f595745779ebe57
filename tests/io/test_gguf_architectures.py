"""GGUF architectures beyond the shipped SmolLM2 (Llama): tiny random GGUF files for llama, qwen2, phi3
(fused q/k/v and gate/up) and gpt2 (LayerNorm, learned positions, transposed Conv1D weights), written with
the `gguf` package and SmolLM2's tokenizer metadata. The oracle is transformers reading the same file,
or, for Llama 3's `rope_freqs` (which transformers' GGUF loader drops), llama.cpp's meaning of them and
transformers running the checkpoint we save."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import transformers
from gguf import GGUFWriter

import lmforge
from lmforge.assets import asset_path
from lmforge.errors import LMForgeError
from lmforge.io.gguf import read_metadata

D, HEADS, KV_HEADS, LAYERS = 64, 4, 2, 2
CONTEXT = 1024  # transformers reads a GPT-2 GGUF's context as n_ctx and keeps n_positions at 1024
HEAD_DIM = D // HEADS


@pytest.fixture(scope="module")
def tokenizer_metadata():
    """SmolLM2's tokenizer (GPT-2-style BPE, 49,152 tokens): every tiny file carries it."""
    return {k: v for k, v in read_metadata(asset_path("smollm2")).items() if k.startswith("tokenizer.")}


def random_weights(rng, *shape) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.2).astype(np.float32)


def llama_tensors(rng, vocab: int, fused: bool, bias: bool) -> dict[str, np.ndarray]:
    w = functools.partial(random_weights, rng)
    q, kv, mlp = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, 128
    out = {"token_embd.weight": w(vocab, D), "output_norm.weight": 1 + w(D), "output.weight": w(vocab, D)}
    for i in range(LAYERS):
        b = f"blk.{i}."
        out |= {b + "attn_norm.weight": 1 + w(D), b + "ffn_norm.weight": 1 + w(D)}
        out |= {b + "attn_output.weight": w(D, q), b + "ffn_down.weight": w(D, mlp)}
        if fused:  # Phi-3: q, k, v rows in one tensor; gate then up rows in another
            out |= {b + "attn_qkv.weight": w(q + 2 * kv, D), b + "ffn_up.weight": w(2 * mlp, D)}
        else:
            out |= {
                b + "attn_q.weight": w(q, D),
                b + "attn_k.weight": w(kv, D),
                b + "attn_v.weight": w(kv, D),
            }
            out |= {b + "ffn_gate.weight": w(mlp, D), b + "ffn_up.weight": w(mlp, D)}
        if bias:
            out |= {b + "attn_q.bias": w(q), b + "attn_k.bias": w(kv), b + "attn_v.bias": w(kv)}
    return out


def gpt2_tensors(rng, vocab: int) -> dict[str, np.ndarray]:
    w = functools.partial(random_weights, rng)
    out = {
        "token_embd.weight": w(vocab, D),
        "position_embd.weight": w(CONTEXT, D),
        "output_norm.weight": 1 + w(D),
        "output_norm.bias": w(D),
    }
    for i in range(LAYERS):
        b = f"blk.{i}."
        for name, rows, cols in [
            ("attn_qkv", 3 * D, D),
            ("attn_output", D, D),
            ("ffn_up", 4 * D, D),
            ("ffn_down", D, 4 * D),
        ]:
            out |= {f"{b}{name}.weight": w(rows, cols), f"{b}{name}.bias": w(rows)}
        for name in ("attn_norm", "ffn_norm"):
            out |= {f"{b}{name}.weight": 1 + w(D), f"{b}{name}.bias": w(D)}
    return out


def write_gguf(path, arch: str, tensors: dict[str, np.ndarray], tokenizer: dict, extra: dict | None = None):
    writer = GGUFWriter(str(path), arch)
    vocab = len(tokenizer["tokenizer.ggml.tokens"])
    writer.add_uint32(f"{arch}.block_count", LAYERS)
    writer.add_uint32(f"{arch}.context_length", CONTEXT)
    writer.add_uint32(f"{arch}.embedding_length", D)
    writer.add_uint32(f"{arch}.attention.head_count", HEADS)
    if arch == "gpt2":
        writer.add_uint32(f"{arch}.feed_forward_length", 4 * D)
        writer.add_float32(f"{arch}.attention.layer_norm_epsilon", 1e-5)
    else:
        writer.add_uint32(f"{arch}.feed_forward_length", 128)
        writer.add_uint32(f"{arch}.attention.head_count_kv", KV_HEADS)
        writer.add_uint32(f"{arch}.vocab_size", vocab)
        writer.add_uint32(f"{arch}.rope.dimension_count", HEAD_DIM)
        writer.add_float32(f"{arch}.rope.freq_base", 10000.0)
        writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    for key, value in (extra or {}).items():
        writer.add_uint32(key, value)
    for key, value in tokenizer.items():
        if isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_string(key, value)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tiny_gguf(tmp_path, arch: str, tokenizer: dict, seed: int = 0, **extra) -> object:
    rng = np.random.default_rng(seed)
    vocab = len(tokenizer["tokenizer.ggml.tokens"])
    if arch == "gpt2":
        tensors = gpt2_tensors(rng, vocab)
    else:
        tensors = llama_tensors(rng, vocab, fused=arch == "phi3", bias=arch == "qwen2")
    return write_gguf(tmp_path / f"tiny-{arch}.gguf", arch, tensors, tokenizer, extra)


def hf_logits(path, ids: torch.Tensor) -> torch.Tensor:
    transformers.logging.set_verbosity_error()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        return model(ids).logits


# llama in the default suite; the others (~16 s each, transformers' GGUF reader) with -m slow
@pytest.mark.parametrize(
    "arch, family",
    [
        ("llama", "llama"),
        pytest.param("qwen2", "qwen2", marks=pytest.mark.slow),
        pytest.param("phi3", "llama", marks=pytest.mark.slow),
        pytest.param("gpt2", "gpt2", marks=pytest.mark.slow),
    ],
)
def test_tiny_gguf_logits_equal_transformers(tmp_path, tokenizer_metadata, arch, family):
    path = tiny_gguf(tmp_path, arch, tokenizer_metadata)
    lm = lmforge.load(path, dtype=torch.float32, device="cpu")
    assert lm.config.family == family
    ids = torch.tensor([lm.tokenizer.encode("To be, or not to be, that is the question")])
    with torch.no_grad():
        ours = lm.model(ids)
    torch.testing.assert_close(ours, hf_logits(path, ids), rtol=1e-4, atol=1e-4)


def test_phi3_saves_as_a_llama_checkpoint_transformers_loads(tmp_path, tokenizer_metadata):
    """The fused Phi-3 weights are split on load, so the model saves as plain Llama safetensors."""
    lm = lmforge.load(tiny_gguf(tmp_path, "phi3", tokenizer_metadata), dtype=torch.float32, device="cpu")
    out = lm.save(tmp_path / "saved")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ids = torch.tensor([[5, 17, 99, 3, 42]])
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids), hf(ids).logits, rtol=1e-4, atol=1e-4)


def test_phi3_sliding_window_is_honoured(tmp_path, tokenizer_metadata):
    path = tiny_gguf(tmp_path, "phi3", tokenizer_metadata, **{"phi3.attention.sliding_window": 8})
    lm = lmforge.load(path, dtype=torch.float32, device="cpu")
    assert (lm.config.sliding_window, lm.config.family) == (8, "mistral")


def test_longrope_factors_are_a_clear_error(tmp_path, tokenizer_metadata):
    rng = np.random.default_rng(0)
    tensors = llama_tensors(rng, len(tokenizer_metadata["tokenizer.ggml.tokens"]), fused=True, bias=False)
    tensors["rope_factors_long.weight"] = np.ones(HEAD_DIM // 2, dtype=np.float32)
    path = write_gguf(tmp_path / "longrope.gguf", "phi3", tensors, tokenizer_metadata)
    with pytest.raises(LMForgeError, match="per-dimension factors"):
        lmforge.load(path, dtype=torch.float32, device="cpu")


def llama_cpp_rope_factors(head_dim: int, theta: float, factor: float) -> np.ndarray:
    """What llama.cpp's converter writes as `rope_freqs` for Llama 3.1's RoPE scaling (low 1, high 4,
    original context 8192): the divisor of each base frequency."""
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    out = []
    for freq in freqs:
        wavelen = 2 * np.pi / freq
        if wavelen < 8192 / 4:
            out.append(1.0)
        elif wavelen > 8192 / 1:
            out.append(factor)
        else:
            smooth = (8192 / wavelen - 1) / (4 - 1)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def test_llama3_rope_freqs_load_as_llama3_scaling(tmp_path, tokenizer_metadata):
    """Llama 3.1/3.2 GGUF files carry their RoPE scaling only as `rope_freqs` (transformers' GGUF loader
    drops it): our frequencies are the base ones divided by those factors, as in llama.cpp, and the model
    saves with the Llama-3 `rope_scaling` transformers computes the same logits from."""
    rng = np.random.default_rng(1)
    tensors = llama_tensors(rng, len(tokenizer_metadata["tokenizer.ggml.tokens"]), fused=False, bias=False)
    factors = llama_cpp_rope_factors(HEAD_DIM, 10000.0, 8.0)
    assert len(set(factors.round(4).tolist())) > 2  # this head size has all three regimes: 1, smooth, 8
    tensors["rope_freqs.weight"] = factors
    lm = lmforge.load(
        write_gguf(tmp_path / "llama3.gguf", "llama", tensors, tokenizer_metadata), device="cpu"
    )
    assert lm.config.rope_scaling["rope_type"] == "llama3" and lm.config.rope_scaling["factor"] == 8.0
    base = 1.0 / 10000.0 ** (torch.arange(0, HEAD_DIM, 2).double() / HEAD_DIM)
    torch.testing.assert_close(lm.model.rope.inv_freq.double(), base / torch.from_numpy(factors).double())
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(lm.save(tmp_path / "saved")), dtype=torch.float32
    )
    ids = torch.tensor([list(range(3, 203))])  # long enough for the scaled frequencies to matter
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids), hf.eval()(ids).logits, rtol=1e-4, atol=1e-4)


def test_other_rope_freqs_are_a_clear_error(tmp_path, tokenizer_metadata):
    rng = np.random.default_rng(1)
    tensors = llama_tensors(rng, len(tokenizer_metadata["tokenizer.ggml.tokens"]), fused=False, bias=False)
    tensors["rope_freqs.weight"] = np.linspace(1, 3, HEAD_DIM // 2, dtype=np.float32)
    with pytest.raises(LMForgeError, match="not Llama 3's RoPE scaling"):
        lmforge.load(write_gguf(tmp_path / "odd.gguf", "llama", tensors, tokenizer_metadata), device="cpu")
