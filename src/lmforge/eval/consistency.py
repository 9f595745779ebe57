"""Factual consistency of generated texts with their sources: claim by claim (FactCC-style use), and
QA-based (QAGS / QuestEval-style).

Claims: each output is split into sentences and each is scored against the item's source by the RAG
faithfulness scorer (`lmforge.rag.faithfulness`: the mean of the best embedding similarity to the
source's sentences and the share of the claim's content words found in the source). `consistency` is
the share of claims supported (score >= threshold). This is a lexical-semantic check, not entailment:
a claim that reuses the source's words with a changed number or a negation can pass.

QA (`qa=True`), which catches exactly those: answer spans are taken from the output (numbers, dates,
capitalized names), each turned into a question — a cloze (the output's sentence with the span blanked)
or, with `questions="generated"`, a question the QA model writes for that answer. The QA model (a causal
LM, greedy) answers every question twice: reading the output, and reading the source. A cloze is
answered by continuing "text, blank line, the sentence up to the blank"; a generated question through
the chat template. A question whose answer from the output does not contain the span (token recall
< 0.5, SQuAD normalisation), or a written question that contains its own answer, is dropped as a
failure of the QA model, not of the output;
`qa_consistency` is the mean recall of the spans in the source's answers over the questions kept, and a
kept question whose source answer recalls less than half of its span is listed as a conflict. (Recall,
not QAGS's F1: a continuation answers in more words than the span, "Paris" vs "the centre of Paris".)
With SmolLM2-135M cloze questions work (a third to two thirds kept); its written questions mostly
give the answer away and are dropped: use a larger QA model for `questions="generated"`.
"""

from __future__ import annotations

import re
import string
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import LMForgeError
from lmforge.eval.bootstrap import mean_ci
from lmforge.eval.harness import ReportRun, read_jsonl
from lmforge.options import check_types, option


@dataclass
class ConsistencyConfig(ReportRun):
    """How `lmforge.consistency` scores outputs against sources."""

    encoder: str = option("minilm", "sentence encoder for the similarity signal (asset name or checkpoint)")
    threshold: float = option(0.5, "a claim is supported when its score is at least this")
    qa: bool = option(False, "also QA-based consistency: questions from the output, answered from the source")
    qa_model: str = option("smollm2", "the model that writes and answers the questions (asset or checkpoint)")
    questions: Literal["cloze", "generated"] = option(
        "cloze", "QA questions: the output's sentence with the answer blanked, or written by the QA model"
    )
    max_questions: int = option(8, "most QA questions per output (the first answer spans in reading order)")

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


# --- QA-based consistency ---------------------------------------------------------------------------

_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_NAME = re.compile(r"[A-Z][\w'\u2019-]*(?:\s+(?:(?:of|the|de|von|van|and)\s+)?[A-Z][\w'\u2019-]*)*")
_ARTICLES = re.compile(r"\b(a|an|the)\b")

QUESTION_PROMPT = (
    'Sentence: {sentence}\n\nWrite one question about this sentence whose answer is "{span}". '
    "Write only the question."
)
ANSWER_PROMPT = "Text:\n{text}\n\nQuestion: {question}\n\nAnswer with a few words from the text only."


def answer_spans(sentence: str) -> list[str]:
    """Candidate answers in a sentence, in reading order: numbers and capitalized names (a single
    capitalized word opening the sentence is skipped: it is usually not a name)."""
    found: list[tuple[int, int]] = []
    for m in _NUMBER.finditer(sentence):
        found.append((m.start(), m.end()))
    for m in _NAME.finditer(sentence):
        if m.start() == len(sentence) - len(sentence.lstrip()) and " " not in m.group():
            continue
        if not any(a < m.end() and m.start() < b for a, b in found):
            found.append((m.start(), m.end()))
    return [sentence[a:b].rstrip(",") for a, b in sorted(found)]


def split_at(sentence: str, span: str) -> tuple[str, str]:
    """The text before and after the first whole-word occurrence of `span` ("41" is not the end of
    "1941")."""
    m = re.search(rf"(?<!\w){re.escape(span)}(?!\w)", sentence)
    if m is None:
        before, _, after = sentence.partition(span)
        return (before, after) if span in sentence else (sentence, "")
    return sentence[: m.start()], sentence[m.end() :]


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_recall(prediction: str, reference: str) -> float:
    """Share of the reference answer's tokens (SQuAD normalisation, with multiplicity) found in the
    prediction: does this answer contain that one? 1.0 when the reference normalises to nothing."""
    pred, ref = Counter(normalize_answer(prediction).split()), Counter(normalize_answer(reference).split())
    if not ref:
        return 1.0
    return sum((pred & ref).values()) / sum(ref.values())


def keep_question(question: str, span: str, from_output: str) -> bool:
    """A question counts when the output itself answers it (its answer recalls at least half of the
    span) and it does not give its own answer away (a written question containing the whole span)."""
    return answer_recall(from_output, span) >= 0.5 and answer_recall(question, span) < 1.0


