"""Helpers for the data tests: a tiny byte-level BPE tokenizer (trained in a fraction of a second)
and deterministic English-looking text."""

from __future__ import annotations

from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmforge.tokenizer import Tokenizer

SPECIALS = ["<|endoftext|>", "<pad>", "<mask>"]

ENGLISH = (
    "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden fence. "
    "Scientists have long studied how animals learn to recognise their surroundings, and the results "
    "suggest that memory plays a larger role than instinct in most of the species they observed. "
)


def paragraph(seed: int, words: int = 80) -> str:
    """Distinct, natural-looking English text: a deterministic shuffle of a fixed word list."""
    import random

    pool = [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "was",
        "that",
        "for",
        "on",
        "with",
        "as",
        "by",
        "at",
        "from",
        "his",
        "her",
        "they",
        "this",
        "which",
        "be",
        "are",
        "have",
        "river",
        "mountain",
        "village",
        "winter",
        "summer",
        "teacher",
        "garden",
        "letter",
        "window",
        "market",
        "harbour",
        "evening",
        "quietly",
        "carefully",
        "remembered",
        "discovered",
        "travelled",
        "whispered",
        "wandered",
        "answered",
        "gathered",
        "ancient",
        "golden",
        "narrow",
        "gentle",
        "crowded",
        "distant",
        "familiar",
        "curious",
        "patient",
        "hidden",
        "silver",
    ]
    rng = random.Random(seed)
    out = [rng.choice(pool) for _ in range(words)]
    return " ".join(out).capitalize() + "."


def train_tokenizer(vocab_size: int = 400) -> Tokenizer:
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([ENGLISH * 3, *(paragraph(i) for i in range(50))], trainer)
    return Tokenizer(
        backend, special_tokens={"eos_token": "<|endoftext|>", "pad_token": "<pad>", "mask_token": "<mask>"}
    )
