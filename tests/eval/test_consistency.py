"""Claim-level factual consistency through the RAG faithfulness scorer: a claim copied from the source is
supported, an invented one (no shared content words) is not and is listed; the per-item score is the
share of supported claims, grouped by model, from the API and the CLI. The default tests use the tiny
random encoder (the word-overlap half of the score decides); the slow one the real MiniLM."""

from __future__ import annotations

import json

import pytest

from lmforge.eval.consistency import consistency

SOURCE = (
    "The Eiffel Tower is in Paris. It was completed in 1889 for the World's Fair. "
    "It is about 330 metres tall and made of wrought iron."
)


def check_claims(encoder, tmp_path):
    items = [
        {
            "model": "faithful",
            "source": SOURCE,
            "output": "The Eiffel Tower is in Paris. It was completed in 1889 for the World's Fair.",
        },
        {
            "model": "inventive",
            "source": SOURCE,
            "output": "The Eiffel Tower is in Paris. Penguins compose operas in Antarctic submarines.",
        },
    ]
    result = consistency(items, encoder=encoder, n_resamples=20, output=tmp_path, plots=False)
    rows = {r["model"]: r for r in result.report["results"]}
    assert rows["faithful"]["metrics"]["consistency"]["value"] == 1.0
    assert rows["inventive"]["metrics"]["consistency"]["value"] == 0.5
    assert rows["inventive"]["details"][0]["unsupported"] == [
        "Penguins compose operas in Antarctic submarines."
    ]
    assert rows["faithful"]["metrics"]["flagged"]["value"] == 0.0
    assert json.loads((tmp_path / "report.json").read_text())["tasks"][0]["name"] == "consistency"


def test_supported_and_invented_claims(tiny_encoder, tmp_path):
    check_claims(tiny_encoder, tmp_path)


@pytest.mark.slow
def test_supported_and_invented_claims_with_minilm(tmp_path):
    import lmforge

    check_claims(lmforge.load("minilm"), tmp_path)


def test_cli(tmp_path, capsys, monkeypatch, tiny_encoder):
    from lmforge.cli import main

    monkeypatch.setattr("lmforge.lm.load", lambda *a, **k: tiny_encoder)
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"source": SOURCE, "output": "It is about 330 metres tall."}) + "\n")
    assert main(["eval", "consistency", "--items", str(path), "--n-resamples", "10"]) == 0
    assert "consistency" in capsys.readouterr().out
