"""Tiny random models with a byte tokenizer, so the harness runs end to end in milliseconds."""

from __future__ import annotations

import codecs

import pytest

from lmforge.lm import LM, EmbeddingSpec
from tiny import tiny_model


class ByteTokenizer:
    """256 byte tokens + BOS (256) + EOS (257) + PAD (258) (+ CLS 259 / SEP 260 for the encoder)."""

    vocab_size = 261
    bos_token_id, eos_token_id, pad_token_id = 256, 257, 258
    chat_template = None
    fingerprint = "bytes-test"

    def __init__(self, encoder: bool = False):
        self.encoder = encoder
        self.cls_token_id = 259 if encoder else None
        self.sep_token_id = 260 if encoder else None
        if encoder:
            self.bos_token_id = None

    def encode(
        self, text: str, add_special_tokens: bool = False, max_length: int | None = None, **_
    ) -> list[int]:
        ids = list(text.encode("utf-8"))
        if add_special_tokens:
            ids = [259, *ids, 260] if self.encoder else [256, *ids]
        return ids[:max_length] if max_length else ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def incremental_decoder(self):
        return _ByteDecoder()

    def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> str:
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + (
            "<assistant>" if add_generation_prompt else ""
        )


class _ByteDecoder:
    def __init__(self):
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token_id: int) -> str:
        return self._utf8.decode(bytes([token_id])) if token_id < 256 else ""

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def make_tiny_lm(seed: int = 0) -> LM:
    model = tiny_model("llama", seed=seed, vocab_size=261, max_seq_len=256)
    return LM(model, ByteTokenizer(), {"eos_token_id": 257}, source=f"tiny-decoder-{seed}")


def make_tiny_encoder(seed: int = 0) -> LM:
    """A 3-layer BERT-style encoder returning hidden states (for embeddings, BERTScore, MAUVE)."""
    model = tiny_model("bert", seed=seed, vocab_size=261, n_layer=3, max_seq_len=256, head="none")
    return LM(
        model, ByteTokenizer(encoder=True), embedding=EmbeddingSpec(pooling="mean"), source="tiny-encoder"
    )


@pytest.fixture
def tiny_lm() -> LM:
    return make_tiny_lm()


@pytest.fixture
def tiny_encoder() -> LM:
    return make_tiny_encoder()
