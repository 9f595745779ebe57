"""Reference-free scores from a causal LM's likelihoods: GPTScore and FED-style dialogue scores.

- GPTScore (Fu et al., 2023): the mean log-probability per token a scorer model gives an output after
  an instruction that names the aspect ("Generate a fluent response ..."), the source, and a cue. Higher
  is better; it compares outputs scored by one scorer, not across scorers.
- FED-style (Mehri & Eskenazi, 2020): how likely a listener's follow-up is after the response: for each
  quality, the mean log-likelihood of positive follow-ups ("That's really interesting!") minus that of
  negative ones ("That's boring."). The follow-ups here are our own short utterances in FED's style, not
  FED's lists; the dialogue is plain `User:` / `Assistant:` turns so any causal model can score it.

```python
scores = lmforge.eval.refree.gptscore(lm, ["Translate: chat"], ["cat"], aspect="fluency")
result = lmforge.reference_free(["smollm2"], "items.jsonl", metric="fed", output="runs/fed")
```
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmforge.errors import LMForgeError
from lmforge.eval.bootstrap import mean_ci
from lmforge.eval.harness import ModelRun, model_name, read_jsonl
from lmforge.options import check_types, option

GPTSCORE_ASPECTS = {
    "fluency": "Generate a fluent and grammatical response to the following text.",
    "relevance": "Generate a response that is relevant to the following text.",
    "informativeness": "Generate an informative response to the following text.",
    "coherence": "Generate a coherent, well-structured response to the following text.",
    "helpfulness": "Generate a helpful answer to the following question.",
}
FED_FOLLOWUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # quality: (positive follow-ups, negative follow-ups)
    "interesting": (
        ("That's really interesting!", "Wow, I didn't know that."),
        ("That's boring.", "That's not very interesting."),
    ),
    "engaging": (
        ("Tell me more!", "I'd love to hear more about that."),
        ("Let's talk about something else.", "I don't care about that."),
    ),
    "specific": (
        ("That's a good point.", "Thanks, that's useful to know."),
        ("That's too vague.", "That's a very generic answer."),
    ),
    "relevant": (
        ("That answers my question.",),
        ("That has nothing to do with what I said.", "Why are you changing the subject?"),
    ),
    "understandable": (
        ("That makes sense!", "I see what you mean."),
        ("I don't understand at all.", "What does that even mean?"),
    ),
    "fluent": (
        ("That makes sense!", "Well put."),
        ("Is that even proper English?", "That sentence is broken."),
    ),
}


@dataclass
class ReferenceFreeConfig(ModelRun):
    """How `lmforge.reference_free` scores: the metric, the aspect or qualities, and the report."""

    metric: Literal["gptscore", "fed"] = option(
        "gptscore", "gptscore (aspect instruction) or fed (follow-ups)"
    )
    aspect: str = option("fluency", f"GPTScore aspect: {', '.join(GPTSCORE_ASPECTS)}")
    instruction: str | None = option(None, "GPTScore instruction text instead of the aspect's own")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_types(self)
        if self.instruction is None and self.aspect not in GPTSCORE_ASPECTS:
            raise LMForgeError(
                f"ReferenceFreeConfig: unknown aspect '{self.aspect}'; known: {', '.join(GPTSCORE_ASPECTS)} "
                "(or give --instruction TEXT)"
            )


def _bos(tok) -> list[int]:
    return [tok.bos_token_id] if tok.bos_token_id is not None else []


def continuation_logprobs(
    lm, contexts: Sequence[str], continuations: Sequence[str]
) -> list[tuple[float, int]]:
    """(sum of log P(continuation tokens | BOS + context), number of continuation tokens) per pair; the
    two texts are encoded together and the tokens after the context's are scored (lm-evaluation-harness)."""
    from lmforge.eval.metrics.lm import loglikelihoods

    tok = lm.tokenizer
    requests = []
    for ctx, cont in zip(contexts, continuations):
        ctx_ids = tok.encode(ctx, add_special_tokens=False)
        whole = tok.encode(ctx + cont, add_special_tokens=False)
        prefix, target = _bos(tok) + whole[: len(ctx_ids)], whole[len(ctx_ids) :]
        if not prefix or not target:
            raise LMForgeError(f"nothing to score for continuation {cont!r} (empty text, or no BOS token)")
        requests.append((prefix, target))
    lls = loglikelihoods(lm.model, requests)
    return [(ll, len(t)) for (ll, _), (_, t) in zip(lls, requests)]


def gptscore_prompt(source: str, instruction: str) -> str:
    return f"{instruction}\n\nText: {source}\n\nResponse:"


def gptscore(
    lm,
    sources: Sequence[str],
    outputs: Sequence[str],
    aspect: str = "fluency",
    instruction: str | None = None,
) -> list[float]:
    """GPTScore per item: mean log P(output token | instruction, source, previous output tokens)."""
    if len(sources) != len(outputs):
        raise LMForgeError(f"gptscore: {len(sources)} sources but {len(outputs)} outputs")
    text = instruction or GPTSCORE_ASPECTS[aspect]
    scored = continuation_logprobs(
        lm, [gptscore_prompt(s, text) for s in sources], [" " + o for o in outputs]
    )
    return [ll / n for ll, n in scored]


