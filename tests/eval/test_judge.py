"""The pairwise judge: order-swap logic cancels a position-biased judge, ties, win rates with intervals,
Bradley–Terry recovering a known ranking (and equal to scikit-learn's logistic regression, the way
Chatbot Arena fits it), Elo, single-answer grading, human agreement, the report files and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lmforge.eval import judge as judge_mod
from lmforge.eval.judge import bradley_terry, combine_orders, elo, judge


def _verdict(v: str) -> dict:
    probs = {"A": 0.1, "B": 0.1, "C": 0.1}
    probs[v] = 0.8
    return {"probs": probs, "verdict": v, "judge_prompt": "p"}


def test_order_swap_cancels_a_judge_that_always_picks_the_first_answer():
    out = combine_orders("x", "y", _verdict("A"), _verdict("A"))
    assert out["winner"] == "tie" and out["score_a"] == 0.5 and not out["consistent"]
    out = combine_orders("x", "y", _verdict("A"), _verdict("B"))  # x chosen in both orders
    assert out["winner"] == "x" and out["score_a"] == 1.0 and out["consistent"]
    out = combine_orders("x", "y", _verdict("B"), _verdict("A"))
    assert out["winner"] == "y" and out["score_a"] == 0.0
    out = combine_orders("x", "y", _verdict("C"), _verdict("B"))  # a tie and a win: x ahead
    assert out["winner"] == "x" and out["score_a"] == 0.75


def test_judge_pipeline_measures_position_bias_and_scores_the_better_model(monkeypatch, tiny_lm):
    """A judge that prefers the longer answer but, on equal lengths, the first one: the long model wins
    every item, the equal-length items become ties, and the position bias is measured."""

    def fake_judge_pair(lm, prompt, first, second):
        v = "A" if len(first) > len(second) else "B" if len(second) > len(first) else "A"
        return {**_verdict(v), "judge_prompt": f"{prompt}|{first}|{second}"}

    monkeypatch.setattr(judge_mod, "judge_pair", fake_judge_pair)
    rows = [
        {"prompt": f"q{i}", "answers": {"long": "x" * (5 if i < 6 else 1), "short": "x"}} for i in range(8)
    ]
    rows[0]["human"] = ["long", "long", "short"]
    rows[7]["human"] = "tie"
    result = judge(["long", "short"], rows, judge=tiny_lm, n_resamples=200)
    pair = next(r for r in result.report["results"] if r["task"] == "judge-pairwise")
    m = pair["metrics"]
    assert m["win"]["value"] == 6 / 8 and m["tie"]["value"] == 2 / 8 and m["loss"]["value"] == 0
    assert m["win_rate"]["value"] == pytest.approx((6 + 0.5 * 2) / 8)
    assert m["win_rate"]["low"] < m["win_rate"]["value"] <= m["win_rate"]["high"] <= 1.0
    # 16 judgments: the 12 decisive on length split evenly, the 4 equal-length ones all chose A
    assert m["first_position_rate"]["value"] == pytest.approx((6 + 4) / 16)
    assert m["consistency"]["value"] == pytest.approx(6 / 8)
    assert m["human_agreement"]["value"] == 1.0 and m["n_human"]["value"] == 2
    item = pair["details"][0]
    assert item["orders"][0]["first"] == "long" and item["orders"][1]["first"] == "short"
    assert item["orders"][0]["judge_prompt"] == "q0|xxxxx|x"  # the prompt is saved per order
    assert list(result.ratings) == ["long", "short"]


def test_bradley_terry_recovers_the_true_ranking_and_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    true = {"a": 1.5, "b": 0.7, "c": 0.0, "d": -0.4, "e": -1.2}  # natural-log strengths
    names = list(true)
    pairs = []
    for _ in range(4000):
        i, j = rng.choice(len(names), 2, replace=False)
        p = 1 / (1 + math.exp(-(true[names[i]] - true[names[j]])))
        pairs.append((names[i], names[j], float(rng.random() < p)))
    pairs += [(names[i], names[(i + 1) % 5], 0.5) for i in range(5)] * 10  # a few ties
    ratings = bradley_terry(pairs)
    assert list(ratings) == names  # best first, the true order
    assert np.mean(list(ratings.values())) == pytest.approx(1000.0)
    # the oracle: logistic regression on +1/-1 design rows, a tie as half a win and half a loss
    X, y, w = [], [], []
    for a, b, s in pairs:
        row = np.zeros(len(names))
        row[names.index(a)], row[names.index(b)] = 1, -1
        for label, weight in ((1, s), (0, 1 - s)):
            if weight:
                X.append(row), y.append(label), w.append(weight)
    lr = LogisticRegression(fit_intercept=False, C=1e8, tol=1e-10, max_iter=10_000)
    lr.fit(np.array(X), np.array(y), sample_weight=np.array(w))
    coef = lr.coef_[0] - lr.coef_[0].mean()
    expected = {n: 1000 + 400 / math.log(10) * c for n, c in zip(names, coef)}
    for n in names:
        assert ratings[n] == pytest.approx(expected[n], abs=0.05)
    # and close to the truth (scaled to Elo)
    truth = np.array(list(true.values()))
    truth = 1000 + 400 / math.log(10) * (truth - truth.mean())
    assert np.max(np.abs(np.array([ratings[n] for n in names]) - truth)) < 60


def test_elo_moves_towards_the_winner_and_is_zero_sum():
    ratings = elo([("a", "b", 1.0)] * 20 + [("b", "c", 1.0)] * 20)
    assert list(ratings) == ["a", "b", "c"]
    assert sum(ratings.values()) == pytest.approx(3000.0)
    assert elo([("a", "b", 0.5)]) == {"a": 1000.0, "b": 1000.0}


def test_bradley_terry_refuses_bad_scores():
    from lmforge.errors import LMForgeError

    with pytest.raises(LMForgeError, match="in \\[0, 1\\]"):
        bradley_terry([("a", "b", 2.0)])


def test_real_judge_reads_choice_probabilities_and_writes_the_report(tiny_lm, tmp_path):
    """The tiny random judge end to end: probabilities over A/B/C sum to one, grades 1-10 too, and the
    same report files as `lmforge eval` are written."""
    from eval.conftest import make_tiny_lm

    rows = [{"prompt": "What is 2+2?"}, {"prompt": "Name a colour."}]
    result = judge(
        [make_tiny_lm(1), make_tiny_lm(3)],
        rows,
        judge=tiny_lm,
        max_new_tokens=4,
        n_resamples=20,
        output=tmp_path / "j",
    )
    item = result.report["results"][0]["details"][0]
    for order in item["orders"]:
        assert sum(order["probs"].values()) == pytest.approx(1.0)
        assert order["verdict"] == max(order["probs"], key=order["probs"].get)
        assert order["judge_prompt"].endswith("Verdict: [[")
    assert {p.name for p in (tmp_path / "j").iterdir()} == {
        "report.json",
        "report.md",
        "judge-pairwise.png",
        "judge-ratings.png",
    }
    single = judge([make_tiny_lm(1)], rows, judge=tiny_lm, mode="single", max_new_tokens=4, n_resamples=20)
    d = single.report["results"][0]["details"][0]
    assert sum(d["probs"].values()) == pytest.approx(1.0) and 1 <= d["expected_grade"] <= 10
    assert d["grade"] == int(max(d["probs"], key=d["probs"].get))


def test_cli_judges_answers_given_in_the_file(tmp_path, capsys, monkeypatch):
    """`lmforge eval judge` with both models' answers in the prompts file and a tiny checkpoint judge."""
    from eval.conftest import make_tiny_lm
    from lmforge.cli import main

    rows = [{"prompt": "2+2?", "answers": {"m1": "4", "m2": "five"}, "human": "m1"}]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    monkeypatch.setattr("lmforge.lm.load", lambda *a, **k: make_tiny_lm(2))
    code = main(
        [
            "eval",
            "judge",
            "--model",
            "m1",
            "--model",
            "m2",
            "--prompts",
            str(prompts),
            "--judge",
            "tiny",
            "--n-resamples",
            "10",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["config"]["judge"] == "tiny" and report["results"][0]["model"] == "m1 vs m2"
    assert "win_rate" in capsys.readouterr().out
