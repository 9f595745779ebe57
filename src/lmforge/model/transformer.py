"""One transformer for every family lmforge runs: decoders (GPT-2, Llama, Qwen2, Mistral) and
encoders (BERT), chosen by ModelConfig fields.

Design choices, all config-driven:
- embeddings: token + (learned | sinusoidal | none) positions + optional token types, optional norm;
- blocks: pre-norm (x + f(norm(x))) or post-norm (norm(x + f(x))), LayerNorm or RMSNorm;
- attention: fused qkv projection, GQA/MQA through n_kv_head, RoPE, sliding window, math or SDPA;
- MLP: GELU / GELU-tanh / ReLU / SiLU, or gated SwiGLU / GeGLU with a fused gate|up projection;
- heads: tied or untied LM head, BERT masked-LM head, or none (hidden states for embeddings).
The model is pure: `forward` takes the KV cache as an argument and never advances it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError
from lmforge.model.attention import Attention, build_attention_mask
from lmforge.model.linear import Linear
from lmforge.model.position import RotaryEmbedding, rope_inv_freq, sinusoidal_table


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """x (..., C) as a 2-D (tokens, C) matrix, for ops whose output feeds a matmul.

    Under torch.compile, a (1, 1, C) result later viewed as (1, C) for a matmul gets stride 0 on its
    size-1 dimension, and the CPU matmul then copies that input before every call (91 copies in a
    SmolLM2 decode step); a result computed as (tokens, C) in the first place keeps its plain strides."""
    return x.reshape(-1, x.shape[-1])


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x / rms(x) * weight, in Hugging Face's order: normalise in fp32, cast back, then scale.

        Written out because on the CPU both `F.rms_norm` and `mean` are composites of more ATen calls
        (a decode step runs this 61 times); sum / d is what `mean` computes."""
        xf = as_rows(x).float()
        xf = xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) / xf.shape[-1] + self.eps)
        return (self.weight * xf.to(x.dtype)).view(x.shape)


