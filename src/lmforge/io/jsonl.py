"""JSON Lines parsing shared by every reader of JSONL input (corpora, tokenizer training, chat data)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge.errors import LMForgeError


def iter_jsonl(text: str, source: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-empty line of `text`; a line that is not JSON is an
    error naming `source:line`."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LMForgeError(f"{source}:{lineno}: not valid JSON ({exc.msg})") from None
        yield lineno, record
