"""Write a float model as a GGUF file llama.cpp reads: F32, F16, Q8_0, Q4_0 or Q4_1 weights.

The inverse of `lmforge.io.gguf.read_gguf`, from the same tables: our tensors get Hugging Face names
(`io.hf.state_to_hf`), then GGUF names (`LLAMA_TENSORS` / `GPT2_TENSORS` read backwards); Llama's q/k
rows are permuted back into llama.cpp's interleaved-RoPE order and GPT-2's Conv1D weights transposed
back to (out, in). Quantized types are made by the `gguf` package's own quantizers (its Q8_0 is
bit-exact with ggml's):
- Q8_0: blocks of 32 weights along a row, fp16 scale d = max|w| / 127, codes round(w / d);
- Q4_0: blocks of 32, fp16 d = (the signed value of largest magnitude) / −8, codes round(w / d) + 8 in
  0..15; Q4_1: blocks of 32 with fp16 scale and minimum.
Rules, as llama.cpp's: 1-D tensors (norms, biases) stay F32; a 2-D tensor whose rows are not a multiple
of 32 is written F16; with Q4_0/Q4_1 the output projection (the token embedding when tied) is Q8_0,
because its error reaches the logits unmixed (llama.cpp uses Q6_K there, which `gguf` cannot make).
The tokenizer metadata (`tokenizer.*`) is copied from a source GGUF file, or built from a checkpoint
directory's byte-level BPE tokenizer (`tokenizer_metadata`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lmforge.errors import LMForgeError
from lmforge.io.atomic import atomic_file

GGUFType = Literal["f32", "f16", "q8_0", "q4_0", "q4_1"]
ARCH_OF_FAMILY = {"llama": "llama", "qwen2": "qwen2", "gpt2": "gpt2"}


def _qtypes():
    from gguf import GGMLQuantizationType as Q
    from gguf import LlamaFileType as F

    return {
        "f32": (Q.F32, F.ALL_F32),
        "f16": (Q.F16, F.MOSTLY_F16),
        "q8_0": (Q.Q8_0, F.MOSTLY_Q8_0),
        "q4_0": (Q.Q4_0, F.MOSTLY_Q4_0),
        "q4_1": (Q.Q4_1, F.MOSTLY_Q4_1),
    }


def gguf_names(arch_name: str) -> list[tuple[re.Pattern[str], str]]:
    """(HF name pattern, GGUF name template) pairs: the reader's tables read backwards."""
    from lmforge.io.gguf import GPT2_TENSORS, LLAMA_TENSORS

    table = GPT2_TENSORS if arch_name == "gpt2" else LLAMA_TENSORS
    return [
        (re.compile("^" + re.escape(hf).replace(re.escape("{i}"), r"(\d+)") + "$"), ours)
        for ours, hf in table.items()
    ]


def permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's q/k row order (interleaved pairs) from the rotate-half one: `io.gguf.unpermute`'s inverse."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's float tensors under GGUF names, in llama.cpp's layouts (fp32)."""
    from lmforge.io.hf import FAMILIES, state_to_hf

    config = model.config
    arch_name = ARCH_OF_FAMILY.get(config.family)
    if (
        arch_name is None
        or config.sliding_window
        or (config.rope_scaling or {}).get("rope_type")
        not in (
            None,
            "linear",
        )
    ):
        raise LMForgeError(
            f"GGUF export writes the llama, qwen2 and gpt2 architectures (no sliding window, RoPE "
            f"unscaled or linear); this model is {config.family}"
        )
    if not FAMILIES[config.family].expressible(config):
        found = [f"position {config.position}"] if config.position not in ("rope", "learned") else []
        found += [f"sparse_stride {config.sparse_stride}"] if config.sparse_stride else []
        found += [f"global_tokens {config.global_tokens}"] if config.global_tokens else []
        found += [f"linformer_k {config.linformer_k}"] if config.linformer_k else []
        found += [f"performer_features {config.performer_features}"] if config.performer_features else []
        raise LMForgeError(
            f"GGUF export: this {config.family} model has fields the {arch_name} architecture cannot carry "
            f"({', '.join(found) or 'see its config'}); keep it as an lmforge checkpoint (lmforge convert SRC OUT)"
        )
    state = {k: v.detach().float() for k, v in model.state_dict().items()}
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)
    hf = state_to_hf(config, state)
    patterns = gguf_names(arch_name)
    out: dict[str, torch.Tensor] = {}
    for name, w in hf.items():
        for pattern, template in patterns:
            if m := pattern.match(name):
                target = template.replace("{i}", m.group(1)) if m.groups() else template
                break
        else:
            if config.tie_embeddings and name == "lm_head.weight":
                continue
            raise LMForgeError(f"GGUF export: no GGUF name for tensor {name!r}")
        if arch_name == "llama" and name.endswith(
            ("q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias")
        ):
            w = permute(w, config.n_head if ".q_proj." in name else config.n_kv_head)
        elif arch_name == "gpt2" and w.dim() == 2 and ".h." in name:
            w = w.t()  # HF's Conv1D (in, out) -> llama.cpp's (out, in)
        out[target] = w.contiguous()
    return out


