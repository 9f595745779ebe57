"""The logits-processor pipeline every decoding strategy shares.

A processor is a callable `(input_ids (B, T) long, scores (B, V) float) -> scores (B, V)`, where
`input_ids` is each row's prompt plus what it generated so far. `build_pipeline(config, ...)` composes
them in Hugging Face's order, so an option means the same thing under greedy, sampling, beam,
contrastive and speculative decoding:

1. logit bias (OpenAI `logit_bias`, like HF `sequence_bias` for single tokens)
2. repetition penalty (HF: every token of prompt + output; positive logits / p, negative * p)
3. frequency / presence penalties (OpenAI: logit -= count * f + (count > 0) * p, over *generated* tokens)
4. no-repeat n-gram, banned token sequences, allowed-token list
5. min new tokens (stop tokens get -inf until enough tokens are generated)
6. the output constraint (choice / regex / JSON schema mask), when one is given
7. sampling only (`do_sample`), as in HF: temperature, top-k, top-p, min-p, typical-p

Everything is vectorised over the batch. Penalties gather and scatter at the sequence's own token ids
(O(T) work, as HF does) on a copy of the scores with one spare column that absorbs ignored slots
(padding, prompt tokens for generated-only penalties). Top-p and typical-p look at the 256 best
candidates first (one `topk`) and sort the whole vocabulary only when those hold too little mass;
`pick_tokens` samples by inverting the CDF with one uniform per row. Per-step costs:
`benchmarks/processors.py`.

Padding: the engine left-pads prompts, so `input_ids` holds pad tokens before short prompts. Pass
`valid=(B, T) bool` (True = a real token, e.g. the engine's `Batch.valid_slots()`) to the pipeline call
to keep padding out of every penalty, so a batched row is processed exactly like the same prompt alone.
Without `valid`, every slot counts (what Hugging Face does). `prompt_length` (an int for left-padded
batches, or a (B,) tensor) marks where generated tokens start.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lmforge.errors import LMForgeError
from lmforge.generate.config import GenerationConfig

NEG_INF = -math.inf
Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PromptLength = int | Sequence[int] | torch.Tensor | None


def _generated_mask(input_ids: torch.Tensor, prompt_length: PromptLength) -> torch.Tensor | None:
    """(B, T) True where a slot holds a generated token (None: everything counts as generated)."""
    if prompt_length is None:
        return None
    B, T = input_ids.shape
    positions = torch.arange(T, device=input_ids.device)
    if isinstance(prompt_length, int):
        return (positions >= prompt_length).expand(B, T)
    lengths = torch.as_tensor(prompt_length, device=input_ids.device)
    if lengths.numel() != B:
        raise ValueError(f"prompt_length has {lengths.numel()} rows but input_ids has {B}")
    return positions[None, :] >= lengths.view(B, 1)


def _num_generated(input_ids: torch.Tensor, prompt_length: PromptLength) -> torch.Tensor:
    """(B,) generated tokens per row."""
    B, T = input_ids.shape
    if prompt_length is None:
        return torch.full((B,), T, device=input_ids.device)
    if isinstance(prompt_length, int):
        return torch.full((B,), T - prompt_length, device=input_ids.device)
    return T - torch.as_tensor(prompt_length, device=input_ids.device).view(B)


def token_counts(ids: torch.Tensor, vocab_size: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V) how often each token occurs in each row of `ids` (B, T), counting only `keep` slots."""
    B = ids.shape[0]
    ids = ids.clamp(max=vocab_size)  # ids beyond the head's vocabulary go to the spare column
    if keep is not None:
        ids = ids.masked_fill(~keep, vocab_size)
    counts = torch.zeros(B, vocab_size + 1, dtype=torch.float32, device=ids.device)
    counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float32))
    return counts[:, :vocab_size]


# -- processors: each one is a small callable object -------------------------------------------------


@dataclass
class LogitBias:
    """Add a bias to chosen tokens (OpenAI `logit_bias`; -inf bans, +large forces)."""

    bias: dict[int, float]
    _dense: torch.Tensor | None = field(default=None, repr=False)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if (
            self._dense is None
            or self._dense.shape[0] != scores.shape[-1]
            or self._dense.device != scores.device
        ):
            dense = torch.zeros(scores.shape[-1], dtype=scores.dtype, device=scores.device)
            ids = torch.tensor(list(self.bias), dtype=torch.long, device=scores.device)
            dense[ids] = torch.tensor(list(self.bias.values()), dtype=scores.dtype, device=scores.device)
            self._dense = dense
        return scores + self._dense


