"""Hugging Face families: config.json fields and tensor names, both directions.

Each family is data: a function from HF config fields to a ModelConfig (and back) and a table of
tensor rules `(our name, [HF names], op)`, where op is "copy", "cat" (HF keeps q/k/v or gate/up
apart; we fuse them) or "t" (GPT-2's Conv1D stores weights transposed). The same table converts
in both directions. llama, qwen2 and mistral share one layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError

Rule = tuple[str, list[str], str]


# ----------------------------------------------------------------------------- configs


def _rope_from_hf(cfg: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    params = cfg.get("rope_parameters") or {}
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    scaling = cfg.get("rope_scaling") or (params if params.get("rope_type", "default") != "default" else None)
    if scaling:
        scaling = {k: v for k, v in scaling.items() if k != "rope_theta"}
        if scaling.get("rope_type", scaling.get("type", "default")) == "default":
            scaling = None
    return float(theta), scaling


def llama_config(cfg: dict[str, Any], family: str) -> ModelConfig:
    theta, scaling = _rope_from_hf(cfg)
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise LMForgeError(f"{family} checkpoints with hidden_act={act!r} are not supported (only silu)")
    window = None
    if family == "mistral":
        window = cfg.get("sliding_window")
    elif family == "qwen2" and cfg.get("use_sliding_window"):
        raise LMForgeError("qwen2 with use_sliding_window=true (per-layer windows) is not supported")
    qkv_bias = cfg.get("attention_bias", False) or family == "qwen2"
    d, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    return ModelConfig(
        vocab_size=cfg["vocab_size"],
        n_layer=cfg["num_hidden_layers"],
        n_head=nh,
        n_kv_head=cfg.get("num_key_value_heads") or nh,
        d_model=d,
        d_mlp=cfg["intermediate_size"],
        head_dim=cfg.get("head_dim") or d // nh,
        max_seq_len=cfg.get("max_position_embeddings", 2048),
        norm="rmsnorm",
        norm_eps=cfg.get("rms_norm_eps", 1e-6),
        mlp="swiglu",
        position="rope",
        rope_theta=theta,
        rope_scaling=scaling,
        qkv_bias=qkv_bias,
        attn_out_bias=cfg.get("attention_bias", False),
        mlp_bias=cfg.get("mlp_bias", False),
        tie_embeddings=cfg.get("tie_word_embeddings", False),
        sliding_window=window,
        pad_token_id=cfg.get("pad_token_id"),
        family=family,
    )


def llama_config_to_hf(c: ModelConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "architectures": [
            {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}[
                c.family
            ]
        ],
        "model_type": c.family,
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "intermediate_size": c.d_mlp,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim,
        "max_position_embeddings": c.max_seq_len,
        "rms_norm_eps": c.norm_eps,
        "hidden_act": "silu",
        "rope_theta": c.rope_theta,
        "rope_scaling": c.rope_scaling,
        "tie_word_embeddings": c.tie_embeddings,
        "pad_token_id": c.pad_token_id,
    }
    if c.family == "llama":
        out["attention_bias"] = c.qkv_bias
        out["mlp_bias"] = c.mlp_bias
    if c.family == "mistral":
        out["sliding_window"] = c.sliding_window
    if c.family == "qwen2":
        out["use_sliding_window"] = False
    return out


def dense_attention(c: ModelConfig) -> bool:
    """No attention pattern the HF/GGUF formats have no field for (Sparse Transformer strides, global
    tokens, Linformer, Performer): a checkpoint with one is written in lmforge's own format, never
    silently without it."""
    low_rank = c.linformer_k is not None or c.performer_features is not None
    return c.sparse_stride is None and not c.global_tokens and not low_rank


def llama_expressible(c: ModelConfig) -> bool:
    base = (
        dense_attention(c)
        and c.causal
        and c.norm == "rmsnorm"
        and c.mlp == "swiglu"
        and c.position == "rope"
        and c.norm_placement == "pre"
        and c.final_norm
        and not c.embedding_norm
        and not c.type_vocab_size
        and c.head == "lm"
    )
    if c.family == "llama":
        return base and c.qkv_bias == c.attn_out_bias and c.sliding_window is None
    if c.family == "qwen2":
        return base and c.qkv_bias and not c.attn_out_bias and not c.mlp_bias and c.sliding_window is None
    if c.family == "mistral":
        return base and not (c.qkv_bias or c.attn_out_bias or c.mlp_bias)
    return False


GPT2_ACTS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}


def gpt2_config(cfg: dict[str, Any], family: str) -> ModelConfig:
    act = cfg.get("activation_function", "gelu_new")
    if act not in GPT2_ACTS:
        raise LMForgeError(f"gpt2 activation_function={act!r} is not supported ({', '.join(GPT2_ACTS)})")
    if cfg.get("scale_attn_by_inverse_layer_idx") or cfg.get("reorder_and_upcast_attn"):
        raise LMForgeError("gpt2 checkpoints with scale_attn_by_inverse_layer_idx are not supported")
    d = cfg["n_embd"]
    return ModelConfig(
        vocab_size=cfg["vocab_size"],
        n_layer=cfg["n_layer"],
        n_head=cfg["n_head"],
        d_model=d,
        d_mlp=cfg.get("n_inner") or 4 * d,
        max_seq_len=cfg.get("n_positions", 1024),
        norm="layernorm",
        norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
        mlp=GPT2_ACTS[act],
        position="learned",
        qkv_bias=True,
        attn_out_bias=True,
        mlp_bias=True,
        tie_embeddings=cfg.get("tie_word_embeddings", True),
        pad_token_id=cfg.get("pad_token_id"),
        family="gpt2",
    )


def gpt2_config_to_hf(c: ModelConfig) -> dict[str, Any]:
    act = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}[c.mlp]
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_embd": c.d_model,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": c.d_mlp,
        "n_positions": c.max_seq_len,
        "layer_norm_epsilon": c.norm_eps,
        "activation_function": act,
        "tie_word_embeddings": c.tie_embeddings,
        "pad_token_id": c.pad_token_id,
    }


def gpt2_expressible(c: ModelConfig) -> bool:
    return (
        dense_attention(c)
        and c.causal
        and c.norm == "layernorm"
        and c.norm_bias
        and c.mlp in ("gelu_tanh", "gelu", "relu")
        and c.position == "learned"
        and c.norm_placement == "pre"
        and c.final_norm
        and not c.embedding_norm
        and c.qkv_bias
        and c.attn_out_bias
        and c.mlp_bias
        and c.n_kv_head == c.n_head
        and c.sliding_window is None
        and not c.type_vocab_size
        and c.head == "lm"
    )


def bert_config(cfg: dict[str, Any], family: str) -> ModelConfig:
    act = cfg.get("hidden_act", "gelu")
    acts = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu"}
    if act not in acts:
        raise LMForgeError(f"bert hidden_act={act!r} is not supported ({', '.join(acts)})")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise LMForgeError("bert checkpoints with relative position embeddings are not supported")
    archs = cfg.get("architectures") or []
    return ModelConfig(
        vocab_size=cfg["vocab_size"],
        n_layer=cfg["num_hidden_layers"],
        n_head=cfg["num_attention_heads"],
        d_model=cfg["hidden_size"],
        d_mlp=cfg["intermediate_size"],
        max_seq_len=cfg.get("max_position_embeddings", 512),
        causal=False,
        norm="layernorm",
        norm_eps=cfg.get("layer_norm_eps", 1e-12),
        norm_placement="post",
        final_norm=False,
        embedding_norm=True,
        mlp=acts[act],
        position="learned",
        qkv_bias=True,
        attn_out_bias=True,
        mlp_bias=True,
        tie_embeddings=cfg.get("tie_word_embeddings", True),
        type_vocab_size=cfg.get("type_vocab_size", 2),
        head="mlm" if "BertForMaskedLM" in archs or "BertForPreTraining" in archs else "none",
        pad_token_id=cfg.get("pad_token_id", 0),
        family="bert",
    )


def bert_config_to_hf(c: ModelConfig) -> dict[str, Any]:
    return {
        "architectures": ["BertForMaskedLM" if c.head == "mlm" else "BertModel"],
        "model_type": "bert",
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "intermediate_size": c.d_mlp,
        "hidden_act": {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}[c.mlp],
        "max_position_embeddings": c.max_seq_len,
        "type_vocab_size": c.type_vocab_size,
        "layer_norm_eps": c.norm_eps,
        "tie_word_embeddings": c.tie_embeddings,
        "pad_token_id": c.pad_token_id if c.pad_token_id is not None else 0,
        "position_embedding_type": "absolute",
    }


def bert_expressible(c: ModelConfig) -> bool:
    return (
        dense_attention(c)
        and not c.causal
        and c.norm == "layernorm"
        and c.norm_bias
        and c.norm_placement == "post"
        and not c.final_norm
        and c.embedding_norm
        and c.position == "learned"
        and c.mlp in ("gelu", "gelu_tanh", "relu")
        and c.qkv_bias
        and c.attn_out_bias
        and c.mlp_bias
        and c.n_kv_head == c.n_head
        and c.type_vocab_size > 0
        and c.head in ("mlm", "none")
    )


# ----------------------------------------------------------------------------- tensors


def llama_rules(c: ModelConfig) -> list[Rule]:
    rules: list[Rule] = [
        ("tok_emb.weight", ["model.embed_tokens.weight"], "copy"),
        ("norm.weight", ["model.norm.weight"], "copy"),
    ]
    if not c.tie_embeddings:
        rules.append(("lm_head.weight", ["lm_head.weight"], "copy"))
    for i in range(c.n_layer):
        hf, us = f"model.layers.{i}.", f"blocks.{i}."
        att = [f"{hf}self_attn.{p}_proj" for p in "qkv"]
        rules += [
            (us + "norm1.weight", [hf + "input_layernorm.weight"], "copy"),
            (us + "norm2.weight", [hf + "post_attention_layernorm.weight"], "copy"),
            (us + "attn.qkv.weight", [a + ".weight" for a in att], "cat"),
            (us + "attn.proj.weight", [hf + "self_attn.o_proj.weight"], "copy"),
            (us + "mlp.fc.weight", [hf + "mlp.gate_proj.weight", hf + "mlp.up_proj.weight"], "cat"),
            (us + "mlp.proj.weight", [hf + "mlp.down_proj.weight"], "copy"),
        ]
        if c.qkv_bias:
            rules.append((us + "attn.qkv.bias", [a + ".bias" for a in att], "cat"))
        if c.attn_out_bias:
            rules.append((us + "attn.proj.bias", [hf + "self_attn.o_proj.bias"], "copy"))
        if c.mlp_bias:
            rules += [
                (us + "mlp.fc.bias", [hf + "mlp.gate_proj.bias", hf + "mlp.up_proj.bias"], "cat"),
                (us + "mlp.proj.bias", [hf + "mlp.down_proj.bias"], "copy"),
            ]
    return rules


def gpt2_rules(c: ModelConfig) -> list[Rule]:
    rules: list[Rule] = [
        ("tok_emb.weight", ["transformer.wte.weight"], "copy"),
        ("pos_emb.weight", ["transformer.wpe.weight"], "copy"),
        ("norm.weight", ["transformer.ln_f.weight"], "copy"),
        ("norm.bias", ["transformer.ln_f.bias"], "copy"),
    ]
    if not c.tie_embeddings:
        rules.append(("lm_head.weight", ["lm_head.weight"], "copy"))
    for i in range(c.n_layer):
        hf, us = f"transformer.h.{i}.", f"blocks.{i}."
        for ours, theirs in [("norm1", "ln_1"), ("norm2", "ln_2")]:
            rules += [(f"{us}{ours}.{p}", [f"{hf}{theirs}.{p}"], "copy") for p in ("weight", "bias")]
        for ours, theirs in [
            ("attn.qkv", "attn.c_attn"),
            ("attn.proj", "attn.c_proj"),
            ("mlp.fc", "mlp.c_fc"),
            ("mlp.proj", "mlp.c_proj"),
        ]:
            rules += [
                (f"{us}{ours}.weight", [f"{hf}{theirs}.weight"], "t"),
                (f"{us}{ours}.bias", [f"{hf}{theirs}.bias"], "copy"),
            ]
    return rules


def bert_rules(c: ModelConfig) -> list[Rule]:
    p = "bert." if c.head == "mlm" else ""
    e = p + "embeddings."
    rules: list[Rule] = [
        ("tok_emb.weight", [e + "word_embeddings.weight"], "copy"),
        ("pos_emb.weight", [e + "position_embeddings.weight"], "copy"),
        ("type_emb.weight", [e + "token_type_embeddings.weight"], "copy"),
        ("emb_norm.weight", [e + "LayerNorm.weight"], "copy"),
        ("emb_norm.bias", [e + "LayerNorm.bias"], "copy"),
    ]
    for i in range(c.n_layer):
        hf, us = f"{p}encoder.layer.{i}.", f"blocks.{i}."
        for x in ("weight", "bias"):
            rules += [
                (
                    f"{us}attn.qkv.{x}",
                    [f"{hf}attention.self.{n}.{x}" for n in ("query", "key", "value")],
                    "cat",
                ),
                (f"{us}attn.proj.{x}", [f"{hf}attention.output.dense.{x}"], "copy"),
                (f"{us}norm1.{x}", [f"{hf}attention.output.LayerNorm.{x}"], "copy"),
                (f"{us}mlp.fc.{x}", [f"{hf}intermediate.dense.{x}"], "copy"),
                (f"{us}mlp.proj.{x}", [f"{hf}output.dense.{x}"], "copy"),
                (f"{us}norm2.{x}", [f"{hf}output.LayerNorm.{x}"], "copy"),
            ]
    if c.head == "mlm":
        t = "cls.predictions.transform."
        rules += [
            ("mlm.dense.weight", [t + "dense.weight"], "copy"),
            ("mlm.dense.bias", [t + "dense.bias"], "copy"),
            ("mlm.norm.weight", [t + "LayerNorm.weight"], "copy"),
            ("mlm.norm.bias", [t + "LayerNorm.bias"], "copy"),
            ("mlm.decoder.bias", ["cls.predictions.bias"], "copy"),
        ]
        if not c.tie_embeddings:
            rules.append(("mlm.decoder.weight", ["cls.predictions.decoder.weight"], "copy"))
    return rules


@dataclass(frozen=True)
class Family:
    config_from_hf: Callable[[dict[str, Any], str], ModelConfig]
    config_to_hf: Callable[[ModelConfig], dict[str, Any]]
    expressible: Callable[[ModelConfig], bool]
    rules: Callable[[ModelConfig], list[Rule]]
    # HF names that carry no weights we need (buffers, unused poolers)
    ignored: tuple[str, ...] = ()


_LLAMA = Family(llama_config, llama_config_to_hf, llama_expressible, llama_rules, ("rotary_emb.inv_freq",))
FAMILIES: dict[str, Family] = {
    "llama": _LLAMA,
    "qwen2": _LLAMA,
    "mistral": _LLAMA,
    "gpt2": Family(
        gpt2_config, gpt2_config_to_hf, gpt2_expressible, gpt2_rules, (".attn.bias", ".attn.masked_bias")
    ),
    "bert": Family(
        bert_config,
        bert_config_to_hf,
        bert_expressible,
        bert_rules,
        ("pooler.", "position_ids", "cls.seq_relationship", "cls.predictions.decoder."),
    ),
}


def family_for(model_type: str | None) -> Family:
    if model_type not in FAMILIES:
        raise LMForgeError(
            f"unsupported architecture '{model_type}'; supported model_type values: {', '.join(FAMILIES)}"
        )
    return FAMILIES[model_type]


def config_from_hf(cfg: dict[str, Any]) -> ModelConfig:
    model_type = cfg.get("model_type")
    return family_for(model_type).config_from_hf(cfg, model_type)


def split_sizes(c: ModelConfig, ours: str, n: int) -> list[int]:
    """How a fused tensor splits back into its HF parts."""
    if ".attn.qkv." in ours:
        return [c.n_head * c.head_dim, c.n_kv_head * c.head_dim, c.n_kv_head * c.head_dim]
    return [c.d_mlp] * n


WRAPPER_PREFIXES = ("transformer.", "model.", "bert.")


def _normalize_hf_name(name: str) -> str:
    """Old BERT checkpoints call LayerNorm parameters gamma/beta."""
    return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def state_from_hf(
    c: ModelConfig, names: list[str], get: Callable[[str], torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """Build our state dict from HF tensors, reading each one lazily through `get(name)`."""
    family = family_for(c.family)
    by_norm = {_normalize_hf_name(n): n for n in names}
    used: set[str] = set()

    def lookup(hf_name: str) -> torch.Tensor:
        # checkpoints saved from the bare base model (GPT2Model, LlamaModel, ...) lack the wrapper prefix
        candidates = [hf_name] + [hf_name[len(p) :] for p in WRAPPER_PREFIXES if hf_name.startswith(p)]
        for candidate in candidates:
            if candidate in by_norm:
                used.add(by_norm[candidate])
                return get(by_norm[candidate])
        raise LMForgeError(f"{source}: tensor '{hf_name}' is missing from the checkpoint")

    state = {}
    for ours, theirs, op in family.rules(c):
        tensors = [lookup(n) for n in theirs]
        if op == "cat":
            state[ours] = torch.cat(tensors, dim=0)
        elif op == "t":
            state[ours] = tensors[0].t().contiguous()
        else:
            state[ours] = tensors[0]
    leftover = [n for n in names if n not in used and not any(s in n for s in family.ignored)]
    # an untied lm_head stored next to tied embeddings is a duplicate, not an unknown tensor
    leftover = [n for n in leftover if not (c.tie_embeddings and n.endswith("lm_head.weight"))]
    if leftover:
        shown = ", ".join(leftover[:5]) + (" ..." if len(leftover) > 5 else "")
        raise LMForgeError(f"{source}: unexpected tensors for a {c.family} model: {shown}")
    return state


def state_to_hf(c: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for ours, theirs, op in family_for(c.family).rules(c):
        t = state[ours]
        if op == "cat":
            for name, part in zip(theirs, t.split(split_sizes(c, ours, len(theirs)), dim=0)):
                out[name] = part.contiguous()
        elif op == "t":
            out[theirs[0]] = t.t().contiguous()
        else:
            out[theirs[0]] = t.contiguous()
    return out
