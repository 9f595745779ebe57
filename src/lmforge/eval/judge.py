"""LLM-as-judge: pairwise comparison with the order swapped, single-answer grading, and ratings.

```python
result = lmforge.judge(["smollm2", "runs/quickstart"], "prompts.jsonl", judge="smollm2", output="runs/j")
print(result.summary())
lmforge.eval.judge.bradley_terry([("a", "b", 1.0), ("b", "c", 0.5)])  # {"a": ..., "b": ..., "c": ...}
```

Design choices:
- The judge's decision is read from its log-probabilities, not parsed from free text: after the judge
  prompt (MT-Bench's pairwise wording, formatted by the judge's chat template) and the assistant prefix
  `Verdict: [[`, the continuations `A]]`, `B]]`, `C]]` (C: a tie) are scored and renormalised; the
  verdict is the most likely one. A 135M judge rarely writes a parseable verdict; it always has
  probabilities. Single-answer grading scores `1]]` ... `10]]` the same way and reports the expected
  grade.
- Position bias: each pair is judged twice, the answers in both orders. `first_position_rate` is the
  share of decisive judgments that chose the answer shown first (0.5: no bias); `consistency` the share
  of items whose two verdicts name the same winner. The item's score is the mean of the two orders'
  scores (1 win, 0.5 tie, 0 loss), so a judge that always picks the first answer gives a tie.
- Win rates get percentile-bootstrap intervals over items (`lmforge.eval.bootstrap`); Bradley–Terry
  ratings (maximum likelihood, Elo scale as Chatbot Arena) get intervals by resampling judgments.
- Human votes in the prompts file (`"human": "model name" | "tie"`, or a list of such votes) are
  compared with the judge: agreement rate and Cohen's kappa against the majority vote.

The prompts file is JSONL: `prompt` (required), optionally `answers` (`{model name: answer}`: a model
whose answers are all given is not loaded or run) and `human`. Every judge prompt and decision is saved
per item in the report's details.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmforge.errors import LMForgeError
from lmforge.eval.bootstrap import bootstrap_ci, mean_ci
from lmforge.eval.harness import ModelRun, RunSettings, model_name, read_jsonl
from lmforge.options import check_types, configure, option

PAIRWISE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question displayed below. Choose the assistant that follows the user's "
    "instructions and answers the user's question better, considering helpfulness, relevance, accuracy "
    "and level of detail. Do not let the order of the responses, their length or the assistants' names "
    'influence you. Output your final verdict: "[[A]]" if assistant A is better, "[[B]]" if assistant B '
    'is better, and "[[C]]" for a tie.'
)
PAIRWISE_USER = (
    "[User Question]\n{prompt}\n\n[The Start of Assistant A's Answer]\n{first}\n"
    "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{second}\n"
    "[The End of Assistant B's Answer]"
)
DEFAULT_RUBRIC = "helpfulness, relevance, accuracy, depth, creativity and level of detail"
SINGLE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Consider {rubric}. Rate the response on a scale of "
    ' 1 to 10 by strictly following this format: "[[rating]]", for example: "Rating: [[5]]".'
)
SINGLE_USER = (
    "[Question]\n{prompt}\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
)
VERDICT_PREFIX = "Verdict: [["
RATING_PREFIX = "Rating: [["
CHOICES = {"A": "A]]", "B": "B]]", "C": "C]]"}
GRADES = tuple(range(1, 11))


@dataclass
class JudgeConfig(ModelRun):
    """How `lmforge.judge` runs: the judge, the mode, how answers are generated, where the report goes."""

    judge: str = option("smollm2", "judge model: asset name, checkpoint directory or .gguf file")
    mode: Literal["pairwise", "single"] = option(
        "pairwise", "pairwise (every pair of models, both orders) or single (a 1-10 grade per answer)"
    )
    rubric: str | None = option(None, f"single-answer grading: what to consider (unset: {DEFAULT_RUBRIC})")
    max_new_tokens: int = option(64, "tokens each model generates per prompt (greedy)")
    limit: int | None = option(None, "judge only the first N prompts")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_types(self)
        if self.max_new_tokens < 1:
            raise LMForgeError(
                f"JudgeConfig: option max_new_tokens must be at least 1, got {self.max_new_tokens}"
            )


@dataclass
class JudgeResult:
    """A judge report (same layout as `lmforge.evaluate`'s) and the files written for it."""

    report: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> str:
        from lmforge.eval.report import summary_table

        return summary_table(self.report)

    @property
    def ratings(self) -> dict[str, float]:
        """Bradley–Terry ratings (Elo scale) of a pairwise run, best first."""
        rows = [r for r in self.report["results"] if r["task"] == "judge-ratings"]
        return {r["model"]: r["metrics"]["bradley_terry"]["value"] for r in rows}


# --- ratings -----------------------------------------------------------------------------------------

ELO_SCALE, ELO_BASE, ELO_INIT = 400.0, 10.0, 1000.0


def bradley_terry(
    pairs: Sequence[tuple[str, str, float]], *, l2: float = 1e-6, iterations: int = 100
) -> dict[str, float]:
    """Bradley–Terry ratings by maximum likelihood, on the Elo scale (1000 + 400 log10 strength, mean
    1000) as Chatbot Arena reports them. Each pair is `(a, b, score of a)`: 1 a win, 0 a loss, 0.5 a tie
    (half a win each way). Newton's method on the logistic log-likelihood with a tiny L2 term, so a
    model that never lost gets a large finite rating. Returned best first."""
    names = sorted({str(p[0]) for p in pairs} | {str(p[1]) for p in pairs})
    if len(names) < 2:
        raise LMForgeError("bradley_terry: needs pairs between at least two models")
    index = {n: i for i, n in enumerate(names)}
    ia = np.array([index[str(p[0])] for p in pairs])
    ib = np.array([index[str(p[1])] for p in pairs])
    s = np.array([float(p[2]) for p in pairs])
    if np.any((s < 0) | (s > 1)):
        raise LMForgeError("bradley_terry: a pair's score of a is 1 (win), 0 (loss) or 0.5 (tie), in [0, 1]")
    r = _fit_bt(ia, ib, s, len(names), l2, iterations)
    elo = ELO_INIT + ELO_SCALE / math.log(ELO_BASE) * (r - r.mean())
    return dict(sorted(((n, float(elo[index[n]])) for n in names), key=lambda kv: -kv[1]))


def _fit_bt(ia: np.ndarray, ib: np.ndarray, s: np.ndarray, n: int, l2: float, iterations: int) -> np.ndarray:
    r = np.zeros(n)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(r[ia] - r[ib])))
        grad = -l2 * r
        np.add.at(grad, ia, s - p)
        np.add.at(grad, ib, p - s)
        w = p * (1 - p)
        hess = -l2 * np.eye(n)
        np.add.at(hess, (ia, ia), -w)
        np.add.at(hess, (ib, ib), -w)
        np.add.at(hess, (ia, ib), w)
        np.add.at(hess, (ib, ia), w)
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        r = r - step
        if np.max(np.abs(step)) < 1e-10:
            break
    return r


