"""Human evaluation: a small local rating page, votes in SQLite, and the votes turned into figures.

`lmforge eval human --items items.jsonl --port 8001` serves the page on 127.0.0.1. Each annotator
types an id, then sees one unit at a time:
- pairwise (an item with two or more `answers`: every pair of models is a unit): the prompt and two
  answers labelled "Response 1" and "Response 2", never the models' names, in a random order drawn per
  (annotator, unit); buttons for 1 better, tie, 2 better;
- Likert (an item with one `answer`, or one entry in `answers`): the prompt, the answer, and 1-5
  scales for each aspect (coherence, helpfulness, safety by default).
Votes are rows of a SQLite file (annotator, unit, the order shown, the choice or the ratings, time);
voting again on a unit replaces that annotator's vote. `human_results` reads them back: win rates with
bootstrap intervals and Bradley–Terry ratings per model, mean ratings per aspect, and inter-annotator
agreement (Cohen's kappa for two annotators, Fleiss' kappa over units every annotator rated,
Krippendorff's alpha with missing votes: nominal for pairwise choices, ordinal for Likert ratings).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from lmforge.errors import LMForgeError
from lmforge.eval.harness import RunSettings, read_jsonl
from lmforge.options import check_types, option

DEFAULT_ASPECTS = ["coherence", "helpfulness", "safety"]
LIKERT_MAX = 5


@dataclass
class HumanEvalConfig(RunSettings):
    """The rating page's settings: where votes go, the port, and the Likert aspects."""

    db: Path | None = option(
        None, "SQLite file for the votes (unset: ITEMS.votes.sqlite beside the items file)"
    )
    port: int = option(8001, "port on 127.0.0.1")
    aspects: list[str] = option(
        default_factory=lambda: list(DEFAULT_ASPECTS), help="Likert aspects, rated 1-5"
    )
    output: Path | None = option(None, "folder for report.json, report.md and PNG plots of the results")
    plots: bool = option(True, "with an output folder, also draw PNG bar charts")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_types(self)
        if not self.aspects:
            raise LMForgeError("HumanEvalConfig: option aspects needs at least one aspect")


@dataclass(frozen=True)
class Unit:
    """One thing to vote on: a pair of models' answers (pairwise) or one model's answer (Likert)."""

    id: str
    kind: str  # "pairwise" | "likert"
    prompt: str
    models: tuple[str, ...]
    answers: tuple[str, ...]


def load_units(path: str | Path) -> list[Unit]:
    """Units from a JSONL items file: `prompt` plus `answers` ({model: text}) or `answer` (+ `model`)."""
    units = []
    for n, ex in enumerate(read_jsonl(Path(path))):
        d = ex.data
        if not isinstance(d.get("prompt"), str):
            raise LMForgeError(f"{ex.where}: missing field 'prompt' (a string)")
        item_id = str(d.get("id", n))
        answers = d.get("answers")
        if answers is None and isinstance(d.get("answer"), str):
            answers = {str(d.get("model", "model")): d["answer"]}
        if (
            not isinstance(answers, dict)
            or not answers
            or not all(isinstance(v, str) for v in answers.values())
        ):
            raise LMForgeError(f"{ex.where}: give 'answers' ({{model: answer text}}) or 'answer' (a string)")
        if len(answers) == 1:
            ((model, text),) = answers.items()
            units.append(Unit(f"{item_id}:{model}", "likert", d["prompt"], (model,), (text,)))
        for a, b in itertools.combinations(sorted(answers), 2):
            units.append(
                Unit(f"{item_id}:{a}|{b}", "pairwise", d["prompt"], (a, b), (answers[a], answers[b]))
            )
    ids = [u.id for u in units]
    if len(set(ids)) != len(ids):
        raise LMForgeError(f"{path}: two items share an id; give each item a distinct 'id'")
    return units


def swapped(annotator: str, unit_id: str, seed: int) -> bool:
    """Whether this annotator sees this unit's second model on the left: a fair coin per (annotator,
    unit), stable across page reloads and server restarts."""
    digest = hashlib.sha256(f"{seed}\0{annotator}\0{unit_id}".encode()).digest()
    return bool(digest[0] & 1)


def unit_order(annotator: str, units: list[Unit], seed: int) -> list[Unit]:
    """Units in a random order of the annotator's own."""
    return sorted(
        units, key=lambda u: hashlib.sha256(f"{seed}\0order\0{annotator}\0{u.id}".encode()).digest()
    )


