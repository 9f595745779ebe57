"""Multi-head attention with grouped K/V heads, RoPE, an optional KV cache and two backends.

`math` is the readable reference (explicit softmax); `sdpa` calls PyTorch's fused
scaled_dot_product_attention. Both take the same boolean mask (True = may attend) built once per
forward by `build_attention_mask`.

Two ModelConfig fields replace the softmax over every key with a cheaper computation:
- `linformer_k`: Linformer's low-rank attention, softmax(Q (E K)ᵀ / √d) (F V), with learned E, F of
  shape (k, max_seq_len), one pair per layer shared by its heads. Encoders only: a projected row mixes
  every position, so no causal mask can be applied after it (ModelConfig refuses causal=True).
- `performer_features`: Performer's FAVOR+, softmax attention estimated with m positive orthogonal
  random features φ (one (m, head_dim) draw per layer, shared by its heads, saved with the weights).
  Causal by blockwise prefix sums of φ(k) vᵀ; generation goes through the ordinary KV cache, each step
  summing φ(k) over the cached keys (exact, O(S·m) per step rather than a recurrent O(m·d) state).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError
from lmforge.model.linear import Linear
from lmforge.model.position import apply_rope


def alibi_slopes(n_head: int) -> torch.Tensor:
    """ALiBi's per-head slopes (Press et al. 2022): 2^(-8i/n) for n a power of two; otherwise those of
    the power of two below, then every other slope of the one above."""

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    low = 2 ** int(math.log2(n_head))
    slopes = power_of_two(low) + power_of_two(2 * low)[0::2][: n_head - low]
    return torch.tensor(slopes)


def build_attention_mask(
    config: ModelConfig,
    q_len: int,
    kv_len: int,
    start: int,
    attention_mask: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor | None:
    """Boolean (B|1, 1, T, S) mask over key slots, or None when no mask is needed.

    Queries sit at slots start..start+T-1 and keys at 0..S-1. Causal models see keys at or before the
    query's slot, inside the sliding window; with `sparse_stride` s also every s-th key before the last
    s (Sparse Transformer's strided pattern); with `global_tokens` g also the first g keys. Padding keys
    (attention_mask == 0) are hidden. A query always sees its own slot so padding rows never get an
    empty softmax.
    """
    if not config.causal:
        if attention_mask is None:
            return None
        return attention_mask[:, None, None, :].bool()
    if config.position == "alibi":
        return _alibi_mask(config, q_len, kv_len, start, attention_mask, device)
    banded = config.sliding_window is not None or config.sparse_stride is not None
    if attention_mask is None and not banded and (start == 0 or q_len == 1):
        return None  # plain causal (is_causal) or one new token seeing the whole cache
    q_pos = torch.arange(start, start + q_len, device=device)[:, None]
    k_pos = torch.arange(kv_len, device=device)[None, :]
    allowed = k_pos <= q_pos
    if banded:
        distance = q_pos - k_pos
        near = distance < (config.sliding_window or config.sparse_stride)
        if config.sparse_stride is not None:
            near = near | (distance % config.sparse_stride == 0)
        if config.global_tokens:
            near = near | (k_pos < config.global_tokens)
        allowed = allowed & near
    allowed = allowed[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, :].bool()
        allowed = allowed | (k_pos == q_pos)[None, None]
    return allowed


def _alibi_mask(
    config: ModelConfig,
    q_len: int,
    kv_len: int,
    start: int,
    attention_mask: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor:
    """ALiBi as an additive float mask (B|1, nh, T, S): -slope_h x |query slot - key slot|, -inf where
    the boolean mask (causal, window, padding) hides the key."""
    plain = dataclasses.replace(config, position="none")
    allowed = build_attention_mask(plain, q_len, kv_len, start, attention_mask, device)
    if allowed is None:  # plain causal or bidirectional: build it explicitly
        q_pos = torch.arange(start, start + q_len, device=device)[:, None]
        k_pos = torch.arange(kv_len, device=device)[None, :]
        allowed = ((k_pos <= q_pos) if config.causal else torch.ones_like(k_pos - q_pos, dtype=torch.bool))[
            None, None
        ]
    q_pos = torch.arange(start, start + q_len, device=device, dtype=torch.float32)[:, None]
    k_pos = torch.arange(kv_len, device=device, dtype=torch.float32)[None, :]
    slopes = alibi_slopes(config.n_head).to(device)[:, None, None]  # (nh, 1, 1)
    bias = -slopes * (q_pos - k_pos).abs()  # (nh, T, S)
    return bias[None].masked_fill(~allowed, float("-inf"))


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        qkv_out = (config.n_head + 2 * config.n_kv_head) * config.head_dim
        self.qkv = Linear(config.d_model, qkv_out, bias=config.qkv_bias)
        self.proj = Linear(config.n_head * config.head_dim, config.d_model, bias=config.attn_out_bias)
        if config.linformer_k is not None:  # E projects the keys, F the values, along the sequence
            shape = (config.linformer_k, config.max_seq_len)
            self.linformer_e = nn.Parameter(torch.randn(shape) * config.init_std)
            self.linformer_f = nn.Parameter(torch.randn(shape) * config.init_std)
        if config.performer_features is not None:
            omega = orthogonal_random_features(config.performer_features, config.head_dim)
            self.register_buffer("performer_omega", omega)  # persistent: the checkpoint keeps the draw

    def project(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, nh, T, hd), k and v (B, nkv, T, hd) of x (B, T, C), RoPE applied to q and k."""
        B, T, _ = x.shape
        nh, nkv = self.n_head, self.n_kv_head
        qkv = self.qkv(x).view(B, T, nh + 2 * nkv, self.head_dim)  # heads: q..., k..., v...
        qk, v = qkv[:, :, : nh + nkv], qkv[:, :, nh + nkv :]
        if rope is not None:
            qk = apply_rope(qk, *rope)  # q and k heads rotated together
        return qk[:, :, :nh].transpose(1, 2), qk[:, :, nh:].transpose(1, 2), v.transpose(1, 2)

    @torch.no_grad()
    def probs(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """The attention weights (B, nh, T, S) this layer gives x (no cache), in fp32, rows summing to
        1, for inspection (the training monitor's entropy): softmax weights over the keys (Linformer:
        over its k projected rows), FAVOR+'s normalised φ(q) φ(k)ᵀ for Performer."""
        q, k, _ = self.project(x, rope)
        q, k = q.float(), k.float().repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        T = q.shape[2]
        if mask is None and self.config.causal:
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()[None, None]
        if self.config.performer_features is not None:
            phi_q, phi_k = favor_pair(q, k, self.performer_omega)
            weights = phi_q @ phi_k.transpose(-2, -1)
            weights = weights * mask if mask is not None else weights
            return weights / weights.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        if self.config.linformer_k is not None:
            keep = mask[:, :, -1, :, None].float() if mask is not None else 1.0
            k, mask = self.linformer_e[:, : k.shape[2]].float() @ (k * keep), None
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, nh, T, S)
        if mask is not None and mask.is_floating_point():  # ALiBi's additive bias
            scores = scores + mask.float()
        elif mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(dim=-1)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        cache=None,
        layer: int = 0,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.project(x, rope)
        start = 0
        if cache is not None:
            start = cache.length
            k, v = cache.update(layer, k, v)  # (B, nkv, S, hd)
        # T > 1 first: under torch.compile the cache fill level `start` is symbolic, T is not
        is_causal = self.config.causal and mask is None and T > 1 and start == 0
        dropout = self.config.attn_dropout if self.training else 0.0
        if mask is not None and mask.is_floating_point():
            mask = mask.to(q.dtype)  # an additive mask (ALiBi) in the dtype of the scores
        if self.config.linformer_k is not None:
            y = linformer_attention(q, k, v, self.linformer_e, self.linformer_f, mask, dropout)
        elif self.config.performer_features is not None:
            y = performer_attention(q, k, v, self.performer_omega, mask, is_causal)
        elif T == 1 and not dropout and torch.compiler.is_compiling():
            y = single_query_attention(q, k, v, mask)  # a compiled decode step
        elif self.config.attn_backend == "sdpa":
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                dropout_p=dropout,
                is_causal=is_causal,
                enable_gqa=self.n_kv_head != self.n_head,
            )
        else:
            y = math_attention(q, k, v, mask, is_causal, dropout)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)  # (B, T, nh*hd)
        return self.proj(y)