def tensor_type(name: str, w: torch.Tensor, type: GGUFType, tied: bool):
    """The GGML type a tensor is written in (see the rules above)."""
    from gguf import GGMLQuantizationType as Q

    qtype = _qtypes()[type][0]
    if w.dim() < 2:
        return Q.F32
    if type in ("f32", "f16"):
        return qtype
    if w.shape[-1] % 32:
        return Q.F16
    output = name == "output.weight" or (tied and name == "token_embd.weight")
    if type in ("q4_0", "q4_1") and output:
        return Q.Q8_0
    return qtype


def _metadata(writer, config, arch: str, file_type) -> None:
    writer.add_name("lmforge export")
    writer.add_file_type(int(file_type))
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.d_model)
    writer.add_block_count(config.n_layer)
    writer.add_feed_forward_length(config.d_mlp)
    writer.add_head_count(config.n_head)
    writer.add_vocab_size(config.vocab_size)
    if arch == "gpt2":
        writer.add_layer_norm_eps(config.norm_eps)
        return
    writer.add_head_count_kv(config.n_kv_head or config.n_head)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_rope_dimension_count(config.head_dim)
    if config.head_dim != config.d_model // config.n_head:
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
    if config.rope_scaling:
        from gguf import RopeScalingType

        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(config.rope_scaling["factor"])


def _copy_tokenizer(writer, meta: dict[str, Any]) -> None:
    """Every `tokenizer.*` key of the source, in the types llama.cpp reads them with (ids uint32,
    token types int32, scores float32, flags bool, text strings)."""
    from gguf import GGUFValueType as V

    for key, value in meta.items():
        if not key.startswith("tokenizer."):
            continue
        if isinstance(value, list):
            sub = V.STRING if value and isinstance(value[0], str) else None
            if sub is None:
                sub = V.FLOAT32 if value and isinstance(value[0], float) else V.INT32
            writer.add_key_value(key, value, V.ARRAY, sub_type=sub)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_string(key, str(value))


NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5  # llama.cpp's token types


def _splits(pre: dict[str, Any] | None) -> list[str]:
    """The regex splits a byte-level pre-tokenizer applies, in order (ByteLevel's own is GPT-2's)."""
    from lmforge.tokenizer.loaders import GPT2_REGEX

    steps = (pre or {}).get("pretokenizers", [pre] if pre else [])
    out = []
    for step in steps:
        if step["type"] == "Split" and "Regex" in step.get("pattern", {}):
            out.append(step["pattern"]["Regex"])
        elif step["type"] == "Digits" and step.get("individual_digits"):
            out.append(r"\p{N}")
        elif step["type"] == "ByteLevel" and step.get("use_regex", True):
            out.append(GPT2_REGEX)
        elif step["type"] != "ByteLevel":
            raise LMForgeError(f"GGUF export: no llama.cpp pre-tokenizer for a {step['type']} step")
    return out


