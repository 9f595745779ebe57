"""Claim-level factual consistency through the RAG faithfulness scorer: a claim copied from the source is
supported, an invented one (no shared content words) is not and is listed; the per-item score is the
share of supported claims, grouped by model, from the API and the CLI. The default tests use the tiny
random encoder (the word-overlap half of the score decides); the slow one the real MiniLM."""

from __future__ import annotations

import json

import pytest

from lmforge.eval.consistency import consistency, keep_question

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


# --- QA-based consistency ---------------------------------------------------------------------------

TOWER = (
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was designed by the company of "
    "Gustave Eiffel and completed in 1889 as the entrance to the World's Fair. The tower is 330 metres tall "
    "and was the tallest man-made structure in the world for 41 years, until the Chrysler Building in New "
    "York was finished in 1930."
)


def test_answer_spans_numbers_and_names():
    from lmforge.eval.consistency import answer_spans

    assert answer_spans("It was finished in 1,889 by Gustave Eiffel and the City of Paris.") == [
        "1,889",
        "Gustave Eiffel",
        "City of Paris",
    ]
    # a lone capitalized word opening the sentence is not taken as a name; a name that opens it is
    assert answer_spans("Towers are tall.") == []
    assert answer_spans("New York grew in 1930.") == ["New York", "1930"]


def test_answer_recall_and_fill_blank():
    from lmforge.eval.consistency import answer_recall, fill_blank, normalize_answer

    assert normalize_answer("The  Chrysler Building!") == "chrysler building"
    assert answer_recall("the centre of Paris", "Paris") == 1.0
    assert answer_recall("Chrysler Building in New York", "the Empire State Building") == 1 / 3
    assert answer_recall("anything", "the") == 1.0  # nothing left to recall after normalisation
    # the blank ends where the sentence's own text resumes, else at the clause's end
    assert fill_blank("41 years, until the Chrysler", " years, until the Chrysler Building") == "41"
    assert fill_blank("1889 and was the tallest. The E", ".") == "1889 and was the tallest"
    assert fill_blank("3.5 metres, roughly", ".") == "3.5 metres"


def test_split_at_whole_words():
    from lmforge.eval.consistency import split_at

    assert split_at("In 1941 it had 41 rooms.", "41") == ("In 1941 it had ", " rooms.")
    assert split_at("Paris, said Parisians.", "Paris") == ("", ", said Parisians.")


def test_keep_question():
    assert keep_question("It was completed in ____.", "1889", "1889")
    assert not keep_question("It was completed in ____.", "1889", "1899")  # the QA model failed on the output
    assert not keep_question('The answer is "1889"', "1889", "1889")  # gives its answer away
    assert keep_question("Which tower is in Paris?", "the Eiffel Tower", "Eiffel Tower")


def test_qa_pipeline_asks_every_span_and_keeps_only_answerable_questions(tiny_lm, tiny_encoder):
    items = [{"source": TOWER, "output": "It was completed in 1889 in Paris. Towers are tall."}]
    result = consistency(items, encoder=tiny_encoder, qa=True, qa_model=tiny_lm, n_resamples=10, plots=False)
    row = result.report["results"][0]
    qs = row["details"][0]["questions"]
    assert [q["answer"] for q in qs] == ["1889", "Paris"]
    assert [q["question"] for q in qs] == [
        "It was completed in ____ in Paris.",
        "It was completed in 1889 in ____.",
    ]
    for q in qs:  # a random model's answers decide nothing by fiat: the rule is applied to what it wrote
        assert q["kept"] == keep_question(q["question"], q["answer"], q["from_output"])
    assert row["metrics"]["qa_kept"]["value"] == sum(q["kept"] for q in qs) / 2
    assert result.report["config"]["questions"] == "cloze"


def test_written_questions_that_give_the_answer_away_are_dropped(tiny_encoder):
    from lmforge.lm import LM
    from tiny import tiny_chat_tokenizer, tiny_model

    tok = tiny_chat_tokenizer([TOWER, "Write one question about this sentence whose answer is"])
    lm = LM(tiny_model(vocab_size=tok.vocab_size, max_seq_len=512), tok, source="tiny-chat")
    items = [{"source": TOWER, "output": "It was completed in 1889 in Paris."}]
    result = consistency(
        items, encoder=tiny_encoder, qa=True, qa_model=lm, questions="generated", n_resamples=10, plots=False
    )
    qs = result.report["results"][0]["details"][0]["questions"]
    assert [q["answer"] for q in qs] == ["1889", "Paris"] and all(isinstance(q["question"], str) for q in qs)
    for q in qs:
        assert q["kept"] == keep_question(q["question"], q["answer"], q["from_output"])


@pytest.mark.slow
def test_qa_consistency_catches_changed_facts_the_claim_scorer_passes(tmp_path):
    """SmolLM2 as the QA model: an output with its numbers and names changed keeps most of the source's
    words (the claim scorer passes most of its sentences) but the source answers its cloze questions
    differently."""
    import lmforge

    faithful = (
        "The Eiffel Tower was completed in 1889. It is 330 metres tall and stands in Paris. It was the tallest "
        "structure for 41 years, until the Chrysler Building was finished in 1930."
    )
    changed = (
        "The Eiffel Tower was completed in 1899. It is 280 metres tall and stands in Lyon. It was the tallest "
        "structure for 12 years, until the Empire State Building was finished in 1931."
    )
    items = [
        {"model": "faithful", "source": TOWER, "output": faithful},
        {"model": "changed", "source": TOWER, "output": changed},
    ]
    result = consistency(items, qa=True, qa_model=lmforge.load("smollm2"), n_resamples=20, output=tmp_path)
    rows = {r["model"]: r["metrics"] for r in result.report["results"]}
    assert rows["changed"]["consistency"]["value"] >= 0.6  # the claim scorer is fooled by shared words
    assert rows["faithful"]["qa_consistency"]["value"] >= 0.8
    assert rows["changed"]["qa_consistency"]["value"] <= 0.3
    assert rows["changed"]["qa_flagged"]["value"] == 1.0 and rows["faithful"]["qa_flagged"]["value"] == 0.0
    assert (tmp_path / "report.md").exists()
