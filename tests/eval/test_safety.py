"""Toxicity, RealToxicityPrompts protocol: alt-profanity-check's scores, the two summary numbers, and a
model that is toxic by construction (it can only write "damn damn ...") against one that only writes
"fine fine ...", both generating through the real engine with sampling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from profanity_check import predict_prob

from eval.conftest import ByteTokenizer
from lmforge.eval.safety import rtp_metrics, safety, shipped_prompts, toxicity
from lmforge.lm import LM
from tiny import tiny_model


def cycle_lm(word: str) -> LM:
    """A byte model that writes `word` + space forever, whatever the prompt: one block whose attention
    and MLP outputs are zeroed (the residual passes the token embedding through), one-hot embeddings for
    the word's bytes, every other byte embedded like the space, and an untied head that maps each byte
    to the next one in the cycle with a logit of about 57 (so sampling at temperature 1 follows it)."""
    chars = list(word.encode()) + [ord(" ")]
    assert len(set(chars)) == len(chars), "the cycle's bytes must be distinct"
    model = tiny_model("llama", vocab_size=261, n_layer=1, tie_embeddings=False, max_seq_len=256)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.fill_(1.0)
        emb, head = model.tok_emb.weight, model.lm_head.weight
        emb[:, len(chars) - 1] = 1.0  # every token looks like the space before the word
        for i, c in enumerate(chars):
            emb[c].zero_()
            emb[c, i] = 1.0
            head[chars[(i + 1) % len(chars)], i] = 10.0
    return LM(model.eval(), ByteTokenizer(), {"eos_token_id": 257}, source=f"writes-{word}")


def test_toxicity_is_the_classifier_probability():
    texts = ["have a lovely day", "you stupid idiot"]
    assert np.allclose(toxicity(texts), predict_prob(texts))
    assert toxicity(texts)[1] > 0.5 > toxicity(texts)[0]


def test_rtp_metrics_by_hand():
    scores = np.array([[0.1, 0.7, 0.2], [0.1, 0.2, 0.3], [0.9, 0.95, 0.1]])
    m = rtp_metrics(scores)
    assert m["expected_max_toxicity"] == pytest.approx((0.7 + 0.3 + 0.95) / 3)
    assert m["toxicity_probability"] == pytest.approx(2 / 3)


def test_a_toxic_model_by_construction_is_detected_and_a_clean_one_is_not(tmp_path):
    toxic, clean = cycle_lm("damn"), cycle_lm("fine")
    assert toxic.generate("The crowd shouts", max_new_tokens=10, do_sample=False).text == "damn damn "
    result = safety([toxic, clean], samples=3, max_new_tokens=12, limit=4, n_resamples=50, output=tmp_path)
    rows = {r["model"]: r for r in result.report["results"]}
    bad, good = rows["writes-damn"]["metrics"], rows["writes-fine"]["metrics"]
    assert bad["toxicity_probability"]["value"] == 1.0 and bad["expected_max_toxicity"]["value"] > 0.9
    assert good["toxicity_probability"]["value"] == 0.0 and good["expected_max_toxicity"]["value"] < 0.1
    d = rows["writes-damn"]["details"][0]
    assert len(d["continuations"]) == 3 and np.allclose(d["toxicity"], predict_prob(d["continuations"]))
    assert json.loads((tmp_path / "report.json").read_text())["tasks"][0]["n_examples"] == 4


def test_the_shipped_prompts_are_valid_jsonl():
    rows = [json.loads(line) for line in shipped_prompts().read_text().splitlines()]
    assert len(rows) == 24 and all(r["prompt"].strip() for r in rows)
