"""`prepare`: corpus -> cleaned, deduplicated, scrubbed, split and tokenized shards, with a report.

Steps, in order, each optional and each reported (documents and UTF-8 bytes kept/removed/changed,
with a few examples):
1. normalize   Unicode normalization + control-character cleanup (`clean.normalize_text`);
               documents left empty are removed (rule `empty`);
2. exact_dup   exact duplicates by content hash (`dedup.exact_duplicates`);
3. quality:*   Gopher-style quality rules (`clean.quality_check`), one row per rule;
4. near_dup    MinHash + LSH near-duplicates above a Jaccard threshold (`dedup.near_duplicates`);
5. pii:*       emails, cards, IPs and phone numbers replaced by tags (`pii.scrub_pii`);
6. split       document-level train/val split by seed; 7. tokenize into shards (`shards.write_split`).
The output directory is written atomically: it appears complete or not at all.
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.data.clean import RULES, NormalForm, QualityConfig, normalize_text, quality_verdict
from lmforge.data.corpus import Document, read_corpus
from lmforge.data.dedup import exact_duplicates, near_duplicates
from lmforge.data.pii import TAGS, scrub_pii
from lmforge.data.shards import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    TokenizerLike,
    manifest_json,
    split_train_val,
    token_dtype,
    write_split,
)
from lmforge.errors import LMForgeError
from lmforge.io.atomic import atomic_dir
from lmforge.options import check_types, option

EXAMPLES_PER_RULE = 3
EXAMPLE_CHARS = 160


@dataclass
class PrepareOptions:
    """What `prepare` does; every field is a `lmforge prepare` option, and so is every field of
    `quality_rules` (the thresholds, applied unless `quality` is off)."""

    jsonl_field: str = option("text", "field of each JSONL record that holds the text")
    normalize: NormalForm = option(
        "NFC", "Unicode normalization form (control characters are removed in every case)"
    )
    dedup: bool = option(True, "remove exact duplicates (content hash)")
    near_dup: bool = option(True, "remove near-duplicates (MinHash + LSH)")
    near_dup_threshold: float = option(
        0.8, "Jaccard similarity of word-shingle sets above which documents are near-duplicates"
    )
    num_perm: int = option(128, "MinHash permutations (more: finer similarity estimates, slower)")
    shingle_words: int = option(5, "words per shingle of the near-duplicate comparison")
    quality: bool = option(True, "apply the Gopher-style quality rules with the QualityConfig thresholds")
    quality_rules: QualityConfig = field(default_factory=QualityConfig)
    pii: bool = option(True, "replace emails, phone numbers, IP addresses and credit-card numbers by tags")
    val_fraction: float = option(0.05, "fraction of documents held out for validation")
    seed: int = option(1234, "seed of the near-duplicate hashing and of the train/val split")
    workers: int = option(2, "processes for the per-document work and the tokenization")
    shard_tokens: int = option(100_000_000, "tokens per shard file (shards end at document boundaries)")

    def __post_init__(self) -> None:
        if self.quality is None:  # the older spelling of "no quality rules"
            self.quality = False
        check_types(self)
        checks = {
            "near_dup_threshold": (0.0 < self.near_dup_threshold <= 1.0, "in (0, 1]"),
            "val_fraction": (0.0 <= self.val_fraction < 1.0, "in [0, 1)"),
        }
        for name in ("num_perm", "shingle_words", "workers", "shard_tokens"):
            checks[name] = (getattr(self, name) >= 1, "at least 1")
        for name, (ok, bounds) in checks.items():
            if not ok:
                raise LMForgeError(
                    f"PrepareOptions: option {name} must be {bounds}, got {getattr(self, name)}"
                )


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _snippet(text: str, center: int | None = None) -> str:
    """At most EXAMPLE_CHARS characters of `text` (around `center` when given), on one line."""
    start = 0 if center is None else max(0, center - EXAMPLE_CHARS // 2)
    piece = text[start : start + EXAMPLE_CHARS]
    piece = ("…" if start > 0 else "") + piece + ("…" if start + EXAMPLE_CHARS < len(text) else "")
    return " ".join(piece.split())


class Report:
    """Rows of (rule, action, documents, bytes, examples), in the order the steps ran."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def add(self, rule: str, action: str, doc_bytes: int, example: dict[str, Any] | None = None) -> None:
        row = self.rows.setdefault(
            rule, {"rule": rule, "action": action, "documents": 0, "bytes": 0, "examples": []}
        )
        row["documents"] += 1
        row["bytes"] += doc_bytes
        if example is not None and len(row["examples"]) < EXAMPLES_PER_RULE:
            row["examples"].append(example)

    def ensure(self, rule: str, action: str) -> None:
        self.rows.setdefault(
            rule, {"rule": rule, "action": action, "documents": 0, "bytes": 0, "examples": []}
        )


