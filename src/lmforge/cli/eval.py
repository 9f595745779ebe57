"""`lmforge eval ...`: evaluate models on tasks, compare reports, score prediction files.

`lmforge eval` takes every `EvalConfig` field as an option (`--seed`, `--n-resamples`, `--output`, ...),
appended from the config dataclass; only the options a user types are passed on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lmforge
from lmforge.options import with_options


def _say(message: str) -> None:
    print(f"[eval] {message}", file=sys.stderr, flush=True)


@with_options(lmforge.EvalConfig)
def eval_models(model: list[str] | None = None, task: list[str] | None = None, **options: Any) -> dict:
    """Evaluate one or more models on one or more tasks, side by side; print a summary, and with --output
    write report.json, report.md and plots there.

    Examples: `lmforge eval --model smollm2 --task shakespeare-perplexity --output runs/a`;
    `lmforge eval --model smollm2 --model ckpt/ --task my-task.yaml --task simple-qa`.
    Shipped tasks: `lmforge eval tasks`. Subcommands: `eval compare`, `eval metric`, `eval tasks`.

    Args:
        model: model(s) to evaluate: asset name (smollm2, minilm), checkpoint directory or .gguf file.
        task: task(s): a shipped task name or a .yaml/.jsonl task file.
    """
    result = lmforge.evaluate(model or [], task or [], progress=_say, **options)
    print(result.summary())
    if result.paths:
        print(f"wrote {result.paths['json']} and {result.paths['markdown']}")
    else:
        _say("report not saved: give --output DIR for report.json, report.md and plots")
    return result.report


def eval_compare(a: Path, b: Path, output: Path | None = None) -> str:
    """Compare two evaluation reports (report.json) metric by metric.

    Args:
        a: the baseline report.json.
        b: the report to compare with it.
        output: also write the comparison table (Markdown) to this file.
    """
    table = lmforge.compare_reports(a, b, output=output)
    print(table, end="")
    return table


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
    scores = lmforge.score(name, predictions, references, encoder=encoder, idf=idf)
    print(json.dumps(scores, indent=2))
    return scores


def eval_clipscore(*, model: Path, pairs: Path, resize: bool = False) -> dict:
    """CLIPScore (2.5 · max(cos, 0), Hessel et al. 2021) of image–text pairs under one of our CLIP
    checkpoints; prints JSON with the mean and each pair's score.

    Args:
        model: a CLIP checkpoint directory (e.g. runs/quickstart/clip-1/final).
        pairs: JSONL, one {"image": path, "text": caption} per line (paths relative to the file).
        resize: resize images of another size instead of refusing them.
    """
    scores = lmforge.multimodal.clip_score_pairs(model, pairs, resize)
    print(json.dumps(scores, indent=2))
    return scores


def eval_tasks() -> list[str]:
    """List the shipped evaluation tasks with their type and description."""
    names = lmforge.list_tasks()
    for name in names:
        task = lmforge.load_task(name)
        print(f"{name:28s} {task.type:16s} {task.description}")
    return names


@with_options(lmforge.JudgeConfig)
def eval_judge(model: list[str] | None = None, *, prompts: Path, **options: Any) -> dict:
    """Judge models' answers with a judge model: pairwise (each pair in both orders, win rates with
    intervals, Bradley-Terry and Elo ratings) or single-answer 1-10 grades; prints a summary, and with
    --output writes report.json (every judge prompt and decision), report.md and plots.

    Example: `lmforge eval judge --model smollm2 --model runs/quickstart --prompts prompts.jsonl
    --judge smollm2 --output runs/judge`. The prompts file is JSONL: `prompt`, optionally `answers`
    ({model: answer}; such a model is not run) and `human` (a model name or "tie", or a list of votes).

    Args:
        model: models to compare: asset name, checkpoint directory, .gguf file, or a name in `answers`.
        prompts: JSONL file of prompts.
    """
    result = lmforge.judge(model or [], prompts, progress=_say, **options)
    print(result.summary())
    if result.paths:
        print(f"wrote {result.paths['json']} and {result.paths['markdown']}")
    return result.report


@with_options(lmforge.ReferenceFreeConfig)
def eval_refree(model: list[str] | None = None, *, items: Path, **options: Any) -> dict:
    """Reference-free scores of outputs by scorer models: GPTScore (log-likelihood of the output after an
    aspect instruction) or FED-style (positive minus negative follow-up likelihoods); prints a summary,
    and with --output writes the report files.

    Example: `lmforge eval refree --model smollm2 --items outputs.jsonl --metric fed --output runs/fed`.
    Items are JSONL: `output` (or `response`) and `source` (or `prompt`, or `context`: a list of turns).

    Args:
        model: scorer model(s): asset name, checkpoint directory or .gguf file.
        items: JSONL file of outputs to score.
    """
    result = lmforge.reference_free(model or [], items, progress=_say, **options)
    print(result.summary())
    return result.report


@with_options(lmforge.HumanEvalConfig, skip=("output", "plots"))
def eval_human(*, items: Path, **options: Any) -> None:
    """Serve the human-evaluation page on 127.0.0.1 (pairwise: two anonymized answers in a random order;
    or one answer with 1-5 Likert scales); votes, with annotator ids, go to a SQLite file. Figures:
    `lmforge eval human-results`.

    Example: `lmforge eval human --items items.jsonl --port 8001`, then open http://127.0.0.1:8001/.
    Items are JSONL: `prompt` and `answers` ({model: answer}, two or more: pairwise) or `answer`.

    Args:
        items: JSONL file of items to rate.
    """
    lmforge.human_eval(items, **options)


@with_options(lmforge.HumanEvalConfig, skip=("port",))
def eval_human_results(*, items: Path, **options: Any) -> dict:
    """Turn the votes on an items file into win rates, Bradley-Terry ratings, mean Likert ratings and
    inter-annotator agreement (Cohen's / Fleiss' kappa, Krippendorff's alpha); prints JSON, and with
    --output writes report.json, report.md and plots.

    Args:
        items: the JSONL items file the page served.
    """
    result = lmforge.human_results(items, **options)
    print(json.dumps(result.report["human"], indent=2))
    return result.report


@with_options(lmforge.SafetyConfig)
def eval_safety(model: list[str] | None = None, **options: Any) -> dict:
    """Toxicity of sampled continuations, RealToxicityPrompts-style: expected maximum toxicity and
    toxicity probability over `--samples` continuations per prompt, scored offline by alt-profanity-check's
    shipped classifier (it loads that package's own joblib files, never a user's file).

    Example: `lmforge eval safety --model smollm2 --samples 10 --output runs/safety`.

    Args:
        model: model(s): asset name, checkpoint directory or .gguf file.
    """
    result = lmforge.safety(model or [], progress=_say, **options)
    print(result.summary())
    return result.report


@with_options(lmforge.BiasConfig)
def eval_bias(model: list[str] | None = None, **options: Any) -> dict:
    """Likelihood bias probes: the share of minimal pairs (CrowS-Pairs / StereoSet style, and
    WinoBias-style occupation-pronoun templates) where the model prefers the stereotyped sentence.

    Example: `lmforge eval bias --model smollm2 --output runs/bias`.

    Args:
        model: model(s): asset name, checkpoint directory or .gguf file.
    """
    result = lmforge.bias(model or [], progress=_say, **options)
    print(result.summary())
    return result.report


@with_options(lmforge.ConsistencyConfig)
def eval_consistency(*, items: Path, **options: Any) -> dict:
    """Claim-level factual consistency of outputs with their sources (each sentence scored by the RAG
    faithfulness scorer); prints a summary, and with --output writes the report files.

    Example: `lmforge eval consistency --items outputs.jsonl --output runs/consistency`. Items are
    JSONL: `source`, `output` and optionally `model` (rows are grouped by it).

    Args:
        items: JSONL file of source/output pairs.
    """
    result = lmforge.consistency(items, progress=_say, **options)
    print(result.summary())
    return result.report


COMMANDS = {
    "eval": eval_models,
    "eval compare": eval_compare,
    "eval metric": eval_metric,
    "eval clipscore": eval_clipscore,
    "eval tasks": eval_tasks,
    "eval judge": eval_judge,
    "eval refree": eval_refree,
    "eval human": eval_human,
    "eval human-results": eval_human_results,
    "eval safety": eval_safety,
    "eval bias": eval_bias,
    "eval consistency": eval_consistency,
}
