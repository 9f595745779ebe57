"""Tokenizer commands: `lmforge tokenizer train|encode|decode|inspect|stats`.

A TOKENIZER argument is anything `Tokenizer.load` takes: a checkpoint or tokenizer directory, a
tokenizer.json, .gguf, .tiktoken, SentencePiece .model or vocab.txt file, or an asset name
(smollm2, minilm, gpt2.tiktoken).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lmforge
from lmforge.errors import LMForgeError
from lmforge.options import with_options


def _text_arg(text: str) -> str:
    """The text itself, `-` for stdin, or `@path` for a file's content."""
    if text == "-":
        return sys.stdin.read()
    if text.startswith("@") and len(text) > 1:
        path = Path(text[1:])
        if not path.is_file():
            raise LMForgeError(f"{path}: no such file")
        return path.read_text(encoding="utf-8", errors="replace")
    return text


@with_options(lmforge.TokenizerTrainConfig)
def train(inputs: list[str], *, output: Path, **options: Any) -> str:
    """Train a tokenizer and write tokenizer.json + tokenizer_config.json into OUTPUT.

    Inputs are text files, directories (every .txt/.md/.text/.rst/.jsonl below), FILE.jsonl:FIELD, or
    `shakespeare` for the built-in corpus. Invalid UTF-8 bytes are replaced with U+FFFD (counted in a
    warning).

    Args:
        inputs: files, directories, FILE.jsonl[:FIELD] or `shakespeare`.
        output: directory to write the tokenizer into.
    """
    config = lmforge.TokenizerTrainConfig(**options)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tok = lmforge.train_tokenizer(inputs, output=output, config=config)
    for warning in caught:
        print(f"lmforge: warning: {warning.message}", file=sys.stderr)
    seconds = time.perf_counter() - start
    print(
        f"wrote {output} ({config.algorithm}, vocab {tok.vocab_size:,}, {seconds:.1f} s, "
        f"fingerprint {tok.fingerprint})"
    )
    return str(output)


def encode(
    tokenizer: str,
    text: str,
    add_special_tokens: bool = False,
    allow_special: bool = False,
    json_output: bool = False,
) -> list[int]:
    """Print the token ids of a text.

    Args:
        tokenizer: tokenizer directory/file or asset name.
        text: the text, `-` to read stdin, or @FILE to read a file.
        add_special_tokens: add BOS / [CLS] ... [SEP] as the tokenizer's post-processor does.
        allow_special: treat special-token text (e.g. <|im_start|>) as special tokens.
        json_output: print a JSON list instead of space-separated ids.
    """
    tok = lmforge.Tokenizer.load(tokenizer)
    ids = tok.encode(_text_arg(text), add_special_tokens=add_special_tokens, allow_special=allow_special)
    print(json.dumps(ids) if json_output else " ".join(map(str, ids)))
    return ids


def decode(tokenizer: str, ids: list[int], skip_special_tokens: bool = False) -> str:
    """Print the text of token ids.

    Args:
        tokenizer: tokenizer directory/file or asset name.
        ids: token ids.
        skip_special_tokens: leave special tokens out of the text.
    """
    text = lmforge.Tokenizer.load(tokenizer).decode(ids, skip_special_tokens=skip_special_tokens)
    print(text)
    return text


def inspect(tokenizer: str, text: str, allow_special: bool = False) -> list:
    """Show the tokenizer's summary and the pieces of a text: id, token, the text it covers, bytes.

    Args:
        tokenizer: tokenizer directory/file or asset name.
        text: the text, `-` to read stdin, or @FILE to read a file.
        allow_special: treat special-token text as special tokens.
    """
    tok = lmforge.Tokenizer.load(tokenizer)
    text = _text_arg(text)
    enc = tok.tokenize(text, allow_special=allow_special)
    print(f"{tok!r}")
    specials = ", ".join(f"{k}={v!r}" for k, v in tok.special_tokens.items()) or "none"
    print(f"special tokens: {specials}; chat template: {'yes' if tok.chat_template else 'no'}")
    print(f"{len(enc.ids)} tokens, {len(text.encode('utf-8'))} bytes\n")
    rows = []
    print(f"{'#':>4}  {'id':>7}  {'token':<20}  {'text':<20}  bytes")
    for n, (token_id, piece, (a, b)) in enumerate(zip(enc.ids, enc.tokens, enc.offsets, strict=True)):
        raw = tok.token_bytes(token_id)
        rows.append({"id": token_id, "token": piece, "text": text[a:b], "bytes": raw.hex(" ")})
        print(f"{n:>4}  {token_id:>7}  {piece!r:<20}  {text[a:b]!r:<20}  {raw.hex(' ')}")
    return rows


def stats(
    tokenizers: list[str],
    text_file: Path | None = None,
    json_path: Path | None = None,
) -> list[dict]:
    """Compare tokenizers on a held-out text: bytes/token, tokens/word (fertility), unknown rate.

    Args:
        tokenizers: tokenizer directories/files or asset names, compared side by side.
        text_file: held-out text (default: the last Shakespeare play, Winter's Tale).
        json_path: also write the figures as JSON here.
    """
    result = lmforge.compare_tokenizers(tokenizers, text_file, output=json_path)
    print(f"held-out text: {result.text_path} ({result.text_bytes:,} bytes)\n")
    print(result.table())
    return result.to_dict()["tokenizers"]


COMMANDS = {
    "tokenizer train": train,
    "tokenizer encode": encode,
    "tokenizer decode": decode,
    "tokenizer inspect": inspect,
    "tokenizer stats": stats,
}