def _continue_all(lm, prompts: list[str], max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """Greedy continuations of plain-text prompts (no chat template), first line only; a prompt longer
    than the model's context keeps its end (the question), losing the start of the text."""
    from lmforge.generate.api import generate

    ids = [lm.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    out: list[str] = []
    for i in range(0, len(ids), batch_size):
        done = generate(
            lm, ids[i : i + batch_size], max_new_tokens=max_new_tokens, do_sample=False, truncate_prompt=True
        )
        out.extend(c.text.strip().split("\n")[0] for c in (done if isinstance(done, list) else [done]))
    return out


def _ask_all(lm, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy chat replies of `lm` to user prompts, first line only, without a closing period."""
    chats = [
        lm.tokenizer.decode(
            lm.tokenizer.encode_chat([{"role": "user", "content": p}], add_generation_prompt=True)
        )
        for p in prompts
    ]
    return [r.strip().rstrip(".") for r in _continue_all(lm, chats, max_new_tokens)]


def fill_blank(continuation: str, right: str) -> str:
    """The words a continuation puts in a cloze's blank: up to where the sentence's text after the
    blank resumes (its first word), or else to the first clause-ending punctuation."""
    words = normalize_answer(right).split()
    if words:
        m = re.search(rf"\b{re.escape(words[0])}\b", continuation, flags=re.IGNORECASE)
        if m:
            continuation = continuation[: m.start()]
    return re.split(r"[.;:!?](?=\s|$)|,(?=\s)", continuation, maxsplit=1)[0].strip()


def qa_consistency(rows: Sequence[dict[str, Any]], lm, cfg: ConsistencyConfig) -> list[dict[str, Any]]:
    """Per row: the questions asked of its output, both answers, the source answer's recall of the span, and `qa_consistency` (None
    when no question was kept). A cloze is answered by continuing "text, blank line, the sentence up
    to the blank" (an answer span that opens its sentence has no cloze and is skipped); a generated
    question is answered through the chat template."""
    from lmforge.rag.faithfulness import split_sentences

    asked: list[tuple[int, str, str]] = []  # (row, sentence, span)
    for i, r in enumerate(rows):
        pairs = [(s, a) for s in split_sentences(r["output"]) for a in answer_spans(s)]
        if cfg.questions == "cloze":
            pairs = [(s, a) for s, a in pairs if split_at(s, a)[0].strip()]
        asked.extend((i, s, a) for s, a in pairs[: cfg.max_questions])
    if cfg.questions == "cloze":
        questions = ["____".join(split_at(s, a)) for _, s, a in asked]
        prompts = [
            rows[i][key] + "\n\n" + split_at(s, a)[0].rstrip()
            for key in ("output", "source")
            for i, s, a in asked
        ]
        answers = [
            fill_blank(c, split_at(s, a)[1])
            for c, (_, s, a) in zip(_continue_all(lm, prompts, 12), asked + asked)
        ]
    else:
        questions = _ask_all(lm, [QUESTION_PROMPT.format(sentence=s, span=a) for _, s, a in asked], 32)
        prompts = [
            ANSWER_PROMPT.format(text=rows[i][key], question=q)
            for key in ("output", "source")
            for (i, _, _), q in zip(asked, questions)
        ]
        answers = _ask_all(lm, prompts, 16)
    from_output, from_source = answers[: len(asked)], answers[len(asked) :]
    per_row: list[dict[str, Any]] = [{"questions": [], "qa_consistency": None} for _ in rows]
    for (i, _, span), q, a_out, a_src in zip(asked, questions, from_output, from_source):
        per_row[i]["questions"].append(
            {
                "answer": span,
                "question": q,
                "from_output": a_out,
                "from_source": a_src,
                "recall": answer_recall(a_src, span),
                "kept": keep_question(q, span, a_out),
            }
        )
    for d in per_row:
        kept = [q["recall"] for q in d["questions"] if q["kept"]]
        d["qa_consistency"] = sum(kept) / len(kept) if kept else None
        d["conflicts"] = [q for q in d["questions"] if q["kept"] and q["recall"] < 0.5]
    return per_row


def consistency(
    items: str | Path | Sequence[dict[str, Any]],
    *,
    config: ConsistencyConfig | None = None,
    progress: Callable[[str], None] | None = None,
    **options: Any,
):
    """Claim-level (and with `qa=True` QA-based) consistency of each item's `output` with its `source`;
    one report row per `model`. `encoder` and `qa_model` may be loaded LMs instead of names."""
    from lmforge.eval.api import EvalResult
    from lmforge.eval.report import build_report, write_report
    from lmforge.lm import load
    from lmforge.options import configure
    from lmforge.rag.faithfulness import score

    encoder_lm = options.pop("encoder") if not isinstance(options.get("encoder", ""), str) else None
    qa_lm = options.pop("qa_model") if not isinstance(options.get("qa_model", ""), str) else None
    cfg = configure(ConsistencyConfig, config, options, "consistency")
    rows = (
        read_items(items)
        if isinstance(items, (str, Path))
        else [{**r, "where": f"item {i}"} for i, r in enumerate(items)]
    )
    encoder = encoder_lm or load(cfg.encoder)
    if cfg.qa and qa_lm is None:
        qa_lm = load(cfg.qa_model)
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
        if cfg.qa:
            for d, q in zip(details, qa_consistency(group, qa_lm, cfg)):
                d.update(q)
            scored = [d["qa_consistency"] for d in details if d["qa_consistency"] is not None]
            asked = [q for d in details for q in d["questions"]]
            if scored:
                ci = mean_ci(scored, **kw)
                metrics["qa_consistency"] = {
                    "value": ci.value,
                    "low": ci.low,
                    "high": ci.high,
                    "confidence": ci.confidence,
                }
            metrics["qa_kept"] = {"value": sum(q["kept"] for q in asked) / len(asked) if asked else 0.0}
            metrics["qa_flagged"] = {"value": sum(bool(d["conflicts"]) for d in details) / len(details)}
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
    settings = {"encoder": cfg.encoder, "threshold": cfg.threshold}
    if cfg.qa:
        settings.update(qa_model=cfg.qa_model, questions=cfg.questions, max_questions=cfg.max_questions)
    report = build_report(results, [], [task], settings, cfg.seed)
    paths = write_report(report, cfg.output, plots=cfg.plots) if cfg.output is not None else {}
    return EvalResult(report, paths)
