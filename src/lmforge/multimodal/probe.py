"""Linear probes: how much a frozen image encoder's features say about the labels.

- `image_features`: a frozen ViT's image embedding per image, (N, C) — its pooled output (the [CLS]
  state, or the mean of the patch states with `pool="mean"`), before any CLIP projection;
- `pixel_features`: the raw pixels, flattened and scaled to [0, 1] (the baseline a representation must
  beat);
- `linear_probe`: a multinomial logistic regression (scikit-learn, L-BFGS) on standardised features, its
  inverse regularisation strength C chosen on a validation slice of the training features (a seeded
  random `val_fraction`), refitted on all of them with that C, and scored once on the test features.
  The C sweep runs from strong to weak regularisation, each fit warm-started from the last; a fit stops
  after `max_iter` L-BFGS iterations (100: on Fashion-MNIST's raw pixels 84.5% at 100 and 84.1% at 300,
  in a fifth of the time).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from lmforge.errors import LMForgeError
from lmforge.model.vision import VisionTransformer

DEFAULT_CS = (0.01, 0.1, 1.0)


@dataclass
class ProbeResult:
    """A linear probe's test accuracy, the C it chose and how it chose it."""

    accuracy: float
    C: float
    val_accuracy: dict[str, float]  # C (as text) -> accuracy on the validation slice
    per_class: list[float]
    train_size: int
    val_size: int
    test_size: int
    features: int
    seconds: float
    notes: dict = field(default_factory=dict)


@torch.no_grad()
def image_features(
    encoder: VisionTransformer,
    images: torch.Tensor,
    pool: Literal["cls", "mean"] | None = None,
    batch_size: int = 1000,
) -> np.ndarray:
    """(N, C) float32 features of (N, c, H, W) images (uint8, or floats in [0, 1]) from a frozen ViT:
    its pooled output (`pool` overrides the ViT's own pooling)."""
    encoder.eval()
    pool = pool or encoder.config.pool
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size]
        h = encoder.hidden_states(x.float() / 255.0 if x.dtype == torch.uint8 else x.float())
        out.append(h[:, 0] if pool == "cls" else h[:, 1:].mean(1))
    return torch.cat(out).numpy().astype(np.float32)


def pixel_features(images: torch.Tensor) -> np.ndarray:
    """(N, c*H*W) float32 raw pixels in [0, 1]."""
    x = images.reshape(images.shape[0], -1).numpy().astype(np.float32)
    return x / 255.0 if images.dtype == torch.uint8 else x


def linear_probe(
    train_x: np.ndarray,
    train_y: Sequence[int],
    test_x: np.ndarray,
    test_y: Sequence[int],
    Cs: Sequence[float] = DEFAULT_CS,
    val_fraction: float = 0.1,
    max_iter: int = 100,
    seed: int = 0,
) -> ProbeResult:
    """Fit a logistic-regression probe on the training features (C chosen on a validation slice of
    them) and report its accuracy on the test features."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train_x, test_x = np.asarray(train_x, dtype=np.float32), np.asarray(test_x, dtype=np.float32)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise LMForgeError(
            f"features must be (N, D) arrays of one width, got {train_x.shape} and {test_x.shape}"
        )
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise LMForgeError("give one label per feature row (train and test)")
    if not 0 < val_fraction < 1 or not Cs:
        raise LMForgeError("val_fraction must be in (0, 1) and Cs non-empty")
    start = time.perf_counter()
    order = np.random.default_rng(seed).permutation(len(train_x))
    n_val = max(1, int(len(train_x) * val_fraction))
    fit_rows, val_rows = order[n_val:], order[:n_val]
    if len(np.unique(train_y[fit_rows])) < 2:
        raise LMForgeError("the probe needs at least two classes in its training features")

    def fit(x: np.ndarray, y: np.ndarray, C: float, warm: LogisticRegression | None = None):
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(C=C, max_iter=max_iter, warm_start=warm is not None)
        if warm is not None:
            model.coef_, model.intercept_ = warm.coef_.copy(), warm.intercept_.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(scaler.transform(x), y)
        return scaler, model

    val_accuracy: dict[str, float] = {}
    previous = None
    for C in sorted(Cs):  # strong to weak regularisation, each fit starting from the last
        scaler, previous = fit(train_x[fit_rows], train_y[fit_rows], C, previous)
        predicted = previous.predict(scaler.transform(train_x[val_rows]))
        val_accuracy[f"{C:g}"] = float((predicted == train_y[val_rows]).mean())
    best = max(sorted(Cs), key=lambda c: val_accuracy[f"{c:g}"])
    scaler, model = fit(train_x, train_y, best)
    predicted = model.predict(scaler.transform(test_x))
    right = predicted == test_y
    classes = np.unique(np.concatenate([train_y, test_y]))
    per_class = [float(right[test_y == c].mean()) if (test_y == c).any() else float("nan") for c in classes]
    return ProbeResult(
        accuracy=float(right.mean()),
        C=best,
        val_accuracy=val_accuracy,
        per_class=per_class,
        train_size=len(train_x),
        val_size=n_val,
        test_size=len(test_x),
        features=train_x.shape[1],
        seconds=time.perf_counter() - start,
    )