def single_query_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Attention for one query token per row, (B, nh, 1, hd), as broadcast products and sums.

    For torch.compile's decode step: inductor fuses these into a few loops that read each cached key
    and value once, with no call out of the graph (an SDPA call per layer costs more than the reads
    at this size). Eagerly it would materialise (B, nkv, groups, S, hd) products: eager steps use
    SDPA or `math_attention`. `mask` is (B|1, 1, 1, S), True = may attend."""
    B, nh, _, hd = q.shape
    nkv = k.shape[1]
    q = q.view(B, nkv, nh // nkv, 1, hd).float()  # the query heads of each K/V head
    scores = (q * k[:, :, None].float()).sum(-1) / math.sqrt(hd)  # (B, nkv, groups, S)
    if mask is not None and mask.is_floating_point():  # additive, (B|1, nh, 1, S)
        scores = scores + mask.float().view(mask.shape[0], nkv, nh // nkv, -1)
    elif mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(dim=-1)
    y = (probs[..., None] * v[:, :, None].float()).sum(-2)  # (B, nkv, groups, hd)
    return y.to(v.dtype).reshape(B, nh, 1, hd)


def math_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Reference attention: softmax(q kᵀ / √d + mask) v.

    For GQA the query heads of one K/V head are laid side by side as extra query rows, (B, nkv,
    groups·T, hd), so K and V are read as they are, never repeated."""
    B, nh, T, hd = q.shape
    nkv, S = k.shape[1], k.shape[2]
    groups = nh // nkv
    q = q.reshape(B, nkv, groups * T, hd)
    scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(hd)  # (B, nkv, groups*T, S)
    if is_causal:
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)[None, None]
    if mask is not None and mask.is_floating_point():  # additive (ALiBi), (B|1, nh, T, S)
        scores = scores.view(B, nkv, groups, T, S) + mask.float().view(mask.shape[0], nkv, groups, T, S)
        scores = scores.view(B, nkv, groups * T, S)
    elif mask is not None:
        scores = scores.view(B, nkv, groups, T, S).masked_fill(~mask[:, :, None], float("-inf"))
        scores = scores.view(B, nkv, groups * T, S)
    probs = scores.softmax(dim=-1).to(v.dtype)
    if dropout:
        probs = F.dropout(probs, dropout)
    return (probs @ v).view(B, nh, T, hd)