def dialogue_text(context: str | Sequence[str], response: str) -> str:
    """Plain turns, alternating User / Assistant and ending with the response, then the next user cue."""
    turns = [context] if isinstance(context, str) else list(context)
    roles = ["User" if (len(turns) - i) % 2 == 1 else "Assistant" for i in range(len(turns))]
    lines = [f"{r}: {t}" for r, t in zip(roles, turns)] + [f"Assistant: {response}", "User:"]
    return "\n".join(lines)


def fed_scores(
    lm,
    contexts: Sequence[str | Sequence[str]],
    responses: Sequence[str],
    qualities: Sequence[str] | None = None,
) -> dict[str, list[float]]:
    """FED-style score per quality and item: mean log P(positive follow-up) - mean log P(negative one)."""
    qualities = list(qualities or FED_FOLLOWUPS)
    dialogues = [dialogue_text(c, r) for c, r in zip(contexts, responses)]
    out: dict[str, list[float]] = {}
    for q in qualities:
        if q not in FED_FOLLOWUPS:
            raise LMForgeError(f"unknown FED quality '{q}'; known: {', '.join(FED_FOLLOWUPS)}")
        pos, neg = FED_FOLLOWUPS[q]
        scores = []
        for d in dialogues:
            ll = continuation_logprobs(lm, [d] * (len(pos) + len(neg)), [" " + f for f in (*pos, *neg)])
            lp = np.mean([x for x, _ in ll[: len(pos)]])
            ln = np.mean([x for x, _ in ll[len(pos) :]])
            scores.append(float(lp - ln))
        out[q] = scores
    return out


def read_items(path: str | Path) -> list[dict[str, Any]]:
    """JSONL items: `output` (or `response`) and `source` (or `prompt`, or `context`: a list of turns)."""
    rows = []
    for ex in read_jsonl(Path(path)):
        d = ex.data
        output = d.get("output", d.get("response"))
        source = d.get("source", d.get("prompt", d.get("context")))
        if not isinstance(output, str) or source is None:
            raise LMForgeError(
                f"{ex.where}: an item needs 'output' (or 'response') and 'source' (or 'prompt')"
            )
        rows.append({"source": source, "output": output, "where": ex.where})
    return rows


def reference_free(
    models: Sequence[Any],
    items: str | Path | Sequence[dict[str, Any]],
    *,
    config: ReferenceFreeConfig | None = None,
    progress: Callable[[str], None] | None = None,
    **options: Any,
):
    """Score items' outputs with each scorer model (GPTScore or FED-style); per-item scores, means with
    bootstrap intervals, and with `output` the same report files as `lmforge.evaluate`."""
    from lmforge.eval.api import EvalResult
    from lmforge.eval.report import build_report, model_identity, write_report
    from lmforge.options import configure

    cfg = configure(ReferenceFreeConfig, config, options, "reference_free")
    rows = (
        read_items(items)
        if isinstance(items, (str, Path))
        else [
            {
                "source": r.get("source", r.get("prompt", r.get("context"))),
                "output": r.get("output", r.get("response")),
                "where": f"item {i}",
            }
            for i, r in enumerate(items)
        ]
    )
    kw = {"n_resamples": cfg.n_resamples, "confidence": cfg.confidence, "seed": cfg.seed}
    results, identities = [], []
    for model in models:
        name = model_name(model)
        if progress:
            progress(f"{name}: {cfg.metric} on {len(rows)} items")
        lm = cfg.load_model(model)
        identities.append(model_identity(name, lm))
        start = time.perf_counter()
        srcs, outs = [r["source"] for r in rows], [r["output"] for r in rows]
        if cfg.metric == "gptscore":
            per = {
                cfg.aspect if cfg.instruction is None else "custom": gptscore(
                    lm, srcs, outs, cfg.aspect, cfg.instruction
                )
            }
        else:
            per = fed_scores(lm, srcs, outs)
        metrics = {}
        for q, vals in per.items():
            ci = mean_ci(vals, **kw)
            metrics[q] = {"value": ci.value, "low": ci.low, "high": ci.high, "confidence": ci.confidence}
        details = [{"where": r["where"], "scores": {q: per[q][i] for q in per}} for i, r in enumerate(rows)]
        results.append(
            {
                "task": cfg.metric,
                "type": "reference-free",
                "model": name,
                "metrics": metrics,
                "n_examples": len(rows),
                "seconds": time.perf_counter() - start,
                "info": {},
                "details": details,
            }
        )
    task = {
        "name": cfg.metric,
        "type": "reference-free",
        "n_examples": len(rows),
        "description": "GPTScore: mean log-probability per output token after the aspect instruction"
        if cfg.metric == "gptscore"
        else "FED-style: mean log P(positive follow-up) - mean log P(negative)",
    }
    report = build_report(
        results,
        identities,
        [task],
        {"metric": cfg.metric, "aspect": cfg.aspect, "instruction": cfg.instruction},
        cfg.seed,
    )
    paths = write_report(report, cfg.output, plots=cfg.plots) if cfg.output is not None else {}
    return EvalResult(report, paths)
