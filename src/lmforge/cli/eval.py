"""`lmforge eval ...`: evaluate models on tasks, compare reports, score prediction files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lmforge.errors import LMForgeError


def _say(message: str) -> None:
    print(f"[eval] {message}", file=sys.stderr, flush=True)


def eval_models(
    model: list[str] | None = None,
    task: list[str] | None = None,
    output: Path = Path("eval-results"),
    task_options: dict | None = None,
    seed: int = 0,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    device: str | None = None,
    dtype: str | None = None,
    plots: bool = True,
) -> dict:
    """Evaluate one or more models on one or more tasks, side by side; write report.json and report.md.

    Examples: `lmforge eval --model smollm2 --task shakespeare-perplexity`;
    `lmforge eval --model smollm2 --model ckpt/ --task my-task.yaml --task simple-qa`.
    Shipped tasks: `lmforge eval tasks`. Subcommands: `eval compare`, `eval metric`, `eval tasks`.

    Args:
        model: model(s) to evaluate: asset name (smollm2, minilm), checkpoint directory or .gguf file.
        task: task(s): a shipped task name or a .yaml/.jsonl task file.
        output: folder for report.json, report.md and one PNG plot per task.
        task_options: JSON object overriding task options, e.g. '{"max_chars": 20000, "limit": 10}'.
        seed: seed for bootstrap resampling and any sampling.
        n_resamples: bootstrap resamples for the confidence intervals.
        confidence: two-sided confidence level of the intervals.
        device: cpu or cuda (default: cuda when available).
        dtype: float32, bfloat16 or float16 (default: float32 on CPU).
        plots: also draw one PNG bar chart per task.
    """
    from lmforge.eval.harness import RunSettings, evaluate
    from lmforge.eval.report import summary_table, write_report

    report = evaluate(
        model or [],
        task or [],
        settings=RunSettings(seed=seed, n_resamples=n_resamples, confidence=confidence),
        task_options=task_options,
        device=device,
        dtype=dtype,
        progress=_say,
    )
    paths = write_report(report, output, plots=plots)
    print(summary_table(report))
    print(f"wrote {paths['json']} and {paths['markdown']}")
    return report


def eval_compare(a: Path, b: Path, output: Path | None = None) -> str:
    """Compare two evaluation reports (report.json) metric by metric.

    Args:
        a: the baseline report.json.
        b: the report to compare with it.
        output: also write the comparison table (Markdown) to this file.
    """
    from lmforge.eval.report import compare, load_report
    from lmforge.io.atomic import atomic_write_text

    table = compare(
        load_report(a), load_report(b), a_name=Path(a).parent.name or "A", b_name=Path(b).parent.name or "B"
    )
    print(table, end="")
    if output is not None:
        atomic_write_text(output, table)
    return table


def _read_lines_or_jsonl(path: Path, what: str) -> list:
    if not path.is_file():
        raise LMForgeError(f"{what} file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        out = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise LMForgeError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from None
        return out
    return text.splitlines()


METRIC_NAMES = ("bleu", "chrf", "chrf++", "ter", "rouge", "meteor", "bertscore")


def eval_metric(
    name: str, *, predictions: Path, references: Path, encoder: str = "minilm", idf: bool = False
) -> dict:
    """Score a file of predictions against a file of references with one text metric; prints JSON.

    Files hold one text per line (.txt) or one JSON value per line (.jsonl: a string, or a list of
    strings for several references).

    Args:
        name: metric: bleu, chrf, chrf++, ter, rouge, meteor or bertscore.
        predictions: file of predictions, one per line.
        references: file of references, one per line (or .jsonl with lists for multi-reference).
        encoder: BERTScore encoder (asset name or checkpoint directory).
        idf: BERTScore with idf weighting computed on the references.
    """
    from lmforge.eval.metrics import embedding, text

    if name not in METRIC_NAMES:
        raise LMForgeError(f"unknown metric '{name}'; known: {', '.join(METRIC_NAMES)}")
    preds = _read_lines_or_jsonl(predictions, "predictions")
    refs = _read_lines_or_jsonl(references, "references")
    if name == "bertscore":
        import lmforge

        scores = embedding.bertscore(preds, refs, lmforge.load(encoder), idf=idf).to_dict()
    else:
        scores = text.text_metric(name)(preds, refs)
    print(json.dumps(scores, indent=2))
    return scores


def eval_tasks() -> list[str]:
    """List the shipped evaluation tasks with their type and description."""
    from lmforge.eval.harness import list_tasks, load_task

    names = list_tasks()
    for name in names:
        task = load_task(name)
        print(f"{name:28s} {task.type:16s} {task.description}")
    return names


COMMANDS = {
    "eval": eval_models,
    "eval compare": eval_compare,
    "eval metric": eval_metric,
    "eval tasks": eval_tasks,
}