class LayerNorm(nn.LayerNorm):
    """`nn.LayerNorm` computed on (tokens, C) rows, like `RMSNorm` (see `as_rows`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(as_rows(x)).view(x.shape)


def make_norm(config: ModelConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.d_model, config.norm_eps)
    return LayerNorm(config.d_model, eps=config.norm_eps, bias=config.norm_bias)


ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swiglu": F.silu,
    "geglu": lambda x: F.gelu(x, approximate="tanh"),
}


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gated = config.gated_mlp
        self.act = ACTIVATIONS[config.mlp]
        # gated MLPs fuse gate and up into one projection: fc(x) = [gate | up]
        self.fc = Linear(config.d_model, config.d_mlp * (2 if self.gated else 1), bias=config.mlp_bias)
        self.proj = Linear(config.d_mlp, config.d_model, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(as_rows(x))
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.act(gate) * up
        else:
            h = self.act(h)
        return self.proj(h).view(*x.shape[:-1], -1)


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.pre_norm = config.norm_placement == "pre"
        self.norm1 = make_norm(config)
        self.attn = Attention(config)
        self.norm2 = make_norm(config)
        self.mlp = MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, rope, mask, cache=None, layer: int = 0) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.drop(self.attn(self.norm1(x), rope, mask, cache, layer))
            return x + self.drop(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, rope, mask, cache, layer)))
        return self.norm2(x + self.drop(self.mlp(x)))


class MLMHead(nn.Module):
    """BERT's prediction head: dense → GELU → norm → vocabulary projection (tied) + bias."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = Linear(config.d_model, config.d_model)
        self.act = ACTIVATIONS[config.mlp if not config.gated_mlp else "gelu"]
        self.norm = make_norm(config)
        self.decoder = Linear(config.d_model, config.vocab_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(h))))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        if config.position == "learned":
            self.pos_emb = nn.Embedding(config.max_seq_len, config.d_model)
        elif config.position == "sinusoidal":
            self.register_buffer(
                "pos_table", sinusoidal_table(config.max_seq_len, config.d_model), persistent=False
            )
        self.rope = RotaryEmbedding(config) if config.position == "rope" else None
        if config.type_vocab_size:
            self.type_emb = nn.Embedding(config.type_vocab_size, config.d_model)
        self.emb_norm = make_norm(config) if config.embedding_norm else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = make_norm(config) if config.final_norm else None
        self.lm_head = None
        self.mlm = None
        if config.head == "lm":
            self.lm_head = Linear(config.d_model, config.vocab_size, bias=False)
        elif config.head == "mlm":
            self.mlm = MLMHead(config)
        self.tie_weights()

    def init_buffers(self, device: torch.device | str = "cpu") -> None:
        """(Re)compute the non-persistent buffers, e.g. after building on the meta device."""
        if self.rope is not None:
            self.rope.inv_freq = rope_inv_freq(self.config).to(device)
        if self.config.position == "sinusoidal":
            self.pos_table = sinusoidal_table(self.config.max_seq_len, self.config.d_model).to(device)

    def tie_weights(self) -> None:
        """Share the input embedding with the output projection (call again after `assign` loads)."""
        if not self.config.tie_embeddings:
            return
        if self.lm_head is not None:
            self.lm_head.weight = self.tok_emb.weight
        if self.mlm is not None:
            self.mlm.decoder.weight = self.tok_emb.weight

    def init_weights(self, seed: int | None = None) -> None:
        """GPT-2-style init: N(0, 0.02), residual projections scaled by 1/√(2·n_layer), zero biases."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.config.init_std
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.zeros_(p) if name.endswith("bias") else nn.init.ones_(p)
            else:
                s = std / (2 * self.config.n_layer) ** 0.5 if name.endswith("proj.weight") else std
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=generator) * s)

    def embed(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings (+ positions, types, norm, dropout) of `inputs_embeds` (B, P, C) followed by
        those of `input_ids` (B, T): a prefix given as vectors (image features in a VLM) stands where
        token embeddings would, and positions count over the whole P + T sequence."""
        if inputs_embeds is None:
            x = self.tok_emb(input_ids)  # (B, T, C)
        elif input_ids is None or input_ids.shape[1] == 0:
            x = inputs_embeds.to(self.tok_emb.weight.dtype)  # (B, P, C)
        else:
            x = torch.cat([inputs_embeds.to(self.tok_emb.weight.dtype), self.tok_emb(input_ids)], 1)
        if self.config.position == "learned":
            x = x + self.pos_emb(positions)
        elif self.config.position == "sinusoidal":
            x = x + self.pos_table[positions].to(x.dtype)
        if self.config.type_vocab_size:
            if token_type_ids is None:
                token_type_ids = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
            x = x + self.type_emb(token_type_ids)
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        return self.drop(x)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache=None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        all_layers: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """(B, T, C) after the final norm; with all_layers, the embedding output and every block's
        output (the last one normed), as Hugging Face's `output_hidden_states` gives them.

        `rope` is `self.rope(positions, dtype)` when the caller has computed it already (the compiled
        decode step computes it outside its graph, see `lmforge.generate.engine.compiled_forward`).
        `inputs_embeds` (B, P, C) is a prefix of input vectors in front of `input_ids` (which may then
        be None): T counts both, and `positions`/`attention_mask` cover both (see `embed`)."""
        B = (input_ids if inputs_embeds is None else inputs_embeds).shape[0]
        T = (inputs_embeds.shape[1] if inputs_embeds is not None else 0) + (
            input_ids.shape[1] if input_ids is not None else 0
        )
        start = cache.length if cache is not None else 0
        if T + start > self.config.max_seq_len and self.config.position == "learned":
            raise LMForgeError(
                f"sequence of {T + start} tokens exceeds the model's context of {self.config.max_seq_len}"
            )
        device = (input_ids if input_ids is not None else inputs_embeds).device
        if positions is None:
            positions = torch.arange(start, start + T, device=device).expand(B, T)
        x = self.embed(input_ids, positions, token_type_ids, inputs_embeds)
        if rope is None and self.rope is not None:
            rope = self.rope(positions, x.dtype)
        mask = build_attention_mask(self.config, T, start + T, start, attention_mask, device)
        layers = [x]
        for i, block in enumerate(self.blocks):
            x = block(x, rope, mask, cache, i)
            layers.append(x)
        if self.norm is not None:
            x = self.norm(x)
            layers[-1] = x
        return layers if all_layers else x

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache=None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) for an LM/MLM head, hidden states (B, T, C) for head='none'; `inputs_embeds`
        (B, P, C) is a prefix of input vectors in front of `input_ids` (see `hidden_states`)."""
        h = self.hidden_states(
            input_ids,
            positions,
            cache,
            attention_mask,
            token_type_ids,
            rope=rope,
            inputs_embeds=inputs_embeds,
        )
        if self.lm_head is not None:
            return self.lm_head(h)
        if self.mlm is not None:
            return self.mlm(h)
        return h

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