def linformer_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    e: torch.Tensor,
    f: torch.Tensor,
    mask: torch.Tensor | None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Linformer: softmax(q (E k)ᵀ / √d) (F v), E and F (k_proj, max_seq_len) applied to the first S
    columns (a shorter sequence is one zero-padded to max_seq_len). Padding keys (mask (B, 1, 1, S),
    True = real) are zeroed before the projection, so they add nothing to any projected row."""
    S = k.shape[2]
    if e.shape[1] < S:
        raise LMForgeError(f"Linformer projects at most max_seq_len={e.shape[1]} keys, got {S}")
    if mask is not None:
        keep = mask[:, :, -1, :, None].to(k.dtype)  # (B, 1, S, 1): a per-key padding mask
        k, v = k * keep, v * keep
    k = e[:, :S].to(k.dtype) @ k  # (B, nkv, k_proj, hd)
    v = f[:, :S].to(v.dtype) @ v
    return math_attention(q, k, v, None, False, dropout)


def orthogonal_random_features(m: int, d: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(m, d) random features for FAVOR+: blocks of d orthonormal rows (QR of a Gaussian matrix), each row
    scaled by the norm of an independent d-dim Gaussian so that rows are marginally N(0, I_d)."""
    blocks = []
    for _ in range(math.ceil(m / d)):
        basis, _ = torch.linalg.qr(torch.randn(d, d, generator=generator))
        blocks.append(basis.T)
    rows = torch.cat(blocks)[:m]
    return rows * torch.randn(m, d, generator=generator).norm(dim=1, keepdim=True)


