"""Agreement statistics against their oracles: scikit-learn's cohen_kappa_score, the `krippendorff`
package, and Fleiss' (1971) worked example as printed on Wikipedia (kappa = 0.210)."""

from __future__ import annotations

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from lmforge.errors import LMForgeError
from lmforge.eval.agreement import agreement_summary, cohen_kappa, fleiss_kappa, krippendorff_alpha


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_cohen_kappa_matches_sklearn(weights):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, 80)
    b = np.where(rng.random(80) < 0.55, a, rng.integers(0, 5, 80))
    assert cohen_kappa(list(a), list(b), weights) == pytest.approx(cohen_kappa_score(a, b, weights=weights))
    labels = ["tie", "m1", "m2"]
    x, y = [labels[i % 3] for i in a], [labels[i % 3] for i in b]
    assert cohen_kappa(x, y) == pytest.approx(cohen_kappa_score(x, y))


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_krippendorff_alpha_matches_the_package_with_missing_ratings(level):
    rng = np.random.default_rng(2)
    truth = rng.integers(1, 6, 40)
    data = np.array([np.clip(truth + rng.integers(-1, 2, 40), 1, 5) for _ in range(4)]).astype(float)
    data[rng.random(data.shape) < 0.25] = np.nan
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
    assert krippendorff_alpha(data, level) == pytest.approx(expected, abs=1e-9)


def test_fleiss_kappa_on_the_published_example():
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert fleiss_kappa(np.array(table)) == pytest.approx(0.20993, abs=1e-5)
    with pytest.raises(LMForgeError, match="same number"):
        fleiss_kappa(np.array([[1, 1], [2, 1]]))


def test_summary_of_two_raters_equals_each_statistic():
    a = ["x", "y", "x", "tie", "y", "x", None]
    b = ["x", "y", "y", "tie", "y", "x", "x"]
    out = agreement_summary([a, b])
    assert out["cohen_kappa"] == pytest.approx(cohen_kappa_score(a[:6], b[:6]))
    codes = {"tie": 0, "x": 1, "y": 2}
    matrix = np.array([[np.nan if v is None else codes[v] for v in r] for r in (a, b)], dtype=float)
    assert out["krippendorff_alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")
    )
    assert out["fleiss_kappa"] == pytest.approx(fleiss_kappa([[p, q] for p, q in zip(a[:6], b[:6])]))
