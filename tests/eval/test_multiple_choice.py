"""The multiple-choice runner (`lmforge eval --task FILE.jsonl`, harness.run_multiple_choice) scores as
lm-evaluation-harness defines them, checked against a direct computation: `acc` (raw sum of log P(" " +
choice | context)), `acc_norm` (divided by the choice's characters, the delimiter not counted) and
`acc_bytes` (divided by its UTF-8 bytes), with non-ASCII choices where characters and bytes differ."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.conftest import make_tiny_lm
from lmforge.eval import harness
from lmforge.eval.harness import RunSettings
from lmforge.eval.metrics.lm import loglikelihoods


def test_acc_acc_norm_and_acc_bytes_follow_lm_eval(tmp_path):
    lm = make_tiny_lm(0)
    rows = [
        {"context": "Q: pick one. A:", "choices": ["a", "ééé", "bbbbbb", "ç"], "answer": 1},
        {"context": "Colour of grass:", "choices": ["green", "blue"], "answer": "green"},
        {"context": "2 + 2 =", "choices": ["4", "five", "22"], "answer": 0},
    ]
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = harness.run_task(lm, harness.load_task(path), "tiny", RunSettings(n_resamples=20))
    expect = {"acc": [], "acc_norm": [], "acc_bytes": []}
    for row, detail in zip(rows, result.details):
        reqs = [([256, *row["context"].encode()], list((" " + c).encode())) for c in row["choices"]]
        ll = np.array([x for x, _ in loglikelihoods(lm.model, reqs)])
        assert detail["loglik"] == pytest.approx(ll.tolist(), abs=1e-4)
        gold = row["answer"] if isinstance(row["answer"], int) else row["choices"].index(row["answer"])
        chars = np.array([len(c) for c in row["choices"]], dtype=float)
        nbytes = np.array([len(c.encode()) for c in row["choices"]], dtype=float)
        expect["acc"].append(float(np.argmax(ll) == gold))
        expect["acc_norm"].append(float(np.argmax(ll / chars) == gold))
        expect["acc_bytes"].append(float(np.argmax(ll / nbytes) == gold))
    for name, hits in expect.items():
        assert result.metrics[name]["value"] == pytest.approx(np.mean(hits)), name