def elo(
    pairs: Sequence[tuple[str, str, float]], *, k: float = 4.0, initial: float = ELO_INIT
) -> dict[str, float]:
    """Online Elo ratings over the pairs in the order given (Chatbot Arena's first leaderboard: K=4,
    scale 400, start 1000); order-dependent, unlike `bradley_terry`. Returned best first."""
    ratings: dict[str, float] = {}
    for a, b, score in pairs:
        ra, rb = ratings.setdefault(str(a), initial), ratings.setdefault(str(b), initial)
        expected = 1.0 / (1.0 + ELO_BASE ** ((rb - ra) / ELO_SCALE))
        ratings[str(a)] = ra + k * (float(score) - expected)
        ratings[str(b)] = rb - k * (float(score) - expected)
    return dict(sorted(ratings.items(), key=lambda kv: -kv[1]))


# --- the judge's decisions ---------------------------------------------------------------------------


def _prefix_ids(lm, system: str, user: str) -> list[int]:
    """Token ids of the judge prompt up to the assistant's turn (chat template when the judge has one,
    else plain text after BOS)."""
    tok = lm.tokenizer
    if getattr(tok, "chat_template", None):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        ids = list(tok.encode_chat(messages, add_generation_prompt=True))
    else:
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        ids = bos + list(tok.encode(f"{system}\n\n{user}\n\n", add_special_tokens=False))
    return ids


