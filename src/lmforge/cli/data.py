"""Data commands: `lmforge prepare`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from lmforge.data.clean import QualityConfig
from lmforge.data.pipeline import PrepareOptions
from lmforge.data.pipeline import prepare as run_prepare


def prepare(
    inputs: list[str],
    *,
    tokenizer: str,
    output: Path,
    jsonl_field: str = "text",
    normalize: Literal["NFC", "NFKC", "none"] = "NFC",
    dedup: bool = True,
    near_dup: bool = True,
    near_dup_threshold: float = 0.8,
    num_perm: int = 128,
    quality: bool = True,
    min_chars: int = 200,
    min_words: int = 30,
    max_symbol_ratio: float = 0.25,
    max_duplicate_line_fraction: float = 0.3,
    pii: bool = True,
    val_fraction: float = 0.05,
    seed: int = 1234,
    workers: int = 2,
    shard_tokens: int = 100_000_000,
) -> dict:
    """Clean, deduplicate, scrub and tokenize a corpus into memory-mapped shards with a report.

    Writes OUTPUT/{train,val}_NNN.bin (uint16 or uint32 token ids, documents separated by EOS),
    manifest.json (tokenizer fingerprint, counts, sources, seed) and report.json / report.md
    (documents and bytes removed or changed per rule, with examples). Deterministic for a seed.

    Args:
        inputs: text files, directories, .jsonl files, or built-in corpora: shakespeare, lee, wiki.
        tokenizer: tokenizer directory, tokenizer.json, .gguf file or asset name (smollm2, minilm).
        output: output directory (written atomically; an earlier prepare output there is replaced).
        jsonl_field: field of each JSONL record that holds the text.
        normalize: Unicode normalization form (control characters are removed in every case).
        dedup: remove exact duplicates (content hash).
        near_dup: remove near-duplicates (MinHash + LSH).
        near_dup_threshold: Jaccard similarity of word 5-gram sets above which documents are duplicates.
        num_perm: MinHash permutations (more: finer similarity estimates, slower).
        quality: apply the Gopher-style quality rules.
        min_chars: shortest document kept, in characters.
        min_words: fewest words a kept document has.
        max_symbol_ratio: most symbols per alphanumeric character.
        max_duplicate_line_fraction: most lines (of 20+ characters) that repeat an earlier line.
        pii: replace emails, phone numbers, IP addresses and credit-card numbers by tags.
        val_fraction: fraction of documents held out for validation.
        seed: seed of the near-duplicate hashing and of the train/val split.
        workers: tokenization processes.
        shard_tokens: tokens per shard file (shards end at document boundaries).
    """
    from lmforge.tokenizer import Tokenizer

    tok = Tokenizer.load(tokenizer)
    quality_config = (
        QualityConfig(
            min_chars=min_chars,
            min_words=min_words,
            max_symbol_ratio=max_symbol_ratio,
            max_duplicate_line_fraction=max_duplicate_line_fraction,
        )
        if quality
        else None
    )
    options = PrepareOptions(
        jsonl_field=jsonl_field,
        normalize=normalize,
        dedup=dedup,
        near_dup=near_dup,
        near_dup_threshold=near_dup_threshold,
        num_perm=num_perm,
        quality=quality_config,
        pii=pii,
        val_fraction=val_fraction,
        seed=seed,
        workers=workers,
        shard_tokens=shard_tokens,
    )
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    report = run_prepare(inputs, tok, output, options, tokenizer_source=str(tokenizer), log=log)
    print((Path(output) / "report.md").read_text(encoding="utf-8").rstrip())
    print(f"\nwrote {output} (shards, manifest.json, report.json, report.md)")
    return report


COMMANDS = {"prepare": prepare}
