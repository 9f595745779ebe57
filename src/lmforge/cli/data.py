"""Data commands: `lmforge prepare`.

Every `PrepareOptions` and `QualityConfig` field is an option (`--min-chars`, `--max-top-ngram-fraction`,
`--no-quality`, ...), appended from the config dataclasses; only the options a user types are passed on.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lmforge
from lmforge.options import with_options


@with_options(lmforge.PrepareOptions, lmforge.QualityConfig, skip=("quality_rules",))
def prepare(inputs: list[str], *, tokenizer: str, output: Path, **options: Any) -> dict:
    """Clean, deduplicate, scrub and tokenize a corpus into memory-mapped shards with a report.

    Writes OUTPUT/{train,val}_NNN.bin (uint16 or uint32 token ids, documents separated by EOS),
    manifest.json (tokenizer fingerprint, counts, sources, seed) and report.json / report.md
    (documents and bytes removed or changed per rule, with examples). Deterministic for a seed.
    A quality threshold given as `none` switches its rule off; --no-quality switches all of them off.

    Args:
        inputs: text files, directories, .jsonl files, or built-in corpora: shakespeare, lee, wiki.
        tokenizer: tokenizer directory, tokenizer.json, .gguf file or asset name (smollm2, minilm).
        output: output directory (written atomically; an earlier prepare output there is replaced).
    """
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    result = lmforge.prepare(inputs, tokenizer=tokenizer, output=output, log=log, **options)
    print(result.paths["markdown"].read_text(encoding="utf-8").rstrip())
    print(f"\nwrote {output} (shards, manifest.json, report.json, report.md)")
    return result.report


COMMANDS = {"prepare": prepare}