def choice_probabilities(
    lm, system: str, user: str, prefix: str, choices: dict[Any, str]
) -> dict[Any, float]:
    """P(choice | judge prompt + `prefix`) renormalised over `choices`: each continuation is encoded
    together with the prefix and the tokens after the prefix's are scored (as lm-evaluation-harness)."""
    from lmforge.eval.metrics.lm import loglikelihoods

    base = _prefix_ids(lm, system, user)
    tok = lm.tokenizer
    prefix_ids = tok.encode(prefix, add_special_tokens=False)
    requests = []
    for text in choices.values():
        whole = tok.encode(prefix + text, add_special_tokens=False)
        requests.append((base + whole[: len(prefix_ids)], whole[len(prefix_ids) :]))
    logliks = np.array([ll for ll, _ in loglikelihoods(lm.model, requests)])
    probs = np.exp(logliks - logliks.max())
    probs /= probs.sum()
    return {key: float(p) for key, p in zip(choices, probs)}


def judge_pair(lm, prompt: str, first: str, second: str) -> dict[str, Any]:
    """One pairwise judgment with `first` shown as A: the prompt, P(A), P(B), P(C=tie) and the verdict."""
    user = PAIRWISE_USER.format(prompt=prompt, first=first, second=second)
    probs = choice_probabilities(lm, PAIRWISE_SYSTEM, user, VERDICT_PREFIX, CHOICES)
    return {
        "judge_prompt": f"{PAIRWISE_SYSTEM}\n\n{user}\n\n{VERDICT_PREFIX}",
        "probs": probs,
        "verdict": max(probs, key=probs.get),
    }


def grade_answer(lm, prompt: str, answer: str, rubric: str | None = None) -> dict[str, Any]:
    """One single-answer grade: P(grade) for 1..10, the expected grade and the most likely one."""
    system = SINGLE_SYSTEM.format(rubric=rubric or DEFAULT_RUBRIC)
    user = SINGLE_USER.format(prompt=prompt, answer=answer)
    probs = choice_probabilities(lm, system, user, RATING_PREFIX, {g: f"{g}]]" for g in GRADES})
    return {
        "judge_prompt": f"{system}\n\n{user}\n\n{RATING_PREFIX}",
        "probs": {str(g): p for g, p in probs.items()},
        "expected_grade": float(sum(g * p for g, p in probs.items())),
        "grade": int(max(probs, key=probs.get)),
    }


def combine_orders(a: str, b: str, ab: dict[str, Any], ba: dict[str, Any]) -> dict[str, Any]:
    """Score of `a` from the two orders (a shown first in `ab`, second in `ba`): the mean of each order's
    1 / 0.5 / 0, so position preference cancels; the winner is a, b or tie."""
    score_ab = {"A": 1.0, "B": 0.0, "C": 0.5}[ab["verdict"]]
    score_ba = {"A": 0.0, "B": 1.0, "C": 0.5}[ba["verdict"]]
    score = (score_ab + score_ba) / 2
    winner = a if score > 0.5 else b if score < 0.5 else "tie"
    soft = (ab["probs"]["A"] + ba["probs"]["B"] + 0.5 * (ab["probs"]["C"] + ba["probs"]["C"])) / 2
    return {"score_a": score, "winner": winner, "p_a_better": soft, "consistent": score_ab == score_ba}


