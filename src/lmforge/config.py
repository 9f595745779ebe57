"""ModelConfig: one flat, typed, validated description of every transformer lmforge builds.

Variants are fields, not subclasses: GPT-2 is learned positions + LayerNorm + GELU(tanh) + biases;
Llama is RoPE + RMSNorm + SwiGLU + GQA; Qwen2 adds q/k/v biases; Mistral adds a sliding window; BERT is
a bidirectional post-norm encoder with token-type embeddings and an embedding LayerNorm.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import LMForgeError

Norm = Literal["layernorm", "rmsnorm"]
MLP = Literal["gelu", "gelu_tanh", "relu", "silu", "swiglu", "geglu"]
Position = Literal["learned", "sinusoidal", "rope", "alibi", "none"]
Head = Literal["lm", "mlm", "none"]
Backend = Literal["sdpa", "math"]

GATED_MLPS = ("swiglu", "geglu")


@dataclass
class ModelConfig:
    """Every architectural choice of the transformer. Derived sizes (kv heads, head dim, MLP width)
    default from the others; `validate()` runs at construction and names the offending field."""

    vocab_size: int = 50304
    n_layer: int = 6
    n_head: int = 6
    n_kv_head: int | None = None  # None: = n_head (MHA); 1: MQA; in between: GQA
    d_model: int = 384
    d_mlp: int | None = None  # None: 4 * d_model
    head_dim: int | None = None  # None: d_model // n_head
    max_seq_len: int = 256
    causal: bool = True  # decoder (True) or bidirectional encoder (False)
    norm: Norm = "layernorm"
    norm_eps: float = 1e-5
    norm_bias: bool = True  # LayerNorm has a bias (RMSNorm never does)
    norm_placement: Literal["pre", "post"] = "pre"
    final_norm: bool = True  # a norm after the last block (pre-norm models)
    embedding_norm: bool = False  # a norm right after the embeddings (BERT)
    mlp: MLP = "gelu"
    position: Position = "learned"
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # {"rope_type": "linear"|"llama3", "factor": ..., ...}
    qkv_bias: bool = False
    attn_out_bias: bool = False
    mlp_bias: bool = False
    tie_embeddings: bool = True
    sliding_window: int | None = None  # a query sees itself and the previous sliding_window - 1 keys
    # Sparse Transformer's strided pattern (Child et al. 2019), its two heads' patterns united: a query
    # sees the previous sparse_stride - 1 keys and every sparse_stride-th key before them
    sparse_stride: int | None = None
    global_tokens: int = 0  # with a window or a stride: the first N positions are seen by every query
    # Linformer (Wang et al. 2020): keys and values projected along the sequence to linformer_k rows by
    # learned (linformer_k, max_seq_len) matrices E and F, one pair per layer shared by its heads;
    # every query sees every projected row, so only an encoder (causal=False) can use it
    linformer_k: int | None = None
    # Performer FAVOR+ (Choromanski et al. 2021): softmax attention estimated with this many positive
    # orthogonal random features per head (drawn once per layer, kept in the checkpoint); causal too
    performer_features: int | None = None
    type_vocab_size: int = 0  # >0: token-type (segment) embeddings, as in BERT
    head: Head = "lm"  # "lm": next-token logits; "mlm": BERT masked-LM head; "none": hidden states
    dropout: float = 0.0  # embedding and residual dropout
    attn_dropout: float = 0.0
    attn_backend: Backend = "sdpa"
    init_std: float = 0.02
    pad_token_id: int | None = None
    family: str = "custom"  # the Hugging Face model_type this config exports to (gpt2, llama, ...)
    extra: dict[str, Any] = field(default_factory=dict)  # fields kept for round-tripping

    def __post_init__(self) -> None:
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.head_dim is None and self.n_head > 0:
            self.head_dim = self.d_model // self.n_head
        if self.d_mlp is None:
            self.d_mlp = 4 * self.d_model
        self.validate()

    def validate(self) -> None:
        def fail(name: str, why: str) -> None:
            raise LMForgeError(f"invalid ModelConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("vocab_size", "n_layer", "n_head", "d_model", "max_seq_len", "d_mlp", "head_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                fail(name, "must be a positive integer")
        if not isinstance(self.n_kv_head, int) or self.n_kv_head <= 0 or self.n_head % self.n_kv_head:
            fail("n_kv_head", f"must be a positive divisor of n_head={self.n_head}")
        if self.head_dim * self.n_head != self.d_model and self.position != "rope":
            fail("head_dim", f"head_dim * n_head must equal d_model={self.d_model} for this model")
        if self.position == "rope" and self.head_dim % 2:
            fail("head_dim", "RoPE needs an even head dimension")
        choices = {
            "norm": Norm,
            "mlp": MLP,
            "position": Position,
            "head": Head,
            "attn_backend": Backend,
            "norm_placement": Literal["pre", "post"],
        }
        for name, lit in choices.items():
            allowed = lit.__args__
            if getattr(self, name) not in allowed:
                fail(name, f"must be one of {', '.join(allowed)}")
        if self.sliding_window is not None and (
            not isinstance(self.sliding_window, int) or self.sliding_window <= 0
        ):
            fail("sliding_window", "must be a positive integer or None")
        if self.sliding_window is not None and not self.causal:
            fail("sliding_window", "a sliding window needs a causal decoder (causal=True)")
        if self.sparse_stride is not None and (
            not isinstance(self.sparse_stride, int) or self.sparse_stride <= 1 or not self.causal
        ):
            fail("sparse_stride", "must be an integer > 1 (or None), in a causal decoder")
        if not isinstance(self.global_tokens, int) or self.global_tokens < 0:
            fail("global_tokens", "must be a non-negative integer")
        if self.global_tokens and self.sliding_window is None and self.sparse_stride is None:
            fail(
                "global_tokens",
                "global tokens need a sliding_window or sparse_stride (else every key is seen)",
            )
        self._validate_low_rank(fail)
        if self.head == "lm" and not self.causal:
            fail("head", "an encoder (causal=False) takes head='mlm' or 'none', not next-token 'lm'")
        if self.head == "mlm" and self.causal:
            fail("head", "the masked-LM head needs a bidirectional encoder (causal=False)")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                fail(name, "must be in [0, 1)")
        if self.norm_eps <= 0:
            fail("norm_eps", "must be positive")
        if self.type_vocab_size < 0:
            fail("type_vocab_size", "must be >= 0")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if kind not in ("linear", "llama3", "default"):
                fail("rope_scaling", "supported rope_type values are linear, llama3, default")

    def _validate_low_rank(self, fail) -> None:
        """Linformer and Performer replace softmax attention: they refuse what they cannot carry."""
        for name in ("linformer_k", "performer_features"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                fail(name, "must be a positive integer or None")
            if value is None:
                continue
            patterned = self.sliding_window is not None or self.sparse_stride is not None
            if patterned or self.position == "alibi":
                fail(name, "does not combine with sliding_window, sparse_stride or position='alibi'")
        if self.linformer_k is not None and self.performer_features is not None:
            fail("performer_features", "choose one of linformer_k and performer_features")
        if self.linformer_k is not None and self.causal:
            fail(
                "linformer_k",
                "Linformer mixes every position into its projections, so it cannot be causal: use it in "
                "an encoder (causal=False) or use performer_features in a decoder",
            )
        if self.linformer_k is not None and self.linformer_k > self.max_seq_len:
            fail("linformer_k", f"must be at most max_seq_len={self.max_seq_len}")

    @property
    def gated_mlp(self) -> bool:
        return self.mlp in GATED_MLPS

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise LMForgeError(f"unknown ModelConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def replace(self, **changes: Any) -> ModelConfig:
        return ModelConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def encoder(
        cls, n_layer: int, n_head: int, d_model: int, max_seq_len: int, vocab_size: int = 1, **overrides: Any
    ) -> ModelConfig:
        """A bidirectional pre-norm encoder with no output head (the ViT's blocks, CLIP's text tower):
        GELU MLP, biases everywhere, untied; `overrides` set any other field (e.g. `position`)."""
        fields = dict(
            vocab_size=vocab_size,
            n_layer=n_layer,
            n_head=n_head,
            d_model=d_model,
            max_seq_len=max_seq_len,
            causal=False,
            position="none",
            head="none",
            mlp="gelu",
            qkv_bias=True,
            attn_out_bias=True,
            mlp_bias=True,
            tie_embeddings=False,
        )
        return cls(**{**fields, **overrides})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named starting point (`lmforge pretrain --preset ...`), with any field overridden."""
        if name not in PRESETS:
            raise LMForgeError(f"unknown preset '{name}'; presets: {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    def num_parameters(self, include_embeddings: bool = True) -> int:
        """Parameter count computed from the config (matches the built model)."""
        d, h = self.d_model, self.head_dim
        attn = d * h * (self.n_head + 2 * self.n_kv_head) + self.n_head * h * d
        attn += (h * (self.n_head + 2 * self.n_kv_head) if self.qkv_bias else 0) + (
            d if self.attn_out_bias else 0
        )
        mlp_in = self.d_mlp * (2 if self.gated_mlp else 1)
        mlp = d * mlp_in + self.d_mlp * d + ((mlp_in + d) if self.mlp_bias else 0)
        norm = d * (2 if self.norm == "layernorm" and self.norm_bias else 1)
        attn += 2 * self.linformer_k * self.max_seq_len if self.linformer_k else 0  # E and F
        total = self.n_layer * (attn + mlp + 2 * norm) + (norm if self.final_norm else 0)
        emb = self.vocab_size * d
        emb += self.max_seq_len * d if self.position == "learned" else 0
        emb += self.type_vocab_size * d + (norm if self.embedding_norm else 0)
        if self.head == "lm" and not self.tie_embeddings:
            emb += self.vocab_size * d
        if self.head == "mlm":
            emb += d * d + d + norm + self.vocab_size + (0 if self.tie_embeddings else self.vocab_size * d)
        return total + (emb if include_embeddings else 0)

    def save(self, path: str | Path) -> None:
        from lmforge.io.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))


