"""Inter-annotator agreement: Cohen's kappa (two raters, optionally weighted), Fleiss' kappa (any fixed
number of raters per item) and Krippendorff's alpha (any raters, missing ratings allowed, nominal /
ordinal / interval / ratio data).

All three are "observed agreement corrected for the agreement expected by chance": 1 is perfect
agreement, 0 what independent raters with the same label frequencies would reach, below 0 worse.
Checked against scikit-learn's `cohen_kappa_score` and the `krippendorff` package in the tests.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np

from lmforge.errors import LMForgeError

Level = Literal["nominal", "ordinal", "interval", "ratio"]


def cohen_kappa(
    a: Sequence[Hashable], b: Sequence[Hashable], weights: Literal["linear", "quadratic"] | None = None
) -> float:
    """Cohen's kappa of two raters' labels for the same items (Cohen 1960); with `weights`, disagreements
    count by their distance in the sorted label order (as scikit-learn's `cohen_kappa_score`)."""
    if len(a) != len(b):
        raise LMForgeError(
            f"cohen_kappa: the raters labelled {len(a)} and {len(b)} items; give the same items"
        )
    if not a:
        raise LMForgeError("cohen_kappa: no items")
    labels = sorted(set(a) | set(b), key=lambda x: (str(type(x)), x))
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    confusion = np.zeros((k, k))
    for x, y in zip(a, b):
        confusion[index[x], index[y]] += 1
    expected = np.outer(confusion.sum(1), confusion.sum(0)) / confusion.sum()
    if weights is None:
        w = 1.0 - np.eye(k)
    else:
        d = np.abs(np.arange(k)[:, None] - np.arange(k)[None, :]).astype(float)
        w = d if weights == "linear" else d**2
    denom = (w * expected).sum()
    if denom == 0:
        return 1.0 if (w * confusion).sum() == 0 else 0.0
    return float(1.0 - (w * confusion).sum() / denom)


def category_counts(ratings: Sequence[Sequence[Hashable]]) -> tuple[np.ndarray, list[Hashable]]:
    """Items x categories count table from one list of labels per item (what Fleiss' kappa reads)."""
    labels = sorted({x for row in ratings for x in row}, key=lambda x: (str(type(x)), x))
    index = {label: i for i, label in enumerate(labels)}
    table = np.zeros((len(ratings), len(labels)))
    for i, row in enumerate(ratings):
        for x in row:
            table[i, index[x]] += 1
    return table, labels


def fleiss_kappa(counts: np.ndarray | Sequence[Sequence[Hashable]]) -> float:
    """Fleiss' kappa (Fleiss 1971) from an items x categories count table, or from one list of labels per
    item; every item needs the same number of ratings (use Krippendorff's alpha when some are missing)."""
    table = np.asarray(counts, dtype=float) if _is_count_table(counts) else category_counts(counts)[0]
    if table.ndim != 2 or table.shape[0] == 0:
        raise LMForgeError("fleiss_kappa: give an items x categories count table (or labels per item)")
    n = table.sum(1)
    if not np.all(n == n[0]) or n[0] < 2:
        raise LMForgeError(
            "fleiss_kappa: every item needs the same number (>= 2) of ratings; "
            "use krippendorff_alpha for missing ratings"
        )
    n = n[0]
    p_j = table.sum(0) / table.sum()
    p_i = ((table**2).sum(1) - n) / (n * (n - 1))
    p_bar, p_e = p_i.mean(), (p_j**2).sum()
    if p_e == 1.0:
        return 1.0
    return float((p_bar - p_e) / (1.0 - p_e))


def _is_count_table(x) -> bool:
    arr = np.asarray(x, dtype=object)
    if arr.ndim != 2:
        return False
    return all(isinstance(v, (int, float, np.integer, np.floating)) for v in arr.ravel())


def krippendorff_alpha(
    reliability_data: np.ndarray | Sequence[Sequence[float]], level: Level = "nominal"
) -> float:
    """Krippendorff's alpha from a raters x items matrix of numeric labels with NaN for a missing rating
    (the `krippendorff` package's `reliability_data` layout): 1 - D_observed / D_expected over the
    coincidence matrix of pairable values (items with fewer than two ratings are left out)."""
    data = np.asarray(reliability_data, dtype=float)
    if data.ndim != 2:
        raise LMForgeError("krippendorff_alpha: give a raters x items matrix (NaN where a rater gave none)")
    values = np.unique(data[~np.isnan(data)])
    if len(values) < 2:
        raise LMForgeError("krippendorff_alpha: needs at least two distinct values among the ratings")
    index = {v: i for i, v in enumerate(values)}
    k = len(values)
    coincidence = np.zeros((k, k))
    for item in data.T:
        vals = item[~np.isnan(item)]
        m = len(vals)
        if m < 2:
            continue
        counts = np.zeros(k)
        for v in vals:
            counts[index[v]] += 1
        coincidence += (np.outer(counts, counts) - np.diag(counts)) / (m - 1)
    n_c = coincidence.sum(0)
    n = n_c.sum()
    if n == 0:
        raise LMForgeError("krippendorff_alpha: no item has two ratings")
    delta = _distance(values, n_c, level)
    observed = (coincidence * delta).sum()
    expected = (np.outer(n_c, n_c) * delta).sum() / (n - 1)
    return float(1.0 - observed / expected) if expected > 0 else 1.0


def _distance(values: np.ndarray, n_c: np.ndarray, level: Level) -> np.ndarray:
    """Squared difference metric delta^2(c, k) for each level of measurement (Krippendorff 2011)."""
    c, k = values[:, None], values[None, :]
    if level == "nominal":
        return (c != k).astype(float)
    if level == "interval":
        return (c - k) ** 2
    if level == "ratio":
        s = c + k
        return np.where(s == 0, 0.0, ((c - k) / np.where(s == 0, 1, s)) ** 2)
    if level == "ordinal":
        cum = np.cumsum(n_c)
        idx = np.arange(len(values))
        i, j = np.minimum(idx[:, None], idx[None, :]), np.maximum(idx[:, None], idx[None, :])
        # sum of n_g for g between c and k inclusive, minus half the two ends
        between = cum[j] - np.where(i > 0, cum[np.maximum(i - 1, 0)], 0.0)
        return (between - (n_c[i] + n_c[j]) / 2.0) ** 2
    raise LMForgeError(f"krippendorff_alpha: level is nominal, ordinal, interval or ratio, not {level!r}")


def agreement_summary(
    ratings: Sequence[Sequence[Hashable | None]], level: Level = "nominal"
) -> dict[str, float]:
    """Agreement of several raters over items, `ratings[rater][item]` with None for a missing rating:
    Krippendorff's alpha always; Cohen's kappa (two raters, items both rated) and Fleiss' kappa
    (items every rater rated) where defined."""
    raters = [list(r) for r in ratings]
    labels = sorted({x for r in raters for x in r if x is not None}, key=lambda x: (str(type(x)), x))
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in labels)
    code = {
        label: float(label) if numeric and level != "nominal" else float(i) for i, label in enumerate(labels)
    }
    out: dict[str, float] = {"n_raters": float(len(raters))}
    if len(raters) < 2 or len(labels) < 2:
        return out
    matrix = np.array([[np.nan if x is None else code[x] for x in r] for r in raters])
    if np.sum((~np.isnan(matrix)).sum(0) >= 2) > 0:
        out["krippendorff_alpha"] = krippendorff_alpha(matrix, level)
    complete = [j for j in range(matrix.shape[1]) if not np.isnan(matrix[:, j]).any()]
    out["n_items_all_raters"] = float(len(complete))
    if complete:
        per_item = [[raters[r][j] for r in range(len(raters))] for j in complete]
        if len(raters) == 2:
            out["cohen_kappa"] = cohen_kappa([p[0] for p in per_item], [p[1] for p in per_item])
        out["fleiss_kappa"] = fleiss_kappa(per_item)
    return out