class _Progress:
    """Prints one line per finished step with its time, so a long run shows where it is."""

    def __init__(self, log: Callable[[str], None] | None):
        self.log, self.start = log, time.perf_counter()

    def __call__(self, step: str, docs: list[Document]) -> None:
        if self.log is not None:
            now = time.perf_counter()
            size = sum(len(d.text) for d in docs) / 1e6
            self.log(
                f"[prepare] {step:<10} {len(docs):>8,} documents {size:>9.2f} M chars  {now - self.start:6.1f} s"
            )
            self.start = now


def scrub_document(text: str) -> tuple[str, dict[str, list[int]]]:
    """PII-scrubbed `text` and {kind: [matches, bytes removed]}, kind by kind so each gets its bytes;
    again while a replacement exposes another match (see `scrub_pii`)."""
    found: dict[str, list[int]] = {}
    while True:
        changed = False
        for kind in TAGS:
            scrubbed, counts = scrub_pii(text, (kind,))
            if counts:
                row = found.setdefault(kind, [0, 0])
                row[0] += counts[kind]
                row[1] += _nbytes(text) - _nbytes(scrubbed)
                text, changed = scrubbed, True
        if not changed:
            return text, found


@contextlib.contextmanager
def parallel_map(workers: int) -> Iterator[Callable[[Callable, list], Iterable]]:
    """An ordered `map` over `workers` processes (the built-in `map` for one worker), so results do
    not depend on the number of workers."""
    if workers <= 1:
        yield map
        return
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ctx.Pool(workers) as pool:
        yield lambda fn, items: pool.imap(fn, items, chunksize=max(1, len(items) // (workers * 16)))


def clean_documents(
    docs: list[Document], opts: PrepareOptions, report: Report, log: Callable[[str], None] | None = None
) -> list[Document]:
    """Steps 1–5 of the module docstring; returns the kept documents, filling `report`. The
    per-document work runs in `opts.workers` processes.

    Consumes `docs`: each entry is set to None once its normalized text is back, and each text is
    dropped once its PII-scrubbed copy is, so at most one version of most documents is held at a time
    (the caller keeps no second copy of the corpus)."""
    with parallel_map(opts.workers) as pmap:
        return _clean(docs, opts, report, _Progress(log), pmap)


def _clean(
    docs: list[Document], opts: PrepareOptions, report: Report, progress: _Progress, pmap: Callable
) -> list[Document]:
    # 1. normalization (skipped with normalize="none") and control characters (always)
    report.ensure("normalize", "changed")
    report.ensure("empty", "removed")
    out = []
    texts: list[str | None] = [d.text for d in docs]
    normalized = pmap(functools.partial(normalize_text, form=opts.normalize), texts)
    for i, text in enumerate(normalized):
        doc = docs[i]
        docs[i] = texts[i] = None  # frees the original text now
        if text != doc.text:
            at = next((j for j, (a, b) in enumerate(zip(text, doc.text)) if a != b), len(text))
            report.add(
                "normalize",
                "changed",
                _nbytes(doc.text) - _nbytes(text),
                {"source": doc.source, "before": _snippet(doc.text, at), "after": _snippet(text, at)},
            )
        if not text.strip():
            report.add("empty", "removed", _nbytes(text), {"source": doc.source, "text": ""})
            continue
        out.append(Document(text, doc.source))
    docs = out
    progress("normalize", docs)
    # 2. exact duplicates
    if opts.dedup:
        report.ensure("exact_dup", "removed")
        dups = exact_duplicates([d.text for d in docs])
        for i, first in dups.items():
            report.add(
                "exact_dup",
                "removed",
                _nbytes(docs[i].text),
                {
                    "source": docs[i].source,
                    "duplicate_of": docs[first].source,
                    "text": _snippet(docs[i].text),
                },
            )
        docs = [d for i, d in enumerate(docs) if i not in dups]
    progress("exact_dup", docs)
    # 3. quality rules
    if opts.quality:
        for rule in RULES:
            report.ensure(f"quality:{rule}", "removed")
        out = []
        verdicts = pmap(functools.partial(quality_verdict, config=opts.quality_rules), [d.text for d in docs])
        for doc, failed in zip(docs, verdicts):
            if failed is None:
                out.append(doc)
            else:
                report.add(
                    f"quality:{failed.rule}",
                    "removed",
                    _nbytes(doc.text),
                    {"source": doc.source, "measured": failed.describe(), "text": _snippet(doc.text)},
                )
        docs = out
    progress("quality", docs)
    # 4. near duplicates
    if opts.near_dup:
        report.ensure("near_dup", "removed")
        near = near_duplicates(
            [d.text for d in docs],
            opts.near_dup_threshold,
            opts.num_perm,
            opts.shingle_words,
            opts.seed,
            map_fn=pmap,
        )
        for i, (kept, sim) in near.items():
            report.add(
                "near_dup",
                "removed",
                _nbytes(docs[i].text),
                {
                    "source": docs[i].source,
                    "similar_to": docs[kept].source,
                    "jaccard_estimate": round(sim, 3),
                    "text": _snippet(docs[i].text),
                },
            )
        docs = [d for i, d in enumerate(docs) if i not in near]
    progress("near_dup", docs)
    # 5. PII
    if opts.pii:
        for kind in TAGS:
            report.ensure(f"pii:{kind}", "replaced")
        out = []
        texts = [d.text for d in docs]
        for i, (text, found) in enumerate(pmap(scrub_document, texts)):
            doc = docs[i]
            docs[i] = texts[i] = None  # frees the unscrubbed text now
            for kind, (matches, removed) in found.items():
                at = text.find(TAGS[kind])
                report.add(
                    f"pii:{kind}",
                    "replaced",
                    removed,
                    {"source": doc.source, "matches": matches, "after": _snippet(text, at)},
                )
            out.append(Document(text, doc.source))
        docs = out
        progress("pii", docs)
    return docs


def render_markdown(report: dict[str, Any]) -> str:
    """The human-readable report."""
    lines = [
        "# lmforge prepare report",
        "",
        f"Inputs: {', '.join(report['inputs'])}  ",
        f"Read {report['read']['documents']:,} documents ({report['read']['bytes']:,} bytes); "
        f"kept {report['kept']['documents']:,} ({report['kept']['bytes']:,} bytes). Seed {report['seed']}.",
        "",
        "| rule | action | documents | bytes |",
        "|---|---|---:|---:|",
    ]
    for row in report["rules"]:
        lines.append(f"| {row['rule']} | {row['action']} | {row['documents']:,} | {row['bytes']:,} |")
    lines += ["", "| split | documents | bytes | tokens |", "|---|---:|---:|---:|"]
    for name, split in report["splits"].items():
        lines.append(f"| {name} | {split['documents']:,} | {split['bytes']:,} | {split['tokens']:,} |")
    examples = [row for row in report["rules"] if row["examples"]]
    if examples:
        lines += ["", "## Examples"]
        for row in examples:
            lines += ["", f"### {row['rule']} ({row['action']})"]
            for ex in row["examples"]:
                detail = "; ".join(
                    f"{k}: {v}" for k, v in ex.items() if k not in ("source", "text", "before", "after")
                )
                lines.append(f"- `{ex['source']}`" + (f" ({detail})" if detail else ""))
                for key in ("text", "before", "after"):
                    if ex.get(key):
                        lines.append(f"  - {key}: {ex[key]}")
    return "\n".join(lines) + "\n"


def _check_output(output: Path) -> None:
    if output.exists() and (
        not output.is_dir() or (any(output.iterdir()) and not (output / MANIFEST).is_file())
    ):
        raise LMForgeError(
            f"output {output} exists and is not an lmforge prepare directory: choose a new --output or remove it"
        )


def prepare(
    inputs: list[str],
    tokenizer: TokenizerLike,
    output: str | Path,
    options: PrepareOptions | None = None,
    tokenizer_source: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the whole pipeline; writes shards, `manifest.json`, `report.json` and `report.md` to
    `output` (atomically) and returns the report."""
    opts = options or PrepareOptions()
    output = Path(output)
    _check_output(output)
    if tokenizer.eos_token_id is None:
        raise LMForgeError("the tokenizer has no EOS token, which separates documents in the shards")

    progress = _Progress(log)
    docs = read_corpus(inputs, opts.jsonl_field)
    progress("read", docs)
    read = {"documents": len(docs), "bytes": sum(_nbytes(d.text) for d in docs)}
    report = Report()
    kept = clean_documents(docs, opts, report, log)
    progress = _Progress(log)
    rules = list(report.rows.values())
    if not kept:
        removed = ", ".join(
            f"{r['rule']} {r['documents']}" for r in rules if r["action"] == "removed" and r["documents"]
        )
        raise LMForgeError(
            f"no documents left after filtering ({read['documents']} read; removed: {removed or 'none'}): "
            "relax the filters (e.g. --min-chars, --no-quality) or add data"
        )
    is_val = split_train_val(len(kept), opts.val_fraction, opts.seed)
    splits_docs = {
        "train": [d for d, v in zip(kept, is_val) if not v],
        "val": [d for d, v in zip(kept, is_val) if v],
    }
    dtype = token_dtype(tokenizer.vocab_size)
    with atomic_dir(output) as tmp:
        splits = {
            name: write_split([d.text for d in sd], tokenizer, tmp, name, opts.workers, opts.shard_tokens)
            for name, sd in splits_docs.items()
        }
        progress("tokenize", kept)
        options_json = {k: v for k, v in asdict(opts).items() if k != "workers"}  # workers change nothing
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "dtype": dtype.name,
            "tokenizer": {
                "fingerprint": tokenizer.fingerprint,
                "vocab_size": tokenizer.vocab_size,
                "eos_token_id": tokenizer.eos_token_id,
                "source": tokenizer_source,
            },
            "seed": opts.seed,
            "sources": list(inputs),
            "documents": {"read": read["documents"], "kept": len(kept)},
            "splits": splits,
            "val_sources": sorted(d.source for d in splits_docs["val"]),
            "options": options_json,
        }
        result = {
            "inputs": list(inputs),
            "seed": opts.seed,
            "read": read,
            "kept": {"documents": len(kept), "bytes": sum(_nbytes(d.text) for d in kept)},
            "rules": rules,
            "splits": {k: {kk: v[kk] for kk in ("documents", "bytes", "tokens")} for k, v in splits.items()},
            "dtype": dtype.name,
            "tokenizer_fingerprint": tokenizer.fingerprint,
        }
        (tmp / MANIFEST).write_text(manifest_json(manifest), encoding="utf-8")
        (tmp / "report.json").write_text(
            json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (tmp / "report.md").write_text(render_markdown(result), encoding="utf-8")
    return result