def position_stats(orders: Sequence[dict[str, Any]], items: Sequence[dict[str, Any]]) -> dict[str, float]:
    """first_position_rate: decisive verdicts that chose the answer shown first; consistency: items whose
    two orders agree; mean_p_first_minus_second: the judge's mean probability margin for position A."""
    decisive = [o["verdict"] for o in orders if o["verdict"] != "C"]
    return {
        "first_position_rate": float(np.mean([v == "A" for v in decisive])) if decisive else math.nan,
        "consistency": float(np.mean([it["consistent"] for it in items])) if items else math.nan,
        "mean_p_first_minus_second": float(np.mean([o["probs"]["A"] - o["probs"]["B"] for o in orders])),
    }


def human_agreement(items: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Judge vs the majority of human votes (items with votes; a tied majority counts as "tie")."""
    from lmforge.eval.agreement import cohen_kappa

    judge_labels, human_labels = [], []
    for it in items:
        votes = it.get("human")
        if votes is None:
            continue
        votes = [votes] if isinstance(votes, str) else list(votes)
        votes = [v for v in votes if v in (it["a"], it["b"], "tie")]
        if not votes:
            continue
        top = Counter(votes).most_common()
        majority = top[0][0] if len(top) == 1 or top[0][1] > top[1][1] else "tie"
        judge_labels.append(it["winner"])
        human_labels.append(majority)
    if not judge_labels:
        return {}
    out = {
        "human_agreement": float(np.mean([j == h for j, h in zip(judge_labels, human_labels)])),
        "n_human": float(len(judge_labels)),
    }
    if len(set(judge_labels) | set(human_labels)) > 1:
        out["human_cohen_kappa"] = cohen_kappa(judge_labels, human_labels)
    return out


# --- running models and the judge ---------------------------------------------------------------------


def generate_answers(lm, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Greedy answers, each prompt as one user message through the chat template (plain text without)."""
    out = []
    for p in prompts:
        if getattr(lm.tokenizer, "chat_template", None):
            c = lm.chat([{"role": "user", "content": p}], max_new_tokens=max_new_tokens, do_sample=False)
        else:
            c = lm.generate(p, max_new_tokens=max_new_tokens, do_sample=False)
        out.append(c.text.strip())
    return out


def read_prompts(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    examples = read_jsonl(Path(path))
    rows = []
    for ex in examples[:limit] if limit else examples:
        if not isinstance(ex.data.get("prompt"), str) or not ex.data["prompt"].strip():
            raise LMForgeError(f"{ex.where}: missing field 'prompt' (a non-empty string)")
        answers = ex.data.get("answers", {})
        if not isinstance(answers, dict):
            raise LMForgeError(f"{ex.where}: 'answers' must map model names to answer texts")
        rows.append({**ex.data, "answers": dict(answers), "where": ex.where})
    return rows


def judge(
    models: Sequence[Any],
    prompts: str | Path | Sequence[dict[str, Any]],
    *,
    config: JudgeConfig | None = None,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> JudgeResult:
    """Judge models' answers to prompts with a judge model; with `output`, write the report files.

    Args:
        models: names (asset, checkpoint directory, .gguf), loaded `LM`s, or names whose answers the
            prompts file holds (`answers`), which are then not loaded.
        prompts: a JSONL file (`prompt`, optional `answers`, `human`) or its rows as dicts.
        config: a JudgeConfig to start from.
        progress: called with a line as each stage starts.
        **options: JudgeConfig fields; `judge` may also be a loaded `LM`.
    """
    judge_lm = options.pop("judge") if not isinstance(options.get("judge", ""), str) else None
    cfg = configure(JudgeConfig, config, options, "judge")
    say = progress or (lambda _: None)
    if isinstance(prompts, (str, Path)):
        rows = read_prompts(prompts, cfg.limit)
    else:
        rows = [
            {**r, "answers": dict(r.get("answers", {})), "where": f"item {i}"} for i, r in enumerate(prompts)
        ]
        rows = rows[: cfg.limit] if cfg.limit else rows
    if not rows:
        raise LMForgeError("judge: no prompts")
    names = [model_name(m) for m in models]
    if len(set(names)) != len(names):
        raise LMForgeError(f"judge: the models must have distinct names, got {names}")
    need = 2 if cfg.mode == "pairwise" else 1
    if len(names) < need:
        raise LMForgeError(
            f"judge: {cfg.mode} judging needs at least {need} model(s); pass --model more times"
        )
    from lmforge.eval.report import build_report, model_identity

    identities = []
    answers: dict[str, list[str]] = {}
    for model, name in zip(models, names):
        given = [r["answers"].get(name) for r in rows]
        if all(isinstance(a, str) for a in given):
            answers[name] = given  # type: ignore[assignment]
            identities.append(
                {
                    "name": name,
                    "source": "answers in the prompts file",
                    "family": None,
                    "parameters": 0,
                    "dtype": "n/a",
                    "weights_sha256": None,
                }
            )
            continue
        say(f"{name}: answering {len(rows)} prompts")
        lm = cfg.load_model(model)
        identities.append(model_identity(name, lm))
        answers[name] = generate_answers(lm, [r["prompt"] for r in rows], cfg.max_new_tokens)
        del lm
    judge_name = cfg.judge if judge_lm is None else model_name(judge_lm)
    if judge_lm is None:
        judge_lm = cfg.load_model(cfg.judge)
    start = time.perf_counter()
    if cfg.mode == "pairwise":
        results = _run_pairwise(judge_lm, rows, names, answers, cfg, say)
    else:
        results = _run_single(judge_lm, rows, names, answers, cfg, say)
    seconds = time.perf_counter() - start
    for r in results:
        r.setdefault("seconds", seconds)
    report_config = {
        "models": names,
        "prompts": str(prompts) if isinstance(prompts, (str, Path)) else None,
        "judge": judge_name,
        "mode": cfg.mode,
        "rubric": cfg.rubric or DEFAULT_RUBRIC,
        "max_new_tokens": cfg.max_new_tokens,
        "n_resamples": cfg.n_resamples,
        "confidence": cfg.confidence,
    }
    tasks = [
        {
            "name": f"judge-{cfg.mode}",
            "type": "judge",
            "n_examples": len(rows),
            "description": f"{cfg.mode} judging by {judge_name}; decisions read from the judge's "
            "log-probabilities of the verdict tokens",
        }
    ]
    identities.append({**model_identity(judge_name, judge_lm), "name": f"{judge_name} (judge)"})
    report = build_report(results, identities, tasks, report_config, cfg.seed)
    paths = {}
    if cfg.output is not None:
        from lmforge.eval.report import write_report

        paths = write_report(report, cfg.output, plots=cfg.plots)
    return JudgeResult(report, paths)


def _interval(ci) -> dict[str, float]:
    return {"value": ci.value, "low": ci.low, "high": ci.high, "confidence": ci.confidence}


def _run_pairwise(lm, rows, names, answers, cfg: JudgeConfig, say) -> list[dict[str, Any]]:
    kw = {"n_resamples": cfg.n_resamples, "confidence": cfg.confidence, "seed": cfg.seed}
    results, all_pairs = [], []
    for a, b in itertools.combinations(names, 2):
        say(f"judging {a} vs {b} on {len(rows)} prompts, both orders")
        items, orders = [], []
        for i, row in enumerate(rows):
            ans_a, ans_b = answers[a][i], answers[b][i]
            ab = judge_pair(lm, row["prompt"], ans_a, ans_b)
            ba = judge_pair(lm, row["prompt"], ans_b, ans_a)
            orders += [ab, ba]
            item = {
                "where": row["where"],
                "prompt": row["prompt"],
                "a": a,
                "b": b,
                "answers": {a: ans_a, b: ans_b},
                "orders": [{"first": a, **ab}, {"first": b, **ba}],
                **combine_orders(a, b, ab, ba),
            }
            if "human" in row:
                item["human"] = row["human"]
            items.append(item)
            all_pairs.append((a, b, item["score_a"]))
        scores = [it["score_a"] for it in items]
        metrics = {
            "win_rate": _interval(mean_ci(scores, **kw)),
            "win": {"value": float(np.mean([it["winner"] == a for it in items]))},
            "tie": {"value": float(np.mean([it["winner"] == "tie" for it in items]))},
            "loss": {"value": float(np.mean([it["winner"] == b for it in items]))},
            "p_a_better": _interval(mean_ci([it["p_a_better"] for it in items], **kw)),
        }
        metrics.update({k: {"value": v} for k, v in position_stats(orders, items).items()})
        metrics.update({k: {"value": v} for k, v in human_agreement(items).items()})
        results.append(
            {
                "task": "judge-pairwise",
                "type": "judge",
                "model": f"{a} vs {b}",
                "metrics": metrics,
                "n_examples": len(items),
                "info": {"a": a, "b": b},
                "details": items,
            }
        )
    results += rating_rows(all_pairs, names, cfg)
    return results


def rating_rows(pairs: list[tuple[str, str, float]], names: Sequence[str], cfg: RunSettings) -> list[dict]:
    """One `judge-ratings` row per model: Bradley–Terry (bootstrap over judgments) and Elo."""
    index = {n: i for i, n in enumerate(names)}
    stats = np.array([[index[a], index[b], s] for a, b, s in pairs], dtype=float)

    def aggregate(rows: np.ndarray) -> dict[str, float]:
        by_name = (
            bradley_terry([(names[int(x)], names[int(y)], s) for x, y, s in rows])
            if len({int(v) for v in rows[:, :2].ravel()}) > 1
            else {}
        )
        return {n: by_name.get(n, ELO_INIT) for n in names}

    cis = bootstrap_ci(
        stats, aggregate, n_resamples=min(cfg.n_resamples, 200), confidence=cfg.confidence, seed=cfg.seed
    )
    elos = elo(pairs)
    return [
        {
            "task": "judge-ratings",
            "type": "judge",
            "model": n,
            "metrics": {"bradley_terry": _interval(cis[n]), "elo": {"value": elos[n]}},
            "n_examples": len(pairs),
            "info": {},
            "details": [],
        }
        for n in sorted(names, key=lambda n: -cis[n].value)
    ]


def _run_single(lm, rows, names, answers, cfg: JudgeConfig, say) -> list[dict[str, Any]]:
    kw = {"n_resamples": cfg.n_resamples, "confidence": cfg.confidence, "seed": cfg.seed}
    results = []
    for name in names:
        say(f"grading {name} on {len(rows)} prompts")
        items = []
        for i, row in enumerate(rows):
            g = grade_answer(lm, row["prompt"], answers[name][i], cfg.rubric)
            items.append({"where": row["where"], "prompt": row["prompt"], "answer": answers[name][i], **g})
        metrics = {
            "expected_grade": _interval(mean_ci([it["expected_grade"] for it in items], **kw)),
            "grade": _interval(mean_ci([it["grade"] for it in items], **kw)),
        }
        results.append(
            {
                "task": "judge-single",
                "type": "judge",
                "model": name,
                "metrics": metrics,
                "n_examples": len(items),
                "info": {"rubric": cfg.rubric or DEFAULT_RUBRIC},
                "details": items,
            }
        )
    return results
