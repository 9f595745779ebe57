"""Streaming detokenization: text deltas as tokens arrive, never a broken character.

Decoding token by token and concatenating is wrong three times over: a byte-level token can hold
half of a UTF-8 character (an emoji is often 2-4 tokens); SentencePiece-style decoders strip the
leading space of whatever they decode first; and their ByteFallback step turns a whole run of
`<0xAB>` byte tokens into U+FFFDs when the run is not valid UTF-8 (so a run is held back until it
ends). The fix (as in vLLM and TGI) decodes a small window that starts one step back: `prefix` =
text of tokens [a, b) already emitted, `full` = text of tokens [a, n). When `full` extends `prefix`
and does not end in U+FFFD (an incomplete character), the delta is `full[len(prefix):]` and the
window moves forward. Each step decodes a few tokens, not the whole sequence.

Decoders that rewrite earlier text (WordPiece's `cleanup` turns "a ' b" into "a'b") break the
window's assumption; for those the decoder re-decodes everything and holds back the text after the
last space, which a later token can still change. Either way `"".join(deltas) + flush()` equals
`decode(all_ids)`; the tests check it on random token streams.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmforge.tokenizer.core import Tokenizer

REPLACEMENT = "\ufffd"


def _decoder_steps(tok: Tokenizer) -> list[dict]:
    decoder = tok.backend.decoder
    if decoder is None:
        return []
    spec = json.loads(decoder.__getstate__())
    return spec.get("decoders") or [spec]


def _rewrites_text(tok: Tokenizer) -> bool:
    """True when the decoder can change text it already produced (WordPiece/BPE `cleanup`)."""
    return any(step.get("cleanup") for step in _decoder_steps(tok))


def _byte_fallback_ids(tok: Tokenizer) -> frozenset[int]:
    """Ids of `<0xAB>` byte tokens when the decoder has ByteFallback: a run of them decodes as a whole
    (invalid UTF-8 turns *every* byte of the run into U+FFFD), so a run is final only once it ends."""
    if not any(step.get("type") == "ByteFallback" for step in _decoder_steps(tok)):
        return frozenset()
    return frozenset(
        i
        for piece, i in tok.backend.get_vocab().items()
        if len(piece) == 6 and piece.startswith("<0x") and piece[-1] == ">"
    )


class IncrementalDecoder:
    """Feed token ids one at a time with `add`; each call returns the new text (maybe "")."""

    def __init__(self, tok: Tokenizer, skip_special_tokens: bool = False):
        self.tok = tok
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0  # window start
        self.read_offset = 0  # tokens before this are emitted
        self.emitted: list[str] = []
        self._rewrites = _rewrites_text(tok)
        self._byte_ids = _byte_fallback_ids(tok)
        self._emitted_len = 0

    @property
    def text(self) -> str:
        """All text emitted so far."""
        return "".join(self.emitted)

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def _emit(self, delta: str) -> str:
        if delta:
            self.emitted.append(delta)
            self._emitted_len += len(delta)
        return delta

    def add(self, token_id: int) -> str:
        """Append one token; return the text that is now final."""
        self.ids.append(int(token_id))
        if int(token_id) in self._byte_ids:
            return ""  # inside a byte run: wait for its end
        if self._rewrites:
            full = self._decode(self.ids)
            stable = full[: full.rfind(" ")] if " " in full[self._emitted_len :] else ""
            stable = stable.rstrip(REPLACEMENT)
            if len(stable) > self._emitted_len and stable.startswith(self.text):
                return self._emit(stable[self._emitted_len :])
            return ""
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        if len(full) > len(prefix) and full.startswith(prefix) and not full.endswith(REPLACEMENT):
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return self._emit(full[len(prefix) :])
        return ""

    def flush(self) -> str:
        """The text still held back (an incomplete character at the end becomes U+FFFD, as in decode)."""
        full = self._decode(self.ids)
        done = self.text
        if not full.startswith(done):  # cannot happen for the decoders we know; never lose text silently
            raise RuntimeError("incremental decoder emitted text that the full decode does not start with")
        self.prefix_offset = self.read_offset = len(self.ids)
        return self._emit(full[len(done) :])


def token_bytes(tok: Tokenizer, token_id: int) -> bytes:
    """The bytes one token stands for: exact for byte-level BPE (GPT-2 alphabet) and SentencePiece
    byte tokens (`<0x41>`); otherwise the UTF-8 of its decoded text."""
    from lmforge.tokenizer.loaders import bytes_to_unicode

    piece = tok.backend.id_to_token(int(token_id))
    if piece is None:
        return b""
    added = tok.backend.get_added_tokens_decoder().get(int(token_id))
    if added is not None:
        return added.content.encode("utf-8")
    decoder = json.loads(tok.backend.decoder.__getstate__()) if tok.backend.decoder else {}
    if decoder.get("type") == "ByteLevel":
        inverse = {c: b for b, c in bytes_to_unicode().items()}
        if all(c in inverse for c in piece):
            return bytes(inverse[c] for c in piece)
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return bytes([int(piece[3:5], 16)])
        except ValueError:
            pass
    if "▁" in piece:
        return piece.replace("▁", " ").encode("utf-8")
    return tok.decode([token_id]).encode("utf-8")
