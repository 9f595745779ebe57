"""Document-level train/val split and tokenization into memory-mapped token shards.

On-disk layout of a prepared dataset directory:
```
manifest.json        format, dtype, tokenizer identity, counts per split, sources, seed, options
train_000.bin ...    raw little-endian token ids (uint16 when vocab_size ≤ 65536, else uint32)
val_000.bin ...      every document is followed by the EOS token; shards end at document boundaries
report.json/.md      what `prepare` kept and removed (written by `lmforge.data.pipeline`)
```
A shard is read with `np.memmap(path, dtype, mode="r")` (see `open_split`), so training never loads
a corpus into memory. Tokenization runs in `workers` processes over chunks of documents and is
gathered in input order, so the bytes written do not depend on the number of workers.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lmforge.errors import LMForgeError

MANIFEST = "manifest.json"
FORMAT = "lmforge-shards"
FORMAT_VERSION = 1


class TokenizerLike(Protocol):
    """The part of `lmforge.tokenizer.Tokenizer` the data pipeline needs."""

    vocab_size: int
    eos_token_id: int | None
    fingerprint: str

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab ≤ 65536), else uint32."""
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    if vocab_size <= 1 << 32:
        return np.dtype(np.uint32)
    raise LMForgeError(f"vocab_size {vocab_size} does not fit in uint32 token shards")


def split_train_val(n_docs: int, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation documents: round(val_fraction·n) of them (at least one when
    val_fraction > 0 and n ≥ 2, never all), chosen by a seeded permutation."""
    if not 0.0 <= val_fraction < 1.0:
        raise LMForgeError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    n_val = round(val_fraction * n_docs)
    if val_fraction > 0 and n_docs >= 2:
        n_val = min(max(n_val, 1), n_docs - 1)
    else:
        n_val = min(n_val, max(n_docs - 1, 0))
    mask = np.zeros(n_docs, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n_docs)[:n_val]] = True
    return mask


# Worker state: set by the pool initializer (inherited, not pickled, with the fork start method).
_WORKER_TOKENIZER: Any = None


def _init_worker(tokenizer: TokenizerLike) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _encode_chunk(args: tuple[list[str], int, str]) -> tuple[np.ndarray, np.ndarray]:
    texts, eos, dtype = args
    return encode_documents(_WORKER_TOKENIZER, texts, eos, np.dtype(dtype))


def encode_documents(
    tokenizer: TokenizerLike, texts: list[str], eos: int, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """(token ids of `texts` as one flat array, each document followed by `eos`; tokens per document
    including its EOS)."""
    pieces: list[np.ndarray] = []
    eos_arr = np.array([eos], dtype=dtype)
    for ids in tokenizer.encode_batch(texts):
        pieces.append(np.asarray(ids, dtype=np.int64).astype(dtype, copy=False))
        pieces.append(eos_arr)
    lengths = np.array([len(p) + 1 for p in pieces[::2]], dtype=np.int64)
    return (np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)), lengths


def _chunks(texts: Sequence[str], chunk_chars: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for text in texts:
        chunk.append(text)
        size += len(text)
        if size >= chunk_chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def tokenize_stream(
    texts: Sequence[str],
    tokenizer: TokenizerLike,
    dtype: np.dtype,
    workers: int = 2,
    chunk_chars: int = 1 << 20,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(tokens, tokens per document) per chunk of documents, in input order."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise LMForgeError("the tokenizer has no EOS token, which separates documents in the shards")
    chunks = list(_chunks(texts, chunk_chars))
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield encode_documents(tokenizer, chunk, eos, dtype)
        return
    # fork shares the tokenizer with the workers without pickling it; elsewhere it must pickle.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    ctx = mp.get_context(method)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(tokenizer,)) as pool:
        jobs = ((chunk, eos, dtype.str) for chunk in chunks)
        yield from pool.imap(_encode_chunk, jobs)


def write_split(
    texts: Sequence[str],
    tokenizer: TokenizerLike,
    out_dir: Path,
    split: str,
    workers: int = 2,
    shard_tokens: int = 100_000_000,
) -> dict[str, Any]:
    """Tokenize `texts` into `{split}_000.bin, ...` under `out_dir`; returns the split's manifest entry."""
    dtype = token_dtype(tokenizer.vocab_size)
    shards: list[dict[str, Any]] = []
    handle = None
    try:
        for tokens, lengths in tokenize_stream(texts, tokenizer, dtype, workers):
            tokens = tokens.astype(dtype.newbyteorder("<"), copy=False)
            start = 0
            while start < len(lengths):
                if handle is None or shards[-1]["tokens"] >= shard_tokens:
                    if handle is not None:
                        handle.close()
                    name = f"{split}_{len(shards):03d}.bin"
                    handle = open(out_dir / name, "wb")  # noqa: SIM115 - closed here or in finally
                    shards.append({"file": name, "tokens": 0, "documents": 0})
                # as many whole documents as fit in this shard (at least one)
                room = shard_tokens - shards[-1]["tokens"]
                ends = np.cumsum(lengths[start:])
                n_docs = max(int(np.searchsorted(ends, room, side="right")), 1)
                begin = int(lengths[:start].sum())
                stop = begin + int(ends[n_docs - 1])
                handle.write(tokens[begin:stop].tobytes())
                shards[-1]["tokens"] += stop - begin
                shards[-1]["documents"] += n_docs
                start += n_docs
    finally:
        if handle is not None:
            handle.close()
    return {
        "shards": shards,
        "tokens": sum(s["tokens"] for s in shards),
        "documents": len(texts),
        "bytes": sum(len(t.encode("utf-8")) for t in texts),
    }


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    """The manifest of a prepared dataset directory, checked for format."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise LMForgeError(
            f"{data_dir} has no {MANIFEST}: create it with `lmforge prepare ... --output {data_dir}`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LMForgeError(f"{path} is not valid JSON ({exc.msg}): run `lmforge prepare` again") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise LMForgeError(
            f"{path} is not an {FORMAT} v{FORMAT_VERSION} manifest: run `lmforge prepare` again"
        )
    return manifest


def open_split(data_dir: str | Path, split: str = "train") -> list[np.memmap]:
    """Read-only memory maps of a split's shards, checked against the manifest's token counts."""
    manifest = read_manifest(data_dir)
    if split not in manifest["splits"]:
        raise LMForgeError(f"{data_dir} has no '{split}' split (has: {', '.join(manifest['splits'])})")
    dtype = np.dtype(manifest["dtype"])
    maps = []
    for shard in manifest["splits"][split]["shards"]:
        path = Path(data_dir) / shard["file"]
        if not path.is_file() or path.stat().st_size != shard["tokens"] * dtype.itemsize:
            raise LMForgeError(f"shard {path} is missing or truncated: run `lmforge prepare` again")
        if shard["tokens"]:
            maps.append(np.memmap(path, dtype=dtype, mode="r"))
    return maps


def manifest_json(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
