"""Classification metrics equal scikit-learn on random labels and probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from lmforge.errors import LMForgeError
from lmforge.eval.metrics import classification as cls


def random_problem(seed: int, n: int = 200, n_classes: int = 4):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, size=n)
    logits = rng.normal(size=(n, n_classes)) + 1.5 * np.eye(n_classes)[y_true]
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y_pred = prob.argmax(axis=1)
    return y_true.tolist(), y_pred.tolist(), prob


@pytest.mark.parametrize("seed", range(4))
def test_multiclass_parity(seed: int) -> None:
    y_true, y_pred, prob = random_problem(seed)
    got = cls.classification_report(y_true, y_pred, prob)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    for avg in ("macro", "micro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        assert got[f"precision_{avg}"] == pytest.approx(p)
        assert got[f"recall_{avg}"] == pytest.approx(r)
        assert got[f"f1_{avg}"] == pytest.approx(f)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    for c in range(4):
        assert got["per_class"][str(c)] == pytest.approx(
            {"precision": p[c], "recall": r[c], "f1": f[c], "support": s[c]}
        )
    assert got["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y_true, prob, multi_class="ovr", average="macro")
    )
    assert got["log_loss"] == pytest.approx(skm.log_loss(y_true, prob))


def test_binary_with_tied_scores_and_string_labels() -> None:
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, size=300)
    score = np.round(rng.random(300) * 0.5 + 0.4 * y, 1)  # coarse: many ties
    labels = ["neg", "pos"]
    y_true = [labels[i] for i in y]
    assert cls.roc_auc(y_true, score) == pytest.approx(skm.roc_auc_score(y, score))
    prob = np.clip(score, 0.01, 0.99)
    assert cls.log_loss(y_true, prob) == pytest.approx(skm.log_loss(y, prob))
    y_pred = [labels[int(p > 0.5)] for p in prob]
    got = cls.precision_recall_f1(y_true, y_pred)
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))


def test_zero_division_is_zero_like_sklearn() -> None:
    y_true, y_pred = [0, 0, 1, 2], [0, 0, 0, 0]  # classes 1 and 2 never predicted
    got = cls.precision_recall_f1(y_true, y_pred)
    assert got["precision_macro"] == pytest.approx(
        skm.precision_score(y_true, y_pred, average="macro", zero_division=0)
    )


def test_expected_calibration_error() -> None:
    # Hand-worked: confidences 0.9 (2 right of 2) and 0.6 (1 right of 2), 10 bins.
    prob = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    y_true = [0, 1, 0, 0]
    assert cls.expected_calibration_error(y_true, prob, n_bins=10) == pytest.approx(
        0.5 * abs(1.0 - 0.9) + 0.5 * abs(0.5 - 0.6)
    )
    # Labels drawn from the predicted probabilities are calibrated: ECE shrinks towards 0.
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)
    assert cls.expected_calibration_error(y.tolist(), p) < 0.02
    assert cls.expected_calibration_error(y.tolist(), np.clip(p * 0.5 + 0.5, 0, 1)) > 0.1


def test_bad_input() -> None:
    with pytest.raises(LMForgeError, match="3 true labels but 2 predictions"):
        cls.accuracy([0, 1, 1], [0, 1])
    with pytest.raises(LMForgeError, match="both positive and negative"):
        cls.roc_auc([1, 1], [0.2, 0.3], labels=[0, 1])
    with pytest.raises(LMForgeError, match="no examples"):
        cls.accuracy([], [])