def favor_features(x: torch.Tensor, omega: torch.Tensor, is_query: bool) -> torch.Tensor:
    """FAVOR+'s positive features φ(x) = exp(ωᵀx - |x|²/2) / √m of x (B, h, T, d) already scaled by
    d^(-1/4), in fp32, each multiplied by a constant that cancels in the attention ratio: a query row by
    exp(|x|²/2 - max ωᵀx) (its largest feature is 1), every key by exp(-max|ω|²/2), which bounds the
    exponent by 0 (ωᵀx - |x|²/2 ≤ |ω|²/2) without looking at other positions, so causality is exact."""
    proj = x @ omega.T  # (B, h, T, m)
    if is_query:
        exponent = proj - proj.amax(dim=-1, keepdim=True).detach()
    else:
        exponent = proj - x.pow(2).sum(-1, keepdim=True) / 2 - omega.pow(2).sum(-1).max() / 2
    return torch.exp(exponent) / math.sqrt(omega.shape[0])


def favor_pair(q: torch.Tensor, k: torch.Tensor, omega: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """φ(q) and φ(k) in fp32, q and k scaled by d^(-1/4) each, so that φ(q)·φ(k) estimates exp(q·k/√d)."""
    scale = q.shape[-1] ** -0.25
    omega = omega.float()
    return (
        favor_features(q.float() * scale, omega, is_query=True),
        favor_features(k.float() * scale, omega, is_query=False),
    )


def performer_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    omega: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    chunk: int = 64,
) -> torch.Tensor:
    """FAVOR+ attention: φ(q) Σ φ(k) vᵀ / φ(q) Σ φ(k), over the keys each query may see.

    is_causal (T = S, no other mask): prefix sums in blocks of `chunk` queries: the sum of φ(k) vᵀ over
    every earlier block (a (m, hd) state per block) plus the block's own lower triangle. No mask: every
    key, in linear time. A boolean mask (B|1, 1, T, S) (padding, a decode step at an offset): the
    explicit (T, S) matrix φ(q) φ(k)ᵀ with the hidden keys zeroed."""
    B, nh, T, hd = q.shape
    groups = nh // k.shape[1]
    phi_q, phi_k = favor_pair(q, k, omega)  # (B, nh, T, m), (B, nkv, S, m)
    vf = v.float()
    if groups > 1:  # each K/V head serves `groups` query heads
        phi_k, vf = phi_k.repeat_interleave(groups, dim=1), vf.repeat_interleave(groups, dim=1)
    if is_causal:
        pad = -T % chunk
        n = (T + pad) // chunk
        padded = (F.pad(t, (0, 0, 0, pad)) if pad else t for t in (phi_q, phi_k, vf))
        pq, pk, pv = (t.reshape(B, nh, n, chunk, -1) for t in padded)
        kv = pk.transpose(-2, -1) @ pv  # (B, nh, n, m, hd): each block's Σ φ(k) vᵀ
        z = pk.sum(-2)  # (B, nh, n, m)
        kv_before = torch.cat([torch.zeros_like(kv[:, :, :1]), kv.cumsum(2)[:, :, :-1]], dim=2)
        z_before = torch.cat([torch.zeros_like(z[:, :, :1]), z.cumsum(2)[:, :, :-1]], dim=2)
        within = (pq @ pk.transpose(-2, -1)).tril()  # (B, nh, n, chunk, chunk)
        num = pq @ kv_before + within @ pv
        den = (pq @ z_before[..., None]).squeeze(-1) + within.sum(-1)
        num, den = num.view(B, nh, -1, hd)[:, :, :T], den.view(B, nh, -1)[:, :, :T, None]
    elif mask is None:
        num = phi_q @ (phi_k.transpose(-2, -1) @ vf)  # (B, nh, T, hd)
        den = phi_q @ phi_k.sum(-2)[..., None]  # (B, nh, T, 1)
    else:
        weights = (phi_q @ phi_k.transpose(-2, -1)) * mask  # (B, nh, T, S)
        num, den = weights @ vf, weights.sum(-1, keepdim=True)
    return (num / den.clamp_min(torch.finfo(torch.float32).tiny)).to(v.dtype)
