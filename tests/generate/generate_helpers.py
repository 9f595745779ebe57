"""Helpers for the generation tests: tiny random decoders and a byte-level tokenizer (nanochat-style),
so the engine is tested without training or downloading anything."""

from __future__ import annotations

import codecs
import hashlib

import torch

from lmforge.model import Transformer
from tiny import tiny_chat_tokenizer, tiny_config  # shared by every test folder (tests/tiny.py)


class ByteTokenizer:
    """256 byte tokens + BOS (256) + EOS (257) + PAD (258); decoding is UTF-8 with replacement."""

    vocab_size = 259
    bos_token_id, eos_token_id, pad_token_id = 256, 257, 258
    chat_template = None

    def __init__(self, tag: str = "bytes"):
        self.fingerprint = hashlib.sha256(tag.encode()).hexdigest()[:16]

    def encode(self, text: str, add_special_tokens: bool = False, **_) -> list[int]:
        ids = list(text.encode("utf-8"))
        return [self.bos_token_id, *ids] if add_special_tokens else ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        data = bytes(i for i in ids if i < 256)
        return data.decode("utf-8", errors="replace")

    def incremental_decoder(self):
        return _ByteDecoder()

    def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> str:
        text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def encode_chat(self, messages, add_generation_prompt: bool = True) -> list[int]:
        return self.encode(self.apply_chat_template(messages, add_generation_prompt))


class _ByteDecoder:
    def __init__(self):
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token_id: int) -> str:
        return self._utf8.decode(bytes([token_id])) if token_id < 256 else ""

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def tiny_model(family: str = "llama", seed: int = 0, scale: float = 1.0, **overrides) -> Transformer:
    """A random decoder; `scale` > 1 sharpens its next-token distributions (less uniform text)."""
    model = Transformer(tiny_config(family, **{"tie_embeddings": False, **overrides}))
    model.init_weights(seed=seed)
    if scale != 1.0:
        with torch.no_grad():
            model.lm_head.weight.mul_(scale)
    return model.eval()


class ScriptedModel(torch.nn.Module):
    """A stand-in decoder that emits a fixed byte script after a prompt of `prompt_len` tokens, then EOS
    (positions say how far along the script a row is, so batching and the cache are respected)."""

    def __init__(self, script: str, prompt_len: int):
        super().__init__()
        self.config = tiny_config("llama", n_layer=1)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the engine a dtype and device
        self.table = torch.tensor([*script.encode("utf-8"), ByteTokenizer.eos_token_id])
        self.prompt_len = prompt_len

    def forward(self, input_ids, positions=None, cache=None, attention_mask=None):
        B, T = input_ids.shape
        if positions is None:
            positions = torch.arange(T).expand(B, T)
        step = (positions + 1 - self.prompt_len).clamp(0, len(self.table) - 1)
        logits = torch.full((B, T, self.config.vocab_size), -10.0)
        return logits.scatter(2, self.table[step][..., None], 10.0)


def tiny_lm(model=None, tokenizer=None, compile="eager", **generation_config):
    """An `LM` around a tiny model and the byte tokenizer (what `lmforge.load` returns). Eager decode
    steps unless `compile` says otherwise: `load`'s default "auto" would depend on AOT packages that
    other runs left on disk."""
    from lmforge.lm import LM

    model = model if model is not None else tiny_model("llama", seed=0, scale=20.0)
    return LM(model, tokenizer or ByteTokenizer(), generation_config, source="tiny", compile=compile)


def tiny_checkpoint(path, seed: int = 0):
    """A saved checkpoint directory (tiny random Llama + a small byte-level BPE tokenizer with a chat
    template), loadable with `lmforge.load(path)` and the CLI."""
    from lmforge.lm import LM

    tokenizer = tiny_chat_tokenizer(["hello world, how are you? fine thanks"])
    model = tiny_model("llama", seed=seed, scale=8.0, vocab_size=tokenizer.vocab_size)
    LM(model, tokenizer, {}).save(path)
    return path
