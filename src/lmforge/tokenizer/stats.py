"""How well a tokenizer fits a text: compression, fertility and unknown tokens, side by side.

- bytes per token: UTF-8 bytes of the text / tokens (higher = shorter sequences for the same text).
- tokens per word (fertility): tokens / whitespace-separated words (1.0 = every word is one token).
- unknown rate: share of tokens that are the unknown token (0 for byte-level BPE by construction).
Measured on a held-out text (not part of the training data), without special tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from lmforge.tokenizer.core import Tokenizer


@dataclass
class TokenizerStats:
    name: str
    vocab_size: int
    tokens: int
    bytes: int
    words: int
    bytes_per_token: float
    chars_per_token: float
    tokens_per_word: float
    unk_rate: float
    round_trip: bool  # decode(encode(text)) == text

    def as_dict(self) -> dict:
        return asdict(self)


def tokenizer_stats(tok: Tokenizer, text: str, name: str = "tokenizer") -> TokenizerStats:
    """Statistics of `tok` on `text` (encoded line by line in a batch, as a corpus would be)."""
    lines = text.splitlines(keepends=True)
    rows = tok.encode_batch(lines)
    n_tokens = sum(len(r) for r in rows)
    unk = tok.unk_token_id
    n_unk = sum(r.count(unk) for r in rows) if unk is not None else 0
    n_bytes = len(text.encode("utf-8"))
    n_words = len(text.split())
    sample = "".join(lines[:200])
    return TokenizerStats(
        name=name,
        vocab_size=tok.vocab_size,
        tokens=n_tokens,
        bytes=n_bytes,
        words=n_words,
        bytes_per_token=n_bytes / max(n_tokens, 1),
        chars_per_token=len(text) / max(n_tokens, 1),
        tokens_per_word=n_tokens / max(n_words, 1),
        unk_rate=n_unk / max(n_tokens, 1),
        round_trip=tok.decode(tok.encode(sample)) == sample,
    )


def compare(tokenizers: Mapping[str, Tokenizer], text: str) -> list[TokenizerStats]:
    return [tokenizer_stats(tok, text, name) for name, tok in tokenizers.items()]


def format_table(rows: list[TokenizerStats]) -> str:
    """A Markdown table, one row per tokenizer."""
    head = "| tokenizer | vocab | tokens | bytes/token | chars/token | tokens/word | unk rate | lossless |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.vocab_size:,} | {r.tokens:,} | {r.bytes_per_token:.2f} | {r.chars_per_token:.2f} "
            f"| {r.tokens_per_word:.2f} | {r.unk_rate:.4%} | {'yes' if r.round_trip else 'no'} |"
        )
    return "\n".join(lines)