@dataclass
class RepetitionPenalty:
    """HF repetition penalty (Keskar et al. 2019): every token seen in the sequence gets its logit
    divided by `penalty` when positive and multiplied when negative. `prompt_length` set: output only."""

    penalty: float
    prompt_length: PromptLength = None
    generated_only: bool = False

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        keep = valid
        if self.generated_only:
            gen = _generated_mask(input_ids, self.prompt_length)
            keep = gen if keep is None else (keep & gen) if gen is not None else keep
        V = scores.shape[-1]
        ids = input_ids.clamp(max=V)  # ignored slots and ids beyond the head go to a spare column
        if keep is not None:
            ids = ids.masked_fill(~keep, V)
        padded = torch.nn.functional.pad(scores, (0, 1))
        seen = padded.gather(1, ids)  # O(T) work on the sequence's tokens, not O(V)
        seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return padded.scatter(1, ids, seen)[:, :V]


@dataclass
class FrequencyPresencePenalty:
    """OpenAI penalties over generated tokens: logit[j] -= count[j] * frequency + (count[j] > 0) * presence."""

    frequency: float
    presence: float
    prompt_length: PromptLength = None

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        keep = _generated_mask(input_ids, self.prompt_length)
        if valid is not None:
            keep = valid if keep is None else keep & valid
        V = scores.shape[-1]
        ids = input_ids.clamp(max=V)
        if keep is not None:
            ids = ids.masked_fill(~keep, V)  # ignored slots land in a spare column
        out = torch.nn.functional.pad(scores, (0, 1))
        if self.presence:  # every copy of a token writes the same value: subtracted once per token
            out.scatter_(1, ids, out.gather(1, ids) - self.presence)
        if self.frequency:  # subtracted once per occurrence
            out.scatter_add_(
                1, ids, torch.full(ids.shape, -self.frequency, dtype=out.dtype, device=out.device)
            )
        return out[:, :V]


@dataclass
class NoRepeatNGram:
    """Ban any token that would complete an n-gram already present in the sequence (HF semantics)."""

    ngram_size: int

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        n, (B, T), V = self.ngram_size, input_ids.shape, scores.shape[-1]
        if input_ids.shape[1] < n:
            return scores
        ids = input_ids if valid is None else input_ids.masked_fill(~valid, -1)  # padding never matches
        prefix = ids[:, T + 1 - n :]  # (B, n-1) the last n-1 tokens
        windows = ids.unfold(1, n, 1)  # (B, T-n+1, n) every earlier n-gram
        matches = (windows[..., :-1] == prefix[:, None, :]).all(dim=-1)
        if valid is not None:
            matches &= windows[..., -1] >= 0
        banned = torch.zeros(B, V + 1, dtype=torch.bool, device=scores.device)
        banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(min=0, max=V), V), True)
        return scores.masked_fill(banned[:, :V], NEG_INF)


@dataclass
class BannedSequences:
    """Ban token sequences (HF `bad_words_ids`): the last token of a sequence gets -inf whenever the
    tokens before it end the input. Single-token sequences are always banned."""

    sequences: list[list[int]]

    def __post_init__(self) -> None:
        self._single = sorted({s[0] for s in self.sequences if len(s) == 1})
        by_len: dict[int, list[list[int]]] = {}
        for s in self.sequences:
            if len(s) > 1:
                by_len.setdefault(len(s), []).append(s)
        self._groups = {n: torch.tensor(seqs, dtype=torch.long) for n, seqs in by_len.items()}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        B, V = scores.shape
        banned = torch.zeros(B, V, dtype=torch.bool, device=scores.device)
        if self._single:
            banned[:, self._single] = True
        for n, seqs in self._groups.items():
            if n - 1 > input_ids.shape[1]:
                continue
            seqs = seqs.to(input_ids.device)
            tail = input_ids[:, input_ids.shape[1] - (n - 1) :]  # (B, n-1)
            match = (tail[:, None, :] == seqs[None, :, :-1]).all(dim=-1)  # (B, S)
            rows, which = match.nonzero(as_tuple=True)
            banned[rows, seqs[which, -1]] = True
        return scores.masked_fill(banned, NEG_INF)


@dataclass
class AllowedTokens:
    """Only the listed tokens may be generated."""

    token_ids: list[int]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        allowed = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        allowed[self.token_ids] = True
        return scores.masked_fill(~allowed, NEG_INF)


@dataclass
class MinNewTokens:
    """Stop tokens get -inf until a row has generated `min_new_tokens` tokens (HF MinNewTokensLength)."""

    min_new_tokens: int
    stop_token_ids: list[int]
    prompt_length: PromptLength = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        short = _num_generated(input_ids, self.prompt_length) < self.min_new_tokens  # (B,)
        if not bool(short.any()):
            return scores
        stops = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        stops[[t for t in self.stop_token_ids if t < scores.shape[-1]]] = True
        return scores.masked_fill(short[:, None] & stops[None, :], NEG_INF)


