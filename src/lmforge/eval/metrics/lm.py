"""Language-model metrics: perplexity and bits per byte with a sliding window, and log-likelihoods.

Sliding window (texts longer than the context): windows of `context` tokens start every `stride` tokens;
each window scores only the tokens that no earlier window scored, so **every token is scored exactly
once** and, after the first window, with at least `context - stride` tokens of left context. Sums are
token-weighted: perplexity = exp(total NLL / scored tokens), never a mean of per-window perplexities.

Bits per byte = total NLL / ln 2 / UTF-8 bytes of the scored text, which compares models with
different tokenizers. With `add_bos` (default, when the tokenizer has a BOS token) the BOS token is the
context of the first real token, so the whole text is scored; without one the first token has no
context and is left out, and its bytes are left out of the byte count too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.errors import LMForgeError


@dataclass
class WindowScore:
    """NLL (nats) of the tokens one window scored, positions [start, end) of the token sequence."""

    start: int
    end: int
    nll: float
    n_tokens: int
    n_bytes: int = 0


@dataclass
class PerplexityResult:
    nll: float  # total negative log-likelihood in nats
    n_tokens: int  # tokens scored
    n_bytes: int  # UTF-8 bytes of the scored text
    context: int
    stride: int
    windows: list[WindowScore] = field(default_factory=list, repr=False)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.n_tokens)

    @property
    def bits_per_byte(self) -> float:
        return self.nll / math.log(2) / self.n_bytes if self.n_bytes else float("nan")

    @property
    def bits_per_token(self) -> float:
        return self.nll / math.log(2) / self.n_tokens

    def window_stats(self) -> np.ndarray:
        """(n_windows, 3): NLL, tokens and bytes per window, the rows a bootstrap resamples."""
        return np.asarray([[w.nll, w.n_tokens, w.n_bytes] for w in self.windows], dtype=np.float64)

    def to_dict(self) -> dict[str, float]:
        return {
            "perplexity": self.perplexity,
            "bits_per_byte": self.bits_per_byte,
            "bits_per_token": self.bits_per_token,
            "nll": self.nll,
            "n_tokens": self.n_tokens,
            "n_bytes": self.n_bytes,
            "context": self.context,
            "stride": self.stride,
        }


def aggregate_window_stats(stats: np.ndarray) -> dict[str, float]:
    """Corpus perplexity and bits per byte from (n, 3) per-window [NLL, tokens, bytes] rows."""
    nll, tokens, n_bytes = stats.sum(axis=0)
    out = {"perplexity": math.exp(nll / tokens)}
    if n_bytes > 0:
        out["bits_per_byte"] = nll / math.log(2) / n_bytes
    return out


def _model_context(model: torch.nn.Module) -> int:
    return int(model.config.max_seq_len)


@torch.inference_mode()
def score_windows(
    model: torch.nn.Module,
    ids: Sequence[int] | torch.Tensor,
    *,
    context: int | None = None,
    stride: int | None = None,
) -> list[WindowScore]:
    """Score tokens 1..N-1 of `ids` (token 0 is context only) with a sliding window.

    Args:
        model: a causal LM returning logits (B, T, V).
        ids: the token ids, BOS included if wanted.
        context: window length in tokens (default: the model's context, at most 1024).
        stride: tokens between window starts (default: context // 2); 1 <= stride < context.
    """
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    n = ids.numel()
    if n < 2:
        raise LMForgeError("need at least 2 tokens to score (one of context and one to predict)")
    max_ctx = _model_context(model)
    context = min(max_ctx, 1024) if context is None else context
    if not 2 <= context <= max_ctx:
        raise LMForgeError(f"context must be between 2 and the model's context of {max_ctx}, got {context}")
    stride = max(1, context // 2) if stride is None else stride
    if not 1 <= stride <= context - 1:  # a window's first token has no context: the next must overlap it
        raise LMForgeError(f"stride must be between 1 and context - 1 ({context - 1}), got {stride}")
    device = next(model.parameters()).device
    windows: list[WindowScore] = []
    scored_until = 1  # tokens [0, scored_until) are scored (token 0 never is)
    begin = 0
    while scored_until < n:
        end = min(begin + context, n)
        first = max(scored_until, begin + 1)  # first token this window scores
        if first < end:
            window = ids[begin:end].to(device)[None]  # (1, T)
            logits = model(window)[0]  # (T, V)
            # logits at position p predict token p + 1: targets first..end-1 use positions first-1..end-2
            pred = logits[first - 1 - begin : end - 1 - begin].float()
            nll = F.cross_entropy(pred, window[0, first - begin : end - begin], reduction="sum")
            windows.append(WindowScore(first, end, float(nll), end - first))
            scored_until = end
        begin += stride
    return windows


def perplexity(
    lm,
    texts: str | Sequence[str],
    *,
    context: int | None = None,
    stride: int | None = None,
    add_bos: bool = True,
) -> PerplexityResult:
    """Perplexity and bits per byte of a loaded `LM` on one text or a corpus of texts.

    Each text is tokenized and scored on its own (with BOS prepended when `add_bos` and the tokenizer
    has one); the totals are summed over all texts, so the result is token-weighted over the corpus.
    """
    tokenizer = getattr(lm, "tokenizer", None)
    if tokenizer is None:
        raise LMForgeError("perplexity on text needs a model with a tokenizer")
    if isinstance(texts, str):
        texts = [texts]
    if not texts or all(not t for t in texts):
        raise LMForgeError("no text to score: give at least one non-empty text")
    if lm.config.head != "lm" or not lm.config.causal:
        raise LMForgeError("perplexity needs a causal language model (this model is an encoder)")
    bos = tokenizer.bos_token_id if add_bos else None
    all_windows: list[WindowScore] = []
    used_context = used_stride = 0
    for text in texts:
        if not text:
            continue
        ids = tokenizer.encode(text, add_special_tokens=False)
        if bos is not None:
            ids = [bos, *ids]
        windows = score_windows(lm.model, ids, context=context, stride=stride)
        # bytes per window: decode the tokens it scored (exact over the text, up to multi-byte characters
        # split between windows); the total uses the text's own byte count.
        for w in windows:
            w.n_bytes = len(tokenizer.decode(ids[w.start : w.end]).encode("utf-8"))
        total_bytes = len(text.encode("utf-8"))
        if bos is None:  # token 0 is not scored: leave its bytes out
            total_bytes -= len(tokenizer.decode(ids[:1]).encode("utf-8"))
        drift = total_bytes - sum(w.n_bytes for w in windows)
        windows[-1].n_bytes += drift  # keep the sum exact
        all_windows.extend(windows)
        used_context = context or min(_model_context(lm.model), 1024)
        used_stride = stride or max(1, used_context // 2)
    return PerplexityResult(
        nll=sum(w.nll for w in all_windows),
        n_tokens=sum(w.n_tokens for w in all_windows),
        n_bytes=sum(w.n_bytes for w in all_windows),
        context=used_context,
        stride=used_stride,
        windows=all_windows,
    )


@torch.inference_mode()
def loglikelihood(
    model: torch.nn.Module, context_ids: Sequence[int], continuation_ids: Sequence[int]
) -> tuple[float, bool]:
    """log P(continuation | context) in nats and whether greedy decoding would produce the continuation.

    As lm-evaluation-harness: one forward over context + continuation (left-truncated to the model's
    context), summing the log-probabilities of the continuation tokens.
    """
    if not continuation_ids:
        raise LMForgeError("the continuation is empty: nothing to score")
    if not context_ids:
        raise LMForgeError("the context is empty: give at least one token (e.g. BOS)")
    ids = [*context_ids, *continuation_ids]
    max_ctx = _model_context(model)
    ids = ids[-(max_ctx + 1) :]
    inp = torch.tensor(ids[:-1], dtype=torch.long, device=next(model.parameters()).device)[None]
    logits = model(inp)[0, -len(continuation_ids) :].float()  # (n_cont, V)
    logprobs = F.log_softmax(logits, dim=-1)
    target = torch.tensor(continuation_ids, dtype=torch.long, device=logits.device)
    total = float(logprobs.gather(1, target[:, None]).sum())
    greedy = bool((logits.argmax(dim=-1) == target).all())
    return total, greedy


@torch.inference_mode()
def loglikelihoods(
    model: torch.nn.Module, requests: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int = 16
) -> list[tuple[float, bool]]:
    """`loglikelihood` for many (context, continuation) pairs, batched.

    Rows are right-padded: in a causal model a token's logits depend only on the tokens before it, so
    padding after a row's last real token changes nothing and needs no attention mask.
    """
    max_ctx = _model_context(model)
    seqs = []
    for context_ids, continuation_ids in requests:
        if not continuation_ids:
            raise LMForgeError("the continuation is empty: nothing to score")
        if not context_ids:
            raise LMForgeError("the context is empty: give at least one token (e.g. BOS)")
        ids = [*context_ids, *continuation_ids][-(max_ctx + 1) :]
        seqs.append((ids[:-1], list(continuation_ids)))
    device = next(model.parameters()).device
    out: list[tuple[float, bool]] = [(0.0, False)] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(seqs[i][0]) for i in idx)
        batch = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            batch[row, : len(seqs[i][0])] = torch.tensor(seqs[i][0])
        logits = model(batch.to(device)).float()  # (B, T, V)
        for row, i in enumerate(idx):
            inp, cont = seqs[i]
            span = logits[row, len(inp) - len(cont) : len(inp)]  # (n_cont, V)
            target = torch.tensor(cont, dtype=torch.long, device=span.device)
            total = float(F.log_softmax(span, dim=-1).gather(1, target[:, None]).sum())
            out[i] = (total, bool((span.argmax(dim=-1) == target).all()))
    return out
