"""`rag.evaluate` / `lmforge rag eval`: document-level IR metrics checked against ranx, qrels errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ranx import Qrels, Run
from ranx import evaluate as ranx_evaluate

from lmforge import rag
from lmforge.cli import main
from lmforge.errors import LMForgeError
from lmforge.rag.api import document_run, read_qrels

QUERIES = [
    {"query": "molten rock and ash coming out of the ground", "relevant": ["volcano.md"]},
    {"query": "how loaves get fluffy", "relevant": {"bread.txt": 2, "insects.jsonl#bees": 1}},
    {"query": "an opening where white gives up a pawn", "relevant": ["chess.html"]},
    {"query": "the biggest river by water volume", "relevant": ["notes/rivers.md"]},
    {"query": "how insects tell each other where food is", "relevant": ["insects.jsonl#bees"]},
]


@pytest.fixture
def qrels_file(tmp_path, built):
    folder, _, _ = built
    lines = [dict(q) for q in QUERIES]
    lines[3]["relevant"] = [str(folder / "notes" / "rivers.md")]  # an absolute path works too
    path = tmp_path / "qrels.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def test_metrics_match_ranx(built, qrels_file):
    _, store, _ = built
    results = rag.evaluate(store, qrels_file, modes=["bm25", "dense"], k=3, n_resamples=200)
    idx = rag.open_index(store)
    queries, judged = read_qrels(qrels_file, idx)
    assert judged["4"] == {"notes/rivers.md": 1} and judged["2"] == {"bread.txt": 2, "insects.jsonl#bees": 1}
    for mode in ("bm25", "dense"):
        run = document_run(idx, queries, mode, 3)
        oracle = ranx_evaluate(Qrels(judged), Run(run), ["recall@3", "mrr@3", "ndcg@3", "map"])
        for name, value in oracle.items():
            got = results[mode][name]
            assert got["value"] == pytest.approx(value, abs=1e-9)
            assert got["low"] <= got["value"] <= got["high"]
    assert results["dense"]["recall@3"]["value"] >= 0.8  # paraphrased queries still find their document


def test_cli_json(built, qrels_file, capsys):
    _, store, _ = built
    assert (
        main(
            [
                "rag",
                "eval",
                "--store",
                str(store),
                "--qrels",
                str(qrels_file),
                "--modes",
                "dense",
                "--k",
                "3",
                "--json",
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) >= {"recall@3", "mrr@3", "ndcg@3", "map"}


def test_bad_qrels(tmp_path, built):
    _, store, _ = built
    with pytest.raises(LMForgeError, match="does not exist"):
        rag.evaluate(store, tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "x", "relevant": ["not/there.md"]}\n')
    with pytest.raises(LMForgeError, match="not in the store"):
        rag.evaluate(store, bad)
    bad.write_text('{"query": "x"}\n')
    with pytest.raises(LMForgeError, match="relevant"):
        rag.evaluate(store, bad)


def test_shipped_wikipedia_qrels_point_at_the_builtin_corpus():
    from lmforge.eval.harness import shipped_tasks_dir
    from lmforge.rag.ingest import builtin_corpus

    texts = {d.path: " ".join(d.text.lower().split()) for d in builtin_corpus("wikipedia")}
    lines = [
        json.loads(x) for x in (shipped_tasks_dir() / "rag-wikipedia.qrels.jsonl").read_text().splitlines()
    ]
    assert len(lines) >= 50
    for line in lines:
        assert set(line["relevant"]) <= set(texts) and line["answer"]
        # queries paraphrase: no 8-word run of the query appears in its target passage
        words = line["query"].lower().split()
        target = texts[line["relevant"][0]]
        assert not any(" ".join(words[i : i + 8]) in target for i in range(len(words) - 7))


def test_shipped_pydoc_qrels_name_library_pages():
    from lmforge.eval.harness import load_task, shipped_tasks_dir

    task = load_task("rag-pydoc")
    folder = Path(task.options["corpus"][0])
    lines = [json.loads(x) for x in (shipped_tasks_dir() / "rag-pydoc.qrels.jsonl").read_text().splitlines()]
    assert len(lines) == 60 and len({x["id"] for x in lines}) == 60
    for line in lines:
        assert line["answer"] and all(p.endswith(".html") and "/" not in p for p in line["relevant"])
    if folder.is_dir():  # Debian's python3.11-doc, where installed: every named page exists
        assert all((folder / p).is_file() for line in lines for p in line["relevant"])


def _graded(relevant):
    return relevant if isinstance(relevant, dict) else {p: 1 for p in relevant}


def _main_targets(lines):
    """{query id: the documents of its highest grade}."""
    out = {}
    for line in lines:
        rel = _graded(line["relevant"])
        out[line["id"]] = {p for p, g in rel.items() if g == max(rel.values())}
    return out


@pytest.mark.parametrize("name", ["wikipedia", "pydoc"])
def test_development_sets_are_disjoint_from_the_test_sets(name):
    """rag-*-dev (for choosing options) asks about other facts than rag-* (for reporting): no query
    repeated, and no (main document, answer) pair — the same fact — in both."""
    from lmforge.eval.harness import load_task, shipped_tasks_dir

    read = lambda n: [json.loads(x) for x in (shipped_tasks_dir() / n).read_text().splitlines()]  # noqa: E731
    dev, test = read(f"rag-{name}-dev.qrels.jsonl"), read(f"rag-{name}.qrels.jsonl")
    assert load_task(f"rag-{name}-dev").options["qrels"].endswith(f"rag-{name}-dev.qrels.jsonl")
    assert len(dev) >= {"wikipedia": 30, "pydoc": 40}[name] and len({x["id"] for x in dev}) == len(dev)
    assert not {x["id"] for x in dev} & {x["id"] for x in test}
    assert not {x["query"].lower() for x in dev} & {x["query"].lower() for x in test}
    facts = lambda lines: {  # noqa: E731
        (p, x["answer"].lower()) for x, (_, ps) in zip(lines, _main_targets(lines).items()) for p in ps
    }
    assert not facts(dev) & facts(test)
    if name == "wikipedia":  # a dev question's main section is never a test question's target
        test_docs = {p for x in test for p in _graded(x["relevant"])}
        assert not set().union(*_main_targets(dev).values()) & test_docs


def test_shipped_wikipedia_dev_qrels_paraphrase_sections_of_the_builtin_corpus():
    from lmforge.eval.harness import shipped_tasks_dir
    from lmforge.rag.ingest import builtin_corpus

    texts = {d.path: " ".join(d.text.lower().split()) for d in builtin_corpus("wikipedia")}
    lines = [
        json.loads(x)
        for x in (shipped_tasks_dir() / "rag-wikipedia-dev.qrels.jsonl").read_text().splitlines()
    ]
    for line, (_, targets) in zip(lines, _main_targets(lines).items()):
        assert set(_graded(line["relevant"])) <= set(texts) and line["answer"]
        words = line["query"].lower().split()
        for target in targets:
            assert not any(" ".join(words[i : i + 8]) in texts[target] for i in range(len(words) - 7))


def test_shipped_pydoc_dev_qrels_name_library_pages_that_hold_the_answer():
    from lmforge.eval.harness import load_task, shipped_tasks_dir

    folder = Path(load_task("rag-pydoc-dev").options["corpus"][0])
    lines = [
        json.loads(x) for x in (shipped_tasks_dir() / "rag-pydoc-dev.qrels.jsonl").read_text().splitlines()
    ]
    for line, (_, targets) in zip(lines, _main_targets(lines).items()):
        assert line["answer"] and all(p.endswith(".html") and "/" not in p for p in _graded(line["relevant"]))
        if folder.is_dir():  # Debian's python3.11-doc, where installed: the main page names the answer
            assert all(line["answer"] in (folder / p).read_text() for p in targets)
