"""Likelihood-based bias probes: does a model prefer the stereotyped sentence of a minimal pair?

Each probe is a pair of sentences that differ only in a group term (CrowS-Pairs, Nangia et al., 2020;
StereoSet's intrasentence test, Nadeem et al., 2021) or only in a pronoun after an occupation
(WinoBias-style, Zhao et al., 2018). A causal model scores each sentence by its total log-probability
after BOS; the pair counts as "stereotyped" when the stereotyped sentence is the more likely one.
- `stereotype_score`: share of pairs where the stereotyped sentence is preferred (0.5: no preference,
  1: always the stereotype), with a bootstrap interval over pairs;
- `mean_gap`: mean log P(stereotyped) - log P(anti-stereotyped) in nats, with its interval;
- per category (`score:gender`, ...): the share within that category.

The data are ours, written for lmforge (none of the benchmarks' sentences are copied):
- `lmforge/tasks/bias-pairs.jsonl`: 18 CrowS-Pairs-style minimal pairs over gender, age, socioeconomic
  status and physical appearance, each with its two group terms;
- `lmforge/tasks/bias-winobias.jsonl`: 32 sentences pairs, 16 occupations (the 8 most male- and 8 most
  female-dominated of WinoBias' US Bureau of Labor Statistics list we kept) x 2 templates, with the
  pro-stereotypical pronoun as `stereo` and the other as `anti`.
Limits: small (a probe, not a benchmark; intervals are wide), English only, US-centred stereotypes,
binary gender pronouns, total sentence likelihood (longer group terms are penalised: compare gaps within
a pair type, not across), and the known validity problems of such pairs (Blodgett et al., 2021). A low
score does not show a model is fair; a high one is a reason to look closer. Give your own pairs as JSONL
with `stereo`, `anti` and optionally `category`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import LMForgeError
from lmforge.eval.bootstrap import mean_ci
from lmforge.eval.harness import ModelRun, RunSettings, model_name, read_jsonl, shipped_tasks_dir
from lmforge.options import check_types, option

SHIPPED_PROBES = {"stereotype-pairs": "bias-pairs.jsonl", "winobias": "bias-winobias.jsonl"}


@dataclass
class BiasConfig(ModelRun):
    """Which probe sets `lmforge.bias` runs and where the report goes."""

    probes: list[str] = option(
        default_factory=lambda: list(SHIPPED_PROBES),
        help=f"probe sets: shipped names ({', '.join(SHIPPED_PROBES)}) or JSONL files with stereo/anti pairs",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_types(self)


def load_probes(spec: str | Path) -> tuple[str, list[dict[str, Any]]]:
    """(name, pairs) of a shipped probe set or a JSONL file of `stereo` / `anti` pairs."""
    spec = str(spec)
    path = shipped_tasks_dir() / SHIPPED_PROBES[spec] if spec in SHIPPED_PROBES else Path(spec)
    if not path.is_file():
        raise LMForgeError(
            f"unknown probe set '{spec}': not shipped ({', '.join(SHIPPED_PROBES)}) nor a file"
        )
    pairs = []
    for ex in read_jsonl(path):
        if not isinstance(ex.data.get("stereo"), str) or not isinstance(ex.data.get("anti"), str):
            raise LMForgeError(f"{ex.where}: a probe needs 'stereo' and 'anti' sentences (strings)")
        pairs.append({**ex.data, "where": ex.where})
    return (spec if spec in SHIPPED_PROBES else path.stem), pairs


def sentence_logprobs(lm, sentences: Sequence[str]) -> list[float]:
    """Total log P(sentence) in nats, every token scored after BOS."""
    from lmforge.eval.metrics.lm import loglikelihoods

    tok = lm.tokenizer
    if tok.bos_token_id is None:
        raise LMForgeError("bias probes score whole sentences after BOS; this tokenizer has no BOS token")
    requests = [([tok.bos_token_id], tok.encode(s, add_special_tokens=False)) for s in sentences]
    return [ll for ll, _ in loglikelihoods(lm.model, requests)]


def score_pairs(lm, pairs: Sequence[dict[str, Any]], settings: RunSettings) -> tuple[dict, list[dict]]:
    """The probe metrics (see the module docstring) and the per-pair log-probabilities."""
    lls = sentence_logprobs(lm, [p["stereo"] for p in pairs] + [p["anti"] for p in pairs])
    stereo, anti = np.array(lls[: len(pairs)]), np.array(lls[len(pairs) :])
    prefers = (stereo > anti).astype(float)
    kw = {"n_resamples": settings.n_resamples, "confidence": settings.confidence, "seed": settings.seed}
    metrics = {}
    for key, values in (("stereotype_score", prefers), ("mean_gap", stereo - anti)):
        ci = mean_ci(values, **kw)
        metrics[key] = {"value": ci.value, "low": ci.low, "high": ci.high, "confidence": ci.confidence}
    categories = sorted({str(p.get("category", "all")) for p in pairs})
    if len(categories) > 1:
        for c in categories:
            mask = np.array([str(p.get("category", "all")) == c for p in pairs])
            metrics[f"score:{c}"] = {"value": float(prefers[mask].mean())}
    details = [
        {
            "where": p["where"],
            "category": p.get("category"),
            "stereo": p["stereo"],
            "anti": p["anti"],
            "loglik_stereo": float(s),
            "loglik_anti": float(a),
            "prefers_stereo": bool(s > a),
        }
        for p, s, a in zip(pairs, stereo, anti)
    ]
    return metrics, details


def bias(
    models: Sequence[Any],
    *,
    config: BiasConfig | None = None,
    progress: Callable[[str], None] | None = None,
    **options: Any,
):
    """Run the bias probe sets on each model; one report row per (probe set, model)."""
    from lmforge.eval.api import EvalResult
    from lmforge.eval.report import build_report, model_identity, write_report
    from lmforge.options import configure

    cfg = configure(BiasConfig, config, options, "bias")
    probe_sets = [load_probes(p) for p in cfg.probes]
    results, identities = [], []
    for model in models:
        name = model_name(model)
        lm = cfg.load_model(model)
        identities.append(model_identity(name, lm))
        for probe_name, pairs in probe_sets:
            if progress:
                progress(f"{name}: {probe_name} ({len(pairs)} pairs)")
            start = time.perf_counter()
            metrics, details = score_pairs(lm, pairs, cfg)
            results.append(
                {
                    "task": f"bias-{probe_name}",
                    "type": "bias",
                    "model": name,
                    "metrics": metrics,
                    "n_examples": len(pairs),
                    "seconds": time.perf_counter() - start,
                    "info": {},
                    "details": details,
                }
            )
    tasks = [
        {
            "name": f"bias-{n}",
            "type": "bias",
            "n_examples": len(p),
            "description": "share of minimal pairs where the model prefers the stereotyped sentence (0.5: none)",
        }
        for n, p in probe_sets
    ]
    report = build_report(results, identities, tasks, {"probes": list(cfg.probes)}, cfg.seed)
    paths = write_report(report, cfg.output, plots=cfg.plots) if cfg.output is not None else {}
    return EvalResult(report, paths)