@dataclass
class ConstraintMask:
    """Mask every token the output constraint forbids in each row's current state."""

    constraint: Any  # lmforge.generate.constraints.Constraint

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.constraint.mask(scores)


@dataclass
class Temperature:
    temperature: float

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores / self.temperature


@dataclass
class TopK:
    """Keep the k highest logits (ties with the k-th kept too, as in HF)."""

    top_k: int
    min_tokens_to_keep: int = 1

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(max(self.top_k, self.min_tokens_to_keep), scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[..., -1:]
        return scores.masked_fill(scores < kth, NEG_INF)


@dataclass
class TopP:
    """Nucleus sampling (Holtzman et al. 2019): keep the smallest top set with probability >= top_p.

    Hugging Face's rule (drop a token when the ascending cumulative probability up to it is <= 1 - top_p,
    i.e. when the tokens above it already hold >= top_p) on the `candidates` most likely tokens, which
    hold the nucleus unless the distribution is very flat; then it sorts the whole vocabulary."""

    top_p: float
    min_tokens_to_keep: int = 1
    candidates: int = 256

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        B, V = scores.shape
        if self.candidates < V:
            top, idx = torch.topk(scores, self.candidates, dim=-1)  # descending
            probs = (top - torch.logsumexp(scores, dim=-1, keepdim=True)).exp()
            cum = probs.cumsum(dim=-1)
            if bool((cum[:, -1] >= self.top_p + 1e-5).all()):  # every row's nucleus is inside
                keep = (cum - probs) < self.top_p  # mass strictly above each token
                keep[:, : self.min_tokens_to_keep] = True
                keep = torch.zeros(B, V, dtype=torch.bool, device=scores.device).scatter_(1, idx, keep)
                return scores.masked_fill(~keep, NEG_INF)
        sorted_logits, sorted_idx = torch.sort(scores, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= (1 - self.top_p)
        remove[..., -self.min_tokens_to_keep :] = False
        remove = remove.scatter(1, sorted_idx, remove)
        return scores.masked_fill(remove, NEG_INF)


@dataclass
class MinP:
    """Keep tokens whose probability is at least min_p times the most likely token's (Nguyen et al. 2024)."""

    min_p: float
    min_tokens_to_keep: int = 1

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores, dim=-1)
        remove = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        if self.min_tokens_to_keep > 1:
            k = min(self.min_tokens_to_keep, probs.shape[-1])
            remove.scatter_(-1, torch.topk(probs, k, dim=-1).indices, False)
        return scores.masked_fill(remove, NEG_INF)


@dataclass
class TypicalP:
    """Locally typical sampling (Meister et al. 2022): keep the tokens whose surprisal is closest to the
    entropy, up to probability mass `mass` (HF's rule; the `candidates` most typical tokens first, the
    whole sorted vocabulary when they hold less than `mass`)."""

    mass: float
    min_tokens_to_keep: int = 1
    candidates: int = 256

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(scores, dim=-1)
        probs = logp.exp()
        entropy = -(logp * probs).nansum(-1, keepdim=True)
        shifted = (-logp - entropy).abs()
        V = scores.shape[-1]
        if self.candidates < V:
            sorted_shifted, sorted_idx = torch.topk(shifted, self.candidates, dim=-1, largest=False)
        else:
            sorted_shifted, sorted_idx = torch.sort(shifted, descending=False)
        cum = probs.gather(-1, sorted_idx).cumsum(dim=-1)
        if self.candidates < V and not bool((cum[:, -1] >= self.mass).all()):
            sorted_shifted, sorted_idx = torch.sort(shifted, descending=False)
            cum = probs.gather(-1, sorted_idx).cumsum(dim=-1)
        last = (cum < self.mass).sum(dim=1).clamp_(max=sorted_shifted.shape[-1] - 1)
        remove = shifted > sorted_shifted.gather(1, last.view(-1, 1))
        remove.scatter_(1, sorted_idx[:, : self.min_tokens_to_keep], False)
        return scores.masked_fill(remove, NEG_INF)


_TAKES_VALID = (RepetitionPenalty, FrequencyPresencePenalty, NoRepeatNGram)


@dataclass
class LogitsPipeline:
    """Processors applied in order; `pipeline(input_ids, scores, valid=None) -> scores`."""

    processors: list[Processor] = field(default_factory=list)

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        if valid is not None:
            valid = valid[:, : input_ids.shape[1]].bool()
            if bool(valid.all()):
                valid = None
        for proc in self.processors:
            if valid is not None and isinstance(proc, _TAKES_VALID):
                scores = proc(input_ids, scores, valid)
            else:
                scores = proc(input_ids, scores)
        return scores

    def __len__(self) -> int:
        return len(self.processors)

    def __bool__(self) -> bool:  # an empty pipeline is still a pipeline (`if pipeline:` must not skip it)
        return True

    def without(self, kind: type) -> LogitsPipeline:
        """A copy without processors of one type (e.g. drafts skip `ConstraintMask`)."""
        return LogitsPipeline([p for p in self.processors if not isinstance(p, kind)])


def build_pipeline(
    config: GenerationConfig,
    vocab_size: int,
    eos_token_id: int | Sequence[int] | None = None,
    prompt_length: PromptLength = None,
    *,
    constraint: Any = None,
) -> LogitsPipeline:
    """The processor pipeline for `config`, in Hugging Face's order (see the module docstring).

    Args:
        config: the generation options (validated here against `vocab_size`).
        vocab_size: width of the scores (the model's output vocabulary).
        eos_token_id: stop token id(s) that `min_new_tokens` holds back.
        prompt_length: where generated tokens start in `input_ids`: an int (left-padded batch) or a
            (B,) tensor; None treats every token as generated.
        constraint: an optional `lmforge.generate.constraints.Constraint`; its mask runs after the
            penalties and before temperature/top-k/top-p, so the warpers choose among allowed tokens.
    """
    config.validate(vocab_size)
    eos = (
        []
        if eos_token_id is None
        else [eos_token_id]
        if isinstance(eos_token_id, int)
        else list(eos_token_id)
    )
    eos = [int(t) for t in eos] + list(config.stop_token_ids or [])
    c, procs = config, []
    if c.logit_bias:
        procs.append(LogitBias(dict(c.logit_bias)))
    if c.repetition_penalty != 1.0:
        procs.append(RepetitionPenalty(c.repetition_penalty))
    if c.frequency_penalty or c.presence_penalty:
        procs.append(FrequencyPresencePenalty(c.frequency_penalty, c.presence_penalty, prompt_length))
    if c.no_repeat_ngram_size > 0:
        procs.append(NoRepeatNGram(c.no_repeat_ngram_size))
    if c.bad_words_ids:
        seqs = [s for s in c.bad_words_ids if not (len(s) == 1 and s[0] in eos)]  # HF keeps EOS reachable
        if seqs:
            procs.append(BannedSequences(seqs))
    if c.allowed_token_ids is not None:
        procs.append(AllowedTokens(sorted(set(c.allowed_token_ids) | (set(eos) & set(range(vocab_size))))))
    if c.min_new_tokens > 0 and eos:
        procs.append(MinNewTokens(c.min_new_tokens, sorted(set(eos)), prompt_length))
    if constraint is not None:
        procs.append(ConstraintMask(constraint))
    if c.do_sample:
        # beam sampling keeps one non-stop token per stop token so beams can continue (as HF)
        keep = len(set(eos)) + 1 if c.num_beams > 1 else 1
        if c.temperature != 1.0:
            procs.append(Temperature(c.temperature))
        if c.top_k > 0:
            procs.append(TopK(c.top_k, keep))
        if c.top_p < 1.0:
            procs.append(TopP(c.top_p, keep))
        if c.min_p > 0:
            procs.append(MinP(c.min_p, keep))
        if c.typical_p < 1.0:
            procs.append(TypicalP(c.typical_p, keep))
    return LogitsPipeline(procs)


def pick_tokens(
    scores: torch.Tensor, do_sample: bool = False, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Choose one token per row from processed scores (B, V): argmax, or a draw from softmax(scores)
    with `generator` (same seed, same draws). A row with no finite score is an error, not a NaN draw."""
    if not do_sample:
        return scores.argmax(dim=-1)
    probs = torch.softmax(scores.float(), dim=-1)
    if bool(torch.isnan(probs[:, 0]).any()):
        raise LMForgeError("every token was filtered out for some row; loosen top-k/top-p/min-p or the bans")
    return sample_probs(probs, generator)


def sample_probs(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row from probabilities (B, V) by inverting the CDF with one uniform per row:
    the same distribution as `torch.multinomial(probs, 1)`, ~50x faster on CPU at V = 49152."""
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype)
    tokens = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=probs.shape[-1] - 1)
    zero = probs.gather(1, tokens) <= 0  # u * total rounded up to total: take the last possible token
    if bool(zero.any()):
        last = probs.shape[-1] - 1 - (probs.flip(-1) > 0).int().argmax(dim=-1, keepdim=True)
        tokens = torch.where(zero, last, tokens)
    return tokens[:, 0]


def seeded_generator(seed: int | None, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded with `seed` (a fresh random seed when None)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) if seed is not None else int(torch.seed() % 2**63))
    return gen
