"""Bootstrap confidence intervals for corpus-level metrics.

A corpus metric is a function of per-item statistics (sentence n-gram counts for BLEU, per-window
log-likelihood sums and token counts for perplexity, ...). The percentile bootstrap resamples the items
with replacement, recomputes the corpus metric on each resample, and reads the interval off the
empirical quantiles (Efron & Tibshirani, 1993). Resampling rows of precomputed statistics keeps it
cheap: no text is re-tokenized and no model is re-run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from lmforge.errors import LMForgeError


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided percentile-bootstrap interval."""

    value: float
    low: float
    high: float
    confidence: float
    n_resamples: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def bootstrap_ci(
    stats: np.ndarray,
    aggregate: Callable[[np.ndarray], dict[str, float]],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Percentile-bootstrap intervals for every score that `aggregate` returns.

    Args:
        stats: per-item statistics, shape (n, k); rows are resampled.
        aggregate: maps any (m, k) subset of rows to a dict of corpus scores.
        n_resamples: number of bootstrap resamples.
        confidence: two-sided coverage, e.g. 0.95.
        seed: seed of the resampling generator (same seed, same interval).
    """
    stats = np.asarray(stats)
    if stats.ndim == 1:
        stats = stats[:, None]
    n = stats.shape[0]
    if n == 0:
        raise LMForgeError("cannot bootstrap an empty set of items")
    if not 0.0 < confidence < 1.0:
        raise LMForgeError(f"confidence must be between 0 and 1, got {confidence}")
    if n_resamples < 1:
        raise LMForgeError(f"n_resamples must be at least 1, got {n_resamples}")
    point = aggregate(stats)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(n_resamples):
        sample = aggregate(stats[rng.integers(0, n, size=n)])
        for k in point:
            draws[k].append(sample[k])
    alpha = (1.0 - confidence) / 2.0
    out: dict[str, Interval] = {}
    for k, v in point.items():
        low, high = np.quantile(np.asarray(draws[k], dtype=np.float64), [alpha, 1.0 - alpha])
        out[k] = Interval(float(v), float(low), float(high), confidence, n_resamples)
    return out


def mean_ci(
    values: np.ndarray, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """Bootstrap interval of a mean (accuracy over examples, mean sentence score, ...)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    return bootstrap_ci(
        values,
        lambda s: {"mean": float(s[:, 0].mean())},
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )["mean"]
