"""`lmforge eval`'s rag task type: the whole pipeline (index, retrieval metrics per mode, answers with
and without retrieval, faithfulness) from a task file; the shipped rag-wikipedia task loads."""

from __future__ import annotations

import json

import pytest
from test_eval import QUERIES

from lmforge.eval import harness
from lmforge.rag.models import load_model


@pytest.mark.slow
def test_rag_task_runs_the_pipeline(tmp_path, built):
    folder, _, _ = built
    lines = [
        dict(q, answer=a)
        for q, a in zip(QUERIES, ["lava", "yeast", "Queen's Gambit", "Amazon", "waggle dance"])
    ]
    (tmp_path / "qrels.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (tmp_path / "task.yaml").write_text(
        f"name: tiny-rag\ntype: rag\ncorpus: [{folder}]\nqrels: qrels.jsonl\nstore: tiny.db\n"
        "modes: [bm25, hybrid]\nk: 3\nanswers: 1\nmax_new_tokens: 4\n"
    )
    task = harness.load_task(tmp_path / "task.yaml")
    assert task.options["store"] == str(tmp_path / "tiny.db")
    result = harness.run_task(load_model("smollm2"), task, "smollm2", harness.RunSettings(n_resamples=50))
    assert result.n_examples == 5
    assert {"bm25/recall@3", "bm25/ndcg@3", "hybrid/mrr@3", "hybrid/map"} <= set(result.metrics)
    assert result.metrics["hybrid/recall@3"]["value"] >= 0.8
    for name in ("answer_recall_rag", "answer_recall_closed_book", "faithfulness", "citation_recall"):
        assert 0.0 <= result.metrics[name]["value"] <= 1.0
    assert len(result.details) == 1 and result.details[0]["closed_book"]
    assert (tmp_path / "tiny.db").exists()


def test_shipped_rag_task_loads():
    task = harness.load_task("rag-wikipedia")
    assert task.type == "rag" and task.options["corpus"] == ["wikipedia"]
    assert task.options["qrels"].endswith("rag-wikipedia.qrels.jsonl")
