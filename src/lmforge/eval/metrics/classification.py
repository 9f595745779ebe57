"""Classification metrics in NumPy with scikit-learn's definitions (tests hold them equal).

Labels may be any hashable values; the class order is the sorted union of the labels seen (as
scikit-learn's `unique_labels`) unless `labels` is given. A precision or recall with a zero denominator
is 0 (scikit-learn's `zero_division=0`). Probabilities are (n,) for binary (probability of the positive,
i.e. the larger, class) or (n, C) with columns in class order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmforge.errors import LMForgeError


def _check(y_true: Sequence, y_pred_or_score: Sequence | np.ndarray) -> None:
    if len(y_true) == 0:
        raise LMForgeError("no examples given: classification metrics need at least one label")
    if len(y_true) != len(y_pred_or_score):
        raise LMForgeError(
            f"got {len(y_true)} true labels but {len(y_pred_or_score)} predictions: give one per example"
        )


def _classes(y_true: Sequence, y_pred: Sequence, labels: Sequence | None) -> list:
    return list(labels) if labels is not None else sorted(set(y_true) | set(y_pred))


def confusion_matrix(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> np.ndarray:
    """(C, C) counts; row = true class, column = predicted class."""
    _check(y_true, y_pred)
    classes = _classes(y_true, y_pred, labels)
    index = {c: i for i, c in enumerate(classes)}
    cm = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        if t in index and p in index:
            cm[index[t], index[p]] += 1
    return cm


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    _check(y_true, y_pred)
    return float(np.mean([t == p for t, p in zip(y_true, y_pred)]))


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den != 0)


def precision_recall_f1(
    y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None
) -> dict[str, object]:
    """Precision, recall and F1: per class, macro (unweighted mean), micro (global counts), weighted."""
    classes = _classes(y_true, y_pred, labels)
    cm = confusion_matrix(y_true, y_pred, classes)
    tp = np.diag(cm).astype(np.float64)
    pred_pos = cm.sum(axis=0).astype(np.float64)
    true_pos = cm.sum(axis=1).astype(np.float64)
    precision = _safe_div(tp, pred_pos)
    recall = _safe_div(tp, true_pos)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    micro_p = float(_safe_div(tp.sum(), pred_pos.sum()))
    micro_r = float(_safe_div(tp.sum(), true_pos.sum()))
    micro_f1 = float(_safe_div(np.float64(2 * micro_p * micro_r), np.float64(micro_p + micro_r)))
    weights = _safe_div(true_pos, np.float64(true_pos.sum()))
    return {
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "precision_micro": micro_p,
        "recall_micro": micro_r,
        "f1_micro": micro_f1,
        "precision_weighted": float((precision * weights).sum()),
        "recall_weighted": float((recall * weights).sum()),
        "f1_weighted": float((f1 * weights).sum()),
        "per_class": {
            str(c): {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, true_pos)
        },
    }


def _binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney U statistic with tied scores sharing ranks."""
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise LMForgeError("ROC-AUC needs both positive and negative examples of every class scored")
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(len(score), dtype=np.float64)
    i = 0
    while i < len(score):  # average rank over each run of equal scores
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc(y_true: Sequence, y_score: Sequence | np.ndarray, labels: Sequence | None = None) -> float:
    """Binary ROC-AUC from positive-class scores, or one-vs-rest macro ROC-AUC from (n, C) scores."""
    _check(y_true, y_score)
    score = np.asarray(y_score, dtype=np.float64)
    classes = list(labels) if labels is not None else sorted(set(y_true))
    y = np.asarray([classes.index(t) if t in classes else -1 for t in y_true])
    if score.ndim == 1:
        if len(classes) != 2:
            raise LMForgeError(f"1-D scores need exactly 2 classes, found {len(classes)}: pass (n, C) scores")
        return _binary_auc((y == 1).astype(np.int64), score)
    if score.shape[1] != len(classes):
        raise LMForgeError(f"scores have {score.shape[1]} columns but there are {len(classes)} classes")
    if len(classes) == 2:
        return _binary_auc((y == 1).astype(np.int64), score[:, 1])
    return float(np.mean([_binary_auc((y == c).astype(np.int64), score[:, c]) for c in range(len(classes))]))


def _probabilities(y_prob: Sequence | np.ndarray) -> np.ndarray:
    prob = np.asarray(y_prob, dtype=np.float64)
    if prob.ndim == 1:
        prob = np.stack([1.0 - prob, prob], axis=1)
    if np.any(prob < 0) or np.any(prob > 1):
        raise LMForgeError("probabilities must lie in [0, 1]")
    return prob


def log_loss(y_true: Sequence, y_prob: Sequence | np.ndarray, labels: Sequence | None = None) -> float:
    """Mean negative log-likelihood of the true class; probabilities clipped to [eps, 1 - eps]."""
    _check(y_true, y_prob)
    prob = _probabilities(y_prob)
    classes = list(labels) if labels is not None else sorted(set(y_true))
    if prob.shape[1] != len(classes):
        raise LMForgeError(f"probabilities have {prob.shape[1]} columns but there are {len(classes)} classes")
    eps = np.finfo(prob.dtype).eps
    prob = np.clip(prob, eps, 1 - eps)
    prob = prob / prob.sum(axis=1, keepdims=True)
    y = np.asarray([classes.index(t) for t in y_true])
    return float(-np.mean(np.log(prob[np.arange(len(y)), y])))


def expected_calibration_error(
    y_true: Sequence, y_prob: Sequence | np.ndarray, labels: Sequence | None = None, n_bins: int = 15
) -> float:
    """ECE (Guo et al., 2017): confidence = max probability, equal-width bins (lo, hi],
    sum over bins of |accuracy - mean confidence| weighted by the bin's share of examples."""
    _check(y_true, y_prob)
    prob = _probabilities(y_prob)
    classes = list(labels) if labels is not None else sorted(set(y_true))
    y = np.asarray([classes.index(t) for t in y_true])
    confidence = prob.max(axis=1)
    correct = (prob.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def classification_report(
    y_true: Sequence,
    y_pred: Sequence,
    y_prob: Sequence | np.ndarray | None = None,
    labels: Sequence | None = None,
) -> dict[str, object]:
    """Every classification metric at once; ROC-AUC, log loss and ECE when probabilities are given."""
    out: dict[str, object] = {"accuracy": accuracy(y_true, y_pred)}
    out.update(precision_recall_f1(y_true, y_pred, labels))
    if y_prob is not None:
        out["roc_auc"] = roc_auc(y_true, y_prob, labels)
        out["log_loss"] = log_loss(y_true, y_prob, labels)
        out["ece"] = expected_calibration_error(y_true, y_prob, labels)
    return out
