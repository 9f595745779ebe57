"""MAUVE: the frontier area equals mauve-text's exactly; end to end it agrees up to clustering."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from lmforge.errors import LMForgeError
from lmforge.eval.metrics import embedding


def test_frontier_area_equals_mauve_text_on_the_same_histograms() -> None:
    mauve_pkg = importlib.import_module("mauve.compute_mauve")  # the module, not the same-named function
    from sklearn.metrics import auc

    rng = np.random.default_rng(0)
    for trial in range(5):
        p, q = rng.dirichlet(np.ones(12)), rng.dirichlet(np.ones(12))
        if trial % 2:
            q[3] = 0.0  # an empty bucket: infinite KL on one side
            q /= q.sum()
        x, y = mauve_pkg.get_divergence_curve_for_multinomials(p, q, np.linspace(1e-6, 1 - 1e-6, 25), 5).T
        i, j = np.argsort(x), np.argsort(y)
        expected = 0.5 * (auc(x[i], y[i]) + auc(y[j], x[j]))
        assert embedding.mauve_from_histograms(p, q) == pytest.approx(expected, abs=1e-12)
    same = rng.dirichlet(np.ones(8))
    assert embedding.mauve_from_histograms(same, same) == pytest.approx(1.0, abs=1e-5)


def gaussian_features(shift: float, seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 16))
    q = rng.normal(size=(n, 16))
    q[:, :2] += shift
    return p, q


def test_mauve_decreases_as_distributions_separate_and_agrees_with_mauve_text() -> None:
    scores = [embedding.mauve(*gaussian_features(s, seed=1)).mauve for s in (0.0, 1.0, 3.0)]
    assert scores[0] > 0.9 > scores[1] > scores[2]
    assert scores[2] < 0.1
    import mauve as mauve_pkg

    for shift, ours in zip((0.0, 1.0, 3.0), scores):
        p, q = gaussian_features(shift, seed=1)
        ref = mauve_pkg.compute_mauve(p_features=p, q_features=q, verbose=False).mauve
        # mauve-text clusters with faiss, we with scikit-learn: the quantizations differ slightly
        assert ours == pytest.approx(ref, abs=0.1), shift


def test_mauve_bad_input() -> None:
    with pytest.raises(LMForgeError, match="same width"):
        embedding.mauve(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(LMForgeError, match="at least 2 texts"):
        embedding.mauve(np.zeros((1, 3)), np.zeros((5, 3)))