class VoteStore:
    """Votes in one SQLite file; a connection per call, so the server's threads never share one."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS votes (annotator TEXT NOT NULL, unit TEXT NOT NULL, kind TEXT NOT NULL,"
        " shown TEXT NOT NULL, choice TEXT, ratings TEXT, created REAL NOT NULL, PRIMARY KEY (annotator, unit))"
    )

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute(self.SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def add(
        self,
        annotator: str,
        unit: str,
        kind: str,
        shown: list[str],
        choice: str | None,
        ratings: dict[str, int] | None,
    ) -> None:
        with self._connect() as con:
            con.execute(
                "INSERT OR REPLACE INTO votes VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    annotator,
                    unit,
                    kind,
                    json.dumps(shown),
                    choice,
                    json.dumps(ratings) if ratings else None,
                    time.time(),
                ),
            )

    def votes(self) -> list[dict[str, Any]]:
        with self._connect() as con:
            rows = con.execute(
                "SELECT annotator, unit, kind, shown, choice, ratings, created FROM votes"
            ).fetchall()
        return [
            {
                "annotator": a,
                "unit": u,
                "kind": k,
                "shown": json.loads(s),
                "choice": c,
                "ratings": json.loads(r) if r else None,
                "created": t,
            }
            for a, u, k, s, c, r, t in rows
        ]

    def done(self, annotator: str) -> set[str]:
        with self._connect() as con:
            return {u for (u,) in con.execute("SELECT unit FROM votes WHERE annotator = ?", (annotator,))}


def create_app(units: list[Unit], store: VoteStore, config: HumanEvalConfig):
    """The FastAPI app: `/` the page, `/api/config`, `/api/next`, `/api/vote`, `/api/results`."""
    from fastapi import Body, FastAPI, HTTPException
    from fastapi.responses import HTMLResponse

    by_id = {u.id: u for u in units}
    app = FastAPI(title="lmforge human evaluation")

    def annotator_id(name: Any) -> str:
        name = name.strip() if isinstance(name, str) else ""
        if not name or len(name) > 64:
            raise HTTPException(422, "annotator id: 1 to 64 characters")
        return name

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return resources.files("lmforge.eval").joinpath("static/human.html").read_text(encoding="utf-8")

    @app.get("/api/config")
    def get_config() -> dict:
        return {"aspects": config.aspects, "scale": LIKERT_MAX, "units": len(units)}

    @app.get("/api/next")
    def next_unit(annotator: str) -> dict:
        who = annotator_id(annotator)
        done = store.done(who)
        todo = [u for u in unit_order(who, units, config.seed) if u.id not in done]
        progress = {"done": len(done & set(by_id)), "total": len(units)}
        if not todo:
            return {"unit": None, **progress}
        u = todo[0]
        answers = list(u.answers)
        if u.kind == "pairwise" and swapped(who, u.id, config.seed):
            answers.reverse()
        return {"unit": u.id, "kind": u.kind, "prompt": u.prompt, "answers": answers, **progress}

    @app.post("/api/vote")
    def vote(v: dict = Body(...)) -> dict:  # noqa: B008 - FastAPI's way to take a JSON body
        """`{annotator, unit, choice: "1" | "2" | "tie"}` (pairwise) or `{annotator, unit, ratings}`."""
        who = annotator_id(v.get("annotator"))
        u = by_id.get(str(v.get("unit")))
        if u is None:
            raise HTTPException(404, f"unknown unit {v.get('unit')!r}")
        if u.kind == "pairwise":
            choice = v.get("choice")
            if choice not in ("1", "2", "tie"):
                raise HTTPException(422, "choice must be '1', '2' or 'tie'")
            shown = list(reversed(u.models)) if swapped(who, u.id, config.seed) else list(u.models)
            winner = "tie" if choice == "tie" else shown[int(choice) - 1]
            store.add(who, u.id, u.kind, shown, winner, None)
        else:
            r = v.get("ratings")
            ok = isinstance(r, dict) and set(r) == set(config.aspects)
            if not ok or not all(isinstance(x, int) and 1 <= x <= LIKERT_MAX for x in r.values()):
                raise HTTPException(422, f"ratings: give {', '.join(config.aspects)}, each 1..{LIKERT_MAX}")
            store.add(who, u.id, u.kind, list(u.models), None, dict(r))
        return {"ok": True}

    @app.get("/api/results")
    def results() -> dict:
        return summarize(units, store.votes(), config)

    return app


def summarize(units: list[Unit], votes: list[dict[str, Any]], settings: HumanEvalConfig) -> dict[str, Any]:
    """Win rates, ratings and agreement from the votes (see the module docstring)."""
    from lmforge.eval.agreement import agreement_summary
    from lmforge.eval.bootstrap import mean_ci
    from lmforge.eval.judge import bradley_terry

    kw = {"n_resamples": settings.n_resamples, "confidence": settings.confidence, "seed": settings.seed}
    by_id = {u.id: u for u in units}
    votes = [v for v in votes if v["unit"] in by_id]
    annotators = sorted({v["annotator"] for v in votes})
    out: dict[str, Any] = {"n_votes": len(votes), "annotators": annotators, "pairwise": {}, "likert": {}}
    pair_votes = [v for v in votes if v["kind"] == "pairwise"]
    if pair_votes:
        pairs: list[tuple[str, str, float]] = []
        by_pair: dict[tuple[str, str], list[float]] = {}
        for v in pair_votes:
            a, b = by_id[v["unit"]].models
            s = 0.5 if v["choice"] == "tie" else float(v["choice"] == a)
            pairs.append((a, b, s))
            by_pair.setdefault((a, b), []).append(s)
        for (a, b), scores in by_pair.items():
            ci = mean_ci(scores, **kw)
            out["pairwise"][f"{a} vs {b}"] = {"a": a, "b": b, "n": len(scores), "win_rate": ci.to_dict()}
        out["ratings"] = bradley_terry(pairs) if len({m for p in pairs for m in p[:2]}) > 1 else {}
        unit_ids = sorted({v["unit"] for v in pair_votes})
        table = {(v["annotator"], v["unit"]): v["choice"] for v in pair_votes}
        out["pairwise_agreement"] = agreement_summary(
            [[table.get((a, u)) for u in unit_ids] for a in annotators], "nominal"
        )
    likert_votes = [v for v in votes if v["kind"] == "likert"]
    if likert_votes:
        for aspect in settings.aspects:
            per_model: dict[str, list[float]] = {}
            for v in likert_votes:
                per_model.setdefault(by_id[v["unit"]].models[0], []).append(v["ratings"][aspect])
            unit_ids = sorted({v["unit"] for v in likert_votes})
            table = {(v["annotator"], v["unit"]): v["ratings"][aspect] for v in likert_votes}
            out["likert"][aspect] = {
                "mean": {m: mean_ci(x, **kw).to_dict() for m, x in per_model.items()},
                "agreement": agreement_summary(
                    [[table.get((a, u)) for u in unit_ids] for a in annotators], "ordinal"
                ),
            }
    return out


def _store(items: str | Path, config: HumanEvalConfig) -> VoteStore:
    return VoteStore(config.db if config.db is not None else Path(str(items) + ".votes.sqlite"))


def human_eval(items: str | Path, *, config: HumanEvalConfig | None = None, **options: Any) -> None:
    """Serve the rating page for `items` on 127.0.0.1:`port` until interrupted."""
    import uvicorn

    from lmforge.options import configure

    cfg = configure(HumanEvalConfig, config, options, "human_eval")
    units = load_units(items)
    store = _store(items, cfg)
    print(f"[human] {len(units)} units; votes in {store.path}; open http://127.0.0.1:{cfg.port}/", flush=True)
    uvicorn.run(
        create_app(units, store, cfg), host="127.0.0.1", port=cfg.port, log_config=None, log_level="warning"
    )


def human_results(items: str | Path, *, config: HumanEvalConfig | None = None, **options: Any):
    """The votes on `items` as figures (the `summarize` dict in the report's `human` field); with
    `output`, the same report files as `lmforge.evaluate` (win rates, ratings, agreement as rows)."""
    from lmforge.eval.api import EvalResult
    from lmforge.eval.report import build_report, write_report
    from lmforge.options import configure

    cfg = configure(HumanEvalConfig, config, options, "human_results")
    units = load_units(items)
    summary = summarize(units, _store(items, cfg).votes(), cfg)
    rows = []
    for name, p in summary["pairwise"].items():
        rows.append(
            {
                "task": "human-pairwise",
                "model": name,
                "n_examples": p["n"],
                "seconds": 0.0,
                "metrics": {"win_rate": p["win_rate"]},
                "info": {},
                "details": [],
            }
        )
    for model, rating in summary.get("ratings", {}).items():
        rows.append(
            {
                "task": "human-ratings",
                "model": model,
                "n_examples": len(summary["annotators"]),
                "seconds": 0.0,
                "metrics": {"bradley_terry": {"value": rating}},
                "info": {},
                "details": [],
            }
        )
    agreements = {"pairwise": summary.get("pairwise_agreement", {})}
    for aspect, a in summary["likert"].items():
        for model, ci in a["mean"].items():
            rows.append(
                {
                    "task": f"human-likert-{aspect}",
                    "model": model,
                    "n_examples": 0,
                    "seconds": 0.0,
                    "metrics": {aspect: ci},
                    "info": {},
                    "details": [],
                }
            )
        agreements[aspect] = a["agreement"]
    for what, stats in agreements.items():
        metrics = {k: {"value": v} for k, v in stats.items() if not k.startswith("n_")}
        if metrics:
            rows.append(
                {
                    "task": "human-agreement",
                    "model": what,
                    "n_examples": len(summary["annotators"]),
                    "seconds": 0.0,
                    "metrics": metrics,
                    "info": {},
                    "details": [],
                }
            )
    report = build_report(
        rows,
        [],
        [{"name": "human", "type": "human", "description": "human votes"}],
        {"items": str(items), "aspects": cfg.aspects},
        cfg.seed,
    )
    report["human"] = summary
    paths = write_report(report, cfg.output, plots=cfg.plots) if cfg.output is not None else {}
    return EvalResult(report, paths)
