"""Factual consistency of generated texts with their sources, claim by claim (FactCC-style use).

Each output is split into sentences (its claims) and each claim is scored against the item's source by
the RAG faithfulness scorer (`lmforge.rag.faithfulness`: the mean of the best embedding similarity to
the source's sentences and the share of the claim's content words found in the source). Per item:
`consistency` is the share of claims supported (score >= threshold); the report gives its mean over
items with a bootstrap interval, and lists every unsupported claim.

This is a lexical-semantic check, not entailment: a claim that reuses the source's words with a changed
number or a negation can pass, and a faithful paraphrase with new words can fail; read the unsupported
claims, do not only count them. QA-based consistency (questions generated from the output, answered
from the source) is not built yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import LMForgeError
from lmforge.eval.bootstrap import mean_ci
from lmforge.eval.harness import ReportRun, read_jsonl
from lmforge.options import check_types, option


@dataclass
class ConsistencyConfig(ReportRun):
    """How `lmforge.consistency` scores outputs against sources."""

    encoder: str = option("minilm", "sentence encoder for the similarity signal (asset name or checkpoint)")
    threshold: float = option(0.5, "a claim is supported when its score is at least this")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_types(self)


def read_items(path: str | Path) -> list[dict[str, Any]]:
    """JSONL items with `source` and `output` (optionally `model`: outputs are grouped by it)."""
    rows = []
    for ex in read_jsonl(Path(path)):
        if not isinstance(ex.data.get("source"), str) or not isinstance(ex.data.get("output"), str):
            raise LMForgeError(f"{ex.where}: an item needs 'source' and 'output' (strings)")
        rows.append({**ex.data, "where": ex.where})
    return rows


def consistency(
    items: str | Path | Sequence[dict[str, Any]],
    *,
    config: ConsistencyConfig | None = None,
    progress: Callable[[str], None] | None = None,
    **options: Any,
):
    """Claim-level consistency of each item's `output` with its `source`; one report row per `model`."""
    from lmforge.eval.api import EvalResult
    from lmforge.eval.report import build_report, write_report
    from lmforge.lm import load
    from lmforge.options import configure
    from lmforge.rag.faithfulness import score

    encoder_lm = options.pop("encoder") if not isinstance(options.get("encoder", ""), str) else None
    cfg = configure(ConsistencyConfig, config, options, "consistency")
    rows = (
        read_items(items)
        if isinstance(items, (str, Path))
        else [{**r, "where": f"item {i}"} for i, r in enumerate(items)]
    )
    encoder = encoder_lm or load(cfg.encoder)
    kw = {"n_resamples": cfg.n_resamples, "confidence": cfg.confidence, "seed": cfg.seed}
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r.get("model", "outputs")), []).append(r)
    results = []
    for model, group in groups.items():
        if progress:
            progress(f"{model}: {len(group)} outputs")
        start = time.perf_counter()
        details = []
        for r in group:
            f = score(r["output"], [r["source"]], encoder=encoder, threshold=cfg.threshold)
            details.append(
                {
                    "where": r["where"],
                    "consistency": f.faithfulness,
                    "unsupported": f.unsupported,
                    "claims": [{"claim": s.sentence, "score": s.best_score} for s in f.sentences],
                }
            )
        ci = mean_ci([d["consistency"] for d in details], **kw)
        metrics = {
            "consistency": {"value": ci.value, "low": ci.low, "high": ci.high, "confidence": ci.confidence},
            "flagged": {"value": sum(bool(d["unsupported"]) for d in details) / len(details)},
        }
        results.append(
            {
                "task": "consistency",
                "type": "consistency",
                "model": model,
                "metrics": metrics,
                "n_examples": len(group),
                "seconds": time.perf_counter() - start,
                "info": {},
                "details": details,
            }
        )
    task = {
        "name": "consistency",
        "type": "consistency",
        "n_examples": len(rows),
        "description": "share of an output's claims (sentences) supported by its source",
    }
    report = build_report(results, [], [task], {"encoder": cfg.encoder, "threshold": cfg.threshold}, cfg.seed)
    paths = write_report(report, cfg.output, plots=cfg.plots) if cfg.output is not None else {}
    return EvalResult(report, paths)