def tokenizer_metadata(tokenizer: Any, vocab_size: int) -> dict[str, Any]:
    """llama.cpp's `tokenizer.*` metadata for a byte-level BPE tokenizer (model "gpt2"): tokens by id
    (padded with unused ones up to the model's vocabulary), types, merges, the pre-tokenizer named by
    its regex splits (`loaders.GGUF_PRE_SPLITS` read backwards), special ids, BOS flag, chat template."""
    import json
    import tempfile

    from lmforge.tokenizer.loaders import GGUF_PRE_SPLITS

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        spec = json.loads((Path(tmp) / "tokenizer.json").read_text(encoding="utf-8"))
    model = spec["model"]
    if model.get("type") != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise LMForgeError("GGUF export writes byte-level BPE tokenizers (llama.cpp's gpt2 type) only")
    splits = _splits(spec.get("pre_tokenizer"))
    pre = next((name for name, known in GGUF_PRE_SPLITS.items() if known == splits), None)
    if pre is None:
        raise LMForgeError(f"GGUF export: no llama.cpp pre-tokenizer splits as {splits}")
    tokens: dict[int, tuple[str, int]] = {i: (t, NORMAL) for t, i in model["vocab"].items()}
    for added in spec.get("added_tokens", []):
        tokens[added["id"]] = (added["content"], CONTROL if added.get("special") else USER_DEFINED)
    size = max(vocab_size, max(tokens) + 1)
    table = [tokens.get(i, (f"[PAD{i}]", UNUSED)) for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": [t for t, _ in table],
        "tokenizer.ggml.token_type": [k for _, k in table],
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.add_bos_token": bool(tokenizer.add_bos_token),
    }
    for key in ("bos", "eos", "pad"):
        token_id = getattr(tokenizer, f"{key}_token_id", None)
        if token_id is not None:
            meta[f"tokenizer.ggml.{'padding' if key == 'pad' else key}_token_id"] = int(token_id)
    if tokenizer.chat_template:
        meta["tokenizer.chat_template"] = tokenizer.chat_template
    return meta


def write_gguf(
    model: torch.nn.Module, path: str | Path, type: GGUFType, tokenizer_meta: dict[str, Any]
) -> Path:
    """Write `model` (float) to `path` as GGUF `type`, with the tokenizer metadata given."""
    import gguf
    from gguf.quants import quantize

    from lmforge.quant.modules import is_quantized

    if is_quantized(model) or getattr(model, "quantization", None):
        raise LMForgeError("GGUF export starts from a float model; give the original, not a quantized one")
    if type not in _qtypes():
        raise LMForgeError(f"unknown GGUF type {type!r}; use one of {', '.join(_qtypes())}")
    if not any(k.startswith("tokenizer.ggml.") for k in tokenizer_meta):
        raise LMForgeError("GGUF export needs llama.cpp tokenizer metadata: give a .gguf source model")
    arch = ARCH_OF_FAMILY.get(model.config.family, model.config.family)
    named = tensors(model)
    path = Path(path)
    with atomic_file(path, expected_bytes=sum(w.numel() * w.element_size() for w in named.values())) as tmp:
        _write_gguf(gguf, quantize, tmp, arch, model, type, tokenizer_meta, named)
    return path


def _write_gguf(gguf, quantize, path: Path, arch: str, model, type: GGUFType, tokenizer_meta, named) -> None:
    writer = gguf.GGUFWriter(str(path), arch)
    _metadata(writer, model.config, arch, _qtypes()[type][1])
    _copy_tokenizer(writer, tokenizer_meta)
    if type.startswith("q"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, w in named.items():
        qtype = tensor_type(name, w, type, model.config.tie_embeddings)
        array = w.numpy().astype(np.float32)
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, array)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, array.astype(np.float16))
        else:
            writer.add_tensor(name, quantize(array, qtype), raw_dtype=qtype)  # shape from the bytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def export_gguf(source: Any, path: str | Path, type: GGUFType = "q8_0") -> Path:
    """`lmforge convert SRC OUT.gguf --to gguf --type TYPE`: load `source` (an asset name, a .gguf file
    or a checkpoint directory) in fp32 and write it. A GGUF source's `tokenizer.*` metadata is copied
    as it is; a directory's byte-level BPE tokenizer is written out as llama.cpp's (`tokenizer_metadata`)."""
    from lmforge.assets import ASSETS, asset_path
    from lmforge.io.gguf import read_metadata
    from lmforge.lm import load

    src = Path(source)
    if not src.exists() and str(source) in ASSETS:
        src = asset_path(str(source))
    lm = load(src, dtype=torch.float32, device="cpu", compile="eager")
    if src.suffix.lower() == ".gguf":
        meta = read_metadata(src)
    elif lm.tokenizer is not None:
        meta = tokenizer_metadata(lm.tokenizer, lm.config.vocab_size)
    else:
        raise LMForgeError(f"GGUF export needs a tokenizer for llama.cpp; {source} has none")
    return write_gguf(lm.model, path, type, meta)
