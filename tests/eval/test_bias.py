"""Bias probes on models biased by construction and not: a byte n-gram model (an `nn.Module` returning
log-probabilities as logits) estimated on the stereotyped sentences only prefers them (score 1, gap
interval above 0); one estimated on both sentences of every pair has almost none (a mean gap of a few
hundredths of a nat, left by the smoothing on terms of unequal length). The scores are also checked against a direct sum of log-probabilities."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from eval.conftest import ByteTokenizer
from lmforge.eval.bias import bias, load_probes, sentence_logprobs
from lmforge.lm import LM

V = 261


class NGramModel(torch.nn.Module):
    """Interpolated byte n-gram LM (Witten-Bell style: P_k(y|h) = (c(h, y) + P_{k-1}(y|h')) / (c(h) + 1),
    uniform at the bottom), estimated on BOS + bytes + EOS of `texts`; forward gives log P as logits."""

    def __init__(self, texts: list[str], order: int = 64):
        super().__init__()
        self.order = order
        self.config = SimpleNamespace(max_seq_len=512, n_layer=0, d_model=V, family="byte-ngram")
        self._device = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
        self.counts: dict[tuple[int, ...], Counter] = defaultdict(Counter)
        for t in texts:
            seq = [256, *t.encode(), 257]
            for i in range(1, len(seq)):
                for k in range(order):
                    if i - k >= 0:
                        self.counts[tuple(seq[i - k : i])][seq[i]] += 1

    def dist(self, history: list[int]) -> np.ndarray:
        p = np.full(V, 1.0 / V)
        for k in range(self.order):
            if k > len(history):
                break
            c = self.counts.get(tuple(history[len(history) - k :]))
            if not c:
                break
            counts = np.zeros(V)
            counts[list(c)] = list(c.values())
            p = (counts + p) / (counts.sum() + 1.0)
        return p

    def forward(self, input_ids: torch.Tensor, **_) -> torch.Tensor:
        out = torch.zeros(*input_ids.shape, V)
        for b, row in enumerate(input_ids.tolist()):
            for t in range(len(row)):
                out[b, t] = torch.from_numpy(np.log(self.dist(row[: t + 1])))
        return out


def ngram_lm(texts: list[str], name: str) -> LM:
    return LM(NGramModel(texts), ByteTokenizer(), source=name)


@pytest.fixture(scope="module")
def probes():
    return [p for name in ("stereotype-pairs", "winobias") for p in load_probes(name)[1]]


def test_sentence_logprob_is_the_sum_of_token_logprobs(probes):
    lm = ngram_lm([p["stereo"] for p in probes[:5]], "m")
    s = probes[0]["stereo"]
    seq = [256, *s.encode()]
    direct = sum(float(np.log(lm.model.dist(seq[:i])[seq[i]])) for i in range(1, len(seq)))
    assert sentence_logprobs(lm, [s])[0] == pytest.approx(direct, abs=1e-4)


def test_a_biased_model_is_detected_and_a_balanced_one_is_not(probes, tmp_path):
    biased = ngram_lm([p["stereo"] for p in probes], "biased")
    balanced = ngram_lm([p["stereo"] for p in probes] + [p["anti"] for p in probes], "balanced")
    result = bias([biased, balanced], n_resamples=300, output=tmp_path, plots=False)
    rows = {(r["task"], r["model"]): r["metrics"] for r in result.report["results"]}
    for task in ("bias-stereotype-pairs", "bias-winobias"):
        b, f = rows[(task, "biased")], rows[(task, "balanced")]
        assert b["stereotype_score"]["value"] == 1.0 and b["mean_gap"]["low"] > 1.0
        # balanced: what is left is the smoothing's residue on unequal lengths (he/she), a few hundredths
        # of a nat against the biased model's nats
        assert abs(f["mean_gap"]["value"]) < 0.01 * b["mean_gap"]["low"] > f["mean_gap"]["high"]
    assert rows[("bias-stereotype-pairs", "biased")]["score:gender"]["value"] == 1.0
    report = json.loads((tmp_path / "report.json").read_text())
    assert {t["name"] for t in report["tasks"]} == {"bias-stereotype-pairs", "bias-winobias"}


def test_the_shipped_probe_sets_are_minimal_pairs():
    for name in ("stereotype-pairs", "winobias"):
        _, pairs = load_probes(name)
        for p in pairs:
            a, b = p["stereo"].split(), p["anti"].split()
            assert p["stereo"] != p["anti"] and a[-1] == b[-1]  # same sentence ending, a group term swapped