PRESETS: dict[str, dict[str, Any]] = {
    # nanoGPT's shakespeare-scale GPT: 6 layers, 6 heads, 384 wide, 256 context.
    "gpt-nano": dict(
        n_layer=6,
        n_head=6,
        d_model=384,
        max_seq_len=256,
        mlp="gelu_tanh",
        family="gpt2",
        qkv_bias=True,
        attn_out_bias=True,
        mlp_bias=True,
    ),
    "gpt-tiny": dict(
        n_layer=4,
        n_head=4,
        d_model=128,
        max_seq_len=256,
        mlp="gelu_tanh",
        family="gpt2",
        qkv_bias=True,
        attn_out_bias=True,
        mlp_bias=True,
    ),
    "gpt2-small": dict(
        n_layer=12,
        n_head=12,
        d_model=768,
        max_seq_len=1024,
        vocab_size=50257,
        mlp="gelu_tanh",
        family="gpt2",
        qkv_bias=True,
        attn_out_bias=True,
        mlp_bias=True,
    ),
    "llama-nano": dict(
        n_layer=6,
        n_head=6,
        n_kv_head=2,
        d_model=384,
        d_mlp=1024,
        max_seq_len=256,
        norm="rmsnorm",
        mlp="swiglu",
        position="rope",
        family="llama",
    ),
    "llama-tiny": dict(
        n_layer=4,
        n_head=4,
        n_kv_head=2,
        d_model=128,
        d_mlp=352,
        max_seq_len=256,
        norm="rmsnorm",
        mlp="swiglu",
        position="rope",
        family="llama",
    ),
    "bert-tiny": dict(
        n_layer=4,
        n_head=4,
        d_model=128,
        max_seq_len=256,
        causal=False,
        head="mlm",
        norm_placement="post",
        final_norm=False,
        embedding_norm=True,
        mlp="gelu",
        type_vocab_size=2,
        qkv_bias=True,
        attn_out_bias=True,
        mlp_bias=True,
        norm_eps=1e-12,
        family="bert",
    ),
}
