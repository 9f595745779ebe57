"""GGUF export: files lmforge loads back (logits close to the source, exact for F32), whose tensors the
`gguf` package's own dequantize reads as the values the block formats define, with the source's
llama.cpp tokenizer metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lmforge
from lmforge.cli import main
from lmforge.quant.gguf_export import write_gguf
from tiny import tiny_model


@pytest.fixture(scope="module")
def smollm2_meta():
    from lmforge.assets import asset_path
    from lmforge.io.gguf import read_metadata

    return read_metadata(asset_path("smollm2"))


def _tensor(path, name):
    """(type name, values) of one tensor: the raw blocks through the `gguf` package's dequantize."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    from lmforge.io.gguf import GGUFFile  # the raw bytes only (gguf's GGUFReader takes seconds per file)

    t = GGUFFile(path).tensors[name]
    kind = GGMLQuantizationType(t.qtype)
    return kind.name, np.asarray(dequantize(t.data, kind), dtype=np.float32)


def _q8_0_reference(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 from its definition: blocks of 32 along a row, d = max|w| / 127 stored in fp16, codes
    round(w / d); (values, the stored step of each value)."""
    blocks = w.reshape(-1, 32).astype(np.float64)
    d = np.abs(blocks).max(axis=1, keepdims=True) / 127
    q = np.where(d == 0, 0, np.trunc(np.abs(blocks) / np.where(d == 0, 1, d) + 0.5) * np.sign(blocks))
    step = d.astype(np.float16).astype(np.float64)
    return (q * step).reshape(w.shape), np.broadcast_to(step, blocks.shape).reshape(w.shape)


IDS = torch.randint(0, 49152, (1, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_f32_and_q8_0_export_load_back(tmp_path, family, smollm2_meta):
    """A tiny random model (SmolLM2's vocabulary and tokenizer metadata): F32 loads back to the same
    logits (names, q/k permutation and Conv1D transposes undone exactly); Q8_0 tensors are Q8_0 by its
    definition."""
    model = tiny_model(
        family, vocab_size=49152, d_model=64, n_head=4, d_mlp=128, n_kv_head=2 if family == "llama" else None
    )
    ref = model(IDS)
    write_gguf(model, tmp_path / "f32.gguf", "f32", smollm2_meta)
    loaded = lmforge.load(tmp_path / "f32.gguf", dtype=torch.float32, compile="eager")
    torch.testing.assert_close(loaded.model(IDS), ref, rtol=1e-5, atol=1e-5)
    assert loaded.encode("Hello world") == [19556, 905]  # SmolLM2's tokenizer, carried over

    write_gguf(model, tmp_path / "q8.gguf", "q8_0", smollm2_meta)
    kind, values = _tensor(tmp_path / "q8.gguf", "blk.0.ffn_down.weight")
    assert kind == "Q8_0"
    expected, step = _q8_0_reference(model.blocks[0].mlp.proj.weight.detach().numpy())
    diff = np.abs(values - expected)
    assert (diff <= 1e-6 * step).mean() > 0.999 and (diff <= step + 1e-9).all()  # ties may round apart
    assert _tensor(tmp_path / "q8.gguf", "blk.0.attn_norm.weight")[0] == "F32"
    loaded = lmforge.load(tmp_path / "q8.gguf", dtype=torch.float32, compile="eager")
    out = loaded.model(IDS)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_convert_smollm2_to_q8_0(tmp_path, smollm2, capsys):
    """`lmforge convert smollm2 OUT.gguf --to gguf --type q8_0`: the file loads back with the same
    tokenizer and chat template, and its logits are close to the source's."""
    out = tmp_path / "smollm2-q8_0.gguf"
    assert main(["convert", "smollm2", str(out), "--to", "gguf", "--type", "q8_0"]) == 0
    assert "GGUF Q8_0" in capsys.readouterr().out
    loaded = lmforge.load(out, dtype=torch.float32, compile="eager")
    text = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"
    assert loaded.encode(text) == smollm2.encode(text)
    assert loaded.tokenizer.chat_template == smollm2.tokenizer.chat_template
    ids = torch.tensor([smollm2.encode(text)])
    with torch.inference_mode():
        ref, got = smollm2.model(ids).log_softmax(-1), loaded.model(ids).log_softmax(-1)
    kl = (ref.exp() * (ref - got)).sum(-1).mean().item()
    assert kl < 0.01, kl
    assert (ref.argmax(-1) == got.argmax(-1)).float().mean() > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["q4_0", "q4_1", "f16"])
def test_convert_smollm2_other_types(tmp_path, smollm2, kind):
    out = tmp_path / f"smollm2-{kind}.gguf"
    assert main(["convert", "smollm2", str(out), "--to", "gguf", "--type", kind]) == 0
    name, values = _tensor(out, "blk.0.ffn_down.weight")
    assert name == kind.upper()
    w = smollm2.model.blocks[0].mlp.proj.weight.detach().numpy()
    blocks = w.reshape(-1, 32)
    step = (blocks.max(1) - blocks.min(1))[:, None] / (15 if kind != "f16" else 2**10)
    assert (np.abs(values.reshape(-1, 32) - blocks) <= step + 1e-6).all()
    assert _tensor(out, "token_embd.weight")[0] == ("Q8_0" if kind != "f16" else "F16")  # tied output
    loaded = lmforge.load(out, dtype=torch.float32, compile="eager")
    ids = torch.tensor([smollm2.encode("The quick brown fox jumps over the lazy dog")])
    with torch.inference_mode():
        ref, got = smollm2.model(ids).log_softmax(-1), loaded.model(ids).log_softmax(-1)
    # the shipped weights are Q4_1: Q4_1 and F16 hold them (almost) exactly; Q4_0 re-rounds them onto a
    # symmetric grid, which costs this 135M model a KL of 1.1 even done in memory with gguf's quantizer
    bound = {"q4_0": 1.6, "q4_1": 0.01, "f16": 0.01}[kind]
    assert (ref.exp() * (ref - got)).sum(-1).mean().item() < bound


def test_gguf_export_refuses_what_it_cannot_write(tmp_path, smollm2_meta):
    with pytest.raises(lmforge.LMForgeError, match="tokenizer metadata"):
        write_gguf(tiny_model("llama", vocab_size=320), tmp_path / "x.gguf", "q8_0", {})
    q = lmforge.quantize(lmforge.LM(tiny_model("llama", vocab_size=320)), scheme="int8", report=False).lm
    with pytest.raises(lmforge.LMForgeError, match="float model"):
        write_gguf(q.model, tmp_path / "x.gguf", "q8_0", smollm2_meta)
    from lmforge.io.checkpoint import write_checkpoint
    from lmforge.quant.gguf_export import export_gguf

    write_checkpoint(tmp_path / "bare", tiny_model("llama", vocab_size=320))
    with pytest.raises(lmforge.LMForgeError, match="needs a tokenizer for llama.cpp"):
        export_gguf(tmp_path / "bare", tmp_path / "x.gguf")
    with pytest.raises(lmforge.LMForgeError, match="GGUF export writes the llama, qwen2 and gpt2"):
        write_gguf(
            tiny_model("llama", vocab_size=320, sliding_window=8), tmp_path / "x.gguf", "f32", smollm2_meta
        )
    for fields in ({"position": "alibi"}, {"sparse_stride": 4}, {"sliding_window": 8, "global_tokens": 2}):
        with pytest.raises(lmforge.LMForgeError, match="cannot carry|GGUF export writes"):
            write_gguf(
                tiny_model("llama", vocab_size=320, **fields), tmp_path / "x.gguf", "f32", smollm2_meta
            )
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize("fields", [{"sparse_stride": 4}, {"sliding_window": 8, "global_tokens": 2}])
def test_attention_patterns_hf_has_no_field_for_stay_in_lmforge_checkpoints(tmp_path, fields):
    """A Mistral-like model with a sparse pattern is not written as an HF checkpoint that would drop it."""
    from lmforge.io.checkpoint import write_checkpoint

    model = tiny_model("llama", vocab_size=320, **fields)
    write_checkpoint(tmp_path / "m", model)
    loaded = lmforge.load(tmp_path / "m", device="cpu", compile="eager")
    for name, value in fields.items():
        assert getattr(loaded.config, name) == value
    ids = torch.randint(0, 320, (1, 40), generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.model(ids), model(ids))


def test_directory_source_writes_its_tokenizer_as_llama_cpps(tmp_path, smollm2, smollm2_meta):
    """A checkpoint directory (a tiny model with SmolLM2's tokenizer saved as tokenizer.json): the GGUF
    carries llama.cpp's tokenizer metadata built from it — the same tokens, types, merges, pre-tokenizer
    name, special ids and chat template as SmolLM2's own GGUF — and loads back tokenizing the same."""
    from lmforge.io.gguf import read_metadata
    from lmforge.quant.gguf_export import export_gguf

    model = tiny_model("llama", vocab_size=49152, d_model=64, n_head=4, d_mlp=128)
    lmforge.LM(model, smollm2.tokenizer).save(tmp_path / "dir")
    export_gguf(tmp_path / "dir", tmp_path / "out.gguf", "f16")
    meta = read_metadata(tmp_path / "out.gguf")
    for key in ("model", "pre", "tokens", "token_type", "merges", "bos_token_id", "eos_token_id"):
        assert meta[f"tokenizer.ggml.{key}"] == smollm2_meta[f"tokenizer.ggml.{key}"], key
    assert meta["tokenizer.chat_template"] == smollm2_meta["tokenizer.chat_template"]
    loaded = lmforge.load(tmp_path / "out.gguf", compile="eager")
    text = "In 1603, Hamlet said: 'To be, or not to be' — naïve café ✓"
    assert loaded.encode(text) == smollm2.encode(text)
