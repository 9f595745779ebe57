"""GPTScore and FED-style scores equal a direct log-likelihood computation (one forward pass over the
whole token sequence, log-softmax, the output tokens' log-probabilities), and run from the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.eval.refree import FED_FOLLOWUPS, dialogue_text, fed_scores, gptscore, gptscore_prompt


def direct_logprob(lm, context: str, continuation: str) -> tuple[float, int]:
    tok = lm.tokenizer
    ctx = [tok.bos_token_id, *tok.encode(context)]
    cont = tok.encode(continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(ids)[0].float(), dim=-1)
    total = sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))
    return total, len(cont)


def test_gptscore_is_the_mean_token_loglikelihood_of_the_output(tiny_lm):
    sources, outputs = ["Translate to French: cat", "Summarise: the sky is blue."], ["chat", "Blue sky."]
    scores = gptscore(tiny_lm, sources, outputs, aspect="fluency")
    for s, o, got in zip(sources, outputs, scores):
        from lmforge.eval.refree import GPTSCORE_ASPECTS

        total, n = direct_logprob(tiny_lm, gptscore_prompt(s, GPTSCORE_ASPECTS["fluency"]), " " + o)
        assert got == pytest.approx(total / n, abs=1e-5)
    other = gptscore(tiny_lm, sources, outputs, instruction="Generate a rude reply.")
    assert other != scores  # the instruction is part of the condition


def test_fed_is_positive_minus_negative_followup_likelihood(tiny_lm):
    got = fed_scores(
        tiny_lm, [["Hi!", "Hello, how are you?", "I just got a dog."]], ["What breed is it?"], ["interesting"]
    )
    d = dialogue_text(["Hi!", "Hello, how are you?", "I just got a dog."], "What breed is it?")
    assert d.splitlines()[0] == "User: Hi!" and d.splitlines()[-2] == "Assistant: What breed is it?"
    pos, neg = FED_FOLLOWUPS["interesting"]
    lp = sum(direct_logprob(tiny_lm, d, " " + f)[0] for f in pos) / len(pos)
    ln = sum(direct_logprob(tiny_lm, d, " " + f)[0] for f in neg) / len(neg)
    assert got["interesting"][0] == pytest.approx(lp - ln, abs=1e-4)


@pytest.mark.slow
def test_gptscore_on_smollm2_prefers_the_fluent_output(smollm2):
    """SmolLM2 scores a fluent answer above the same words shuffled (a sanity check of direction)."""
    good, bad = gptscore(
        smollm2,
        ["What colour is the sky?"] * 2,
        ["The sky is blue on a clear day.", "day blue clear The a is on sky."],
    )
    assert good > bad


def test_cli_writes_a_report(tmp_path, monkeypatch):
    from eval.conftest import make_tiny_lm
    from lmforge.cli import main

    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"prompt": "Hi", "response": "Hello there."}) + "\n")
    monkeypatch.setattr("lmforge.lm.load", lambda *a, **k: make_tiny_lm(0))
    assert (
        main(
            [
                "eval",
                "refree",
                "--model",
                "tiny",
                "--items",
                str(items),
                "--metric",
                "fed",
                "--n-resamples",
                "10",
                "--output",
                str(tmp_path / "out"),
                "--no-plots",
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["results"][0]["metrics"]) == set(FED_FOLLOWUPS)
