"""`lmforge.prepare`: the corpus-to-shards pipeline as one API function with flat keyword options.

```python
result = lmforge.prepare(["shakespeare"], tokenizer="smollm2", output="data/", min_chars=0, pii=False)
result.documents_kept, result.tokens["train"], result.report["rules"]
```
The options are the fields of `PrepareOptions` and of its `QualityConfig` (`quality_rules`), given
flat; all are checked before the tokenizer or the corpus is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.data.clean import QualityConfig
from lmforge.data.pipeline import PrepareOptions
from lmforge.data.pipeline import prepare as run_pipeline
from lmforge.data.shards import MANIFEST, TokenizerLike
from lmforge.options import configure, pick, unknown_error


@dataclass
class PrepareResult:
    """What `prepare` wrote: the output directory and the report (the content of report.json)."""

    output: Path
    report: dict[str, Any]

    @property
    def paths(self) -> dict[str, Path]:
        """manifest.json, report.json and report.md in the output directory."""
        return {
            "manifest": self.output / MANIFEST,
            "json": self.output / "report.json",
            "markdown": self.output / "report.md",
        }

    @property
    def documents_read(self) -> int:
        return self.report["read"]["documents"]

    @property
    def documents_kept(self) -> int:
        return self.report["kept"]["documents"]

    @property
    def tokens(self) -> dict[str, int]:
        """Tokens per split (train, val)."""
        return {name: split["tokens"] for name, split in self.report["splits"].items()}


def prepare_options(
    config: PrepareOptions | None = None, where: str = "prepare", **options: Any
) -> PrepareOptions:
    """`config` (or the defaults) with flat `options` (PrepareOptions and QualityConfig fields) on
    top; unknown names and wrong types are one-line errors naming the option."""
    flat = {**pick(options, PrepareOptions), **pick(options, QualityConfig)}
    if unknown := set(options) - set(flat):
        names = [f.name for cls in (PrepareOptions, QualityConfig) for f in dataclasses.fields(cls)]
        raise unknown_error(unknown, names, where)
    base = configure(PrepareOptions, config, pick(options, PrepareOptions), where)
    if isinstance(base.quality_rules, QualityConfig):  # anything else: PrepareOptions names the field
        rules = configure(QualityConfig, base.quality_rules, pick(options, QualityConfig), where)
        base = dataclasses.replace(base, quality_rules=rules)
    return base


def prepare(
    inputs: str | Path | Sequence[str | Path],
    *,
    tokenizer: str | Path | TokenizerLike,
    output: str | Path,
    config: PrepareOptions | None = None,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> PrepareResult:
    """Clean, deduplicate, scrub and tokenize a corpus into memory-mapped shards with a report.

    Writes OUTPUT/{train,val}_NNN.bin, manifest.json, report.json and report.md atomically;
    deterministic for a seed.

    Args:
        inputs: text files, directories, .jsonl files, or built-in corpora: shakespeare, lee, wiki.
        tokenizer: a loaded tokenizer, or anything `Tokenizer.load` takes (directory, tokenizer.json,
            .gguf file, asset name).
        output: output directory (an earlier prepare output there is replaced).
        config: a PrepareOptions to start from (default: the defaults).
        log: called with one progress line per finished step.
        **options: PrepareOptions and QualityConfig fields, e.g. `min_chars=0`, `quality=False`.
    """
    opts = prepare_options(config, **options)
    inputs = [str(inputs)] if isinstance(inputs, (str, Path)) else [str(i) for i in inputs]
    source = None
    if isinstance(tokenizer, (str, Path)):
        from lmforge.tokenizer import Tokenizer

        source, tokenizer = str(tokenizer), Tokenizer.load(tokenizer)
    report = run_pipeline(inputs, tokenizer, output, opts, tokenizer_source=source, log=log)
    return PrepareResult(Path(output), report)
