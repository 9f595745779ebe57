"""The linear probe: scikit-learn's logistic regression refitted by hand as the oracle, C chosen without
the test labels, features read from the ViT, and a real probe on Fashion-MNIST pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from lmforge.errors import LMForgeError
from lmforge.model.vision import VisionConfig, VisionTransformer
from lmforge.multimodal.data import load_fashion_mnist
from lmforge.multimodal.probe import image_features, linear_probe, pixel_features


def blobs(n: int, d: int = 8, classes: int = 4, spread: float = 1.0, seed: int = 0):
    centres = np.random.default_rng(100).normal(size=(classes, d)) * 3  # the same classes for every draw
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.normal(size=(n, d)) * spread).astype(np.float32), y


def test_probe_is_logistic_regression_with_the_chosen_c():
    x, y = blobs(600, spread=3.0)
    tx, ty = blobs(300, spread=3.0, seed=1)
    result = linear_probe(x, y, tx, ty, Cs=(0.001, 0.1, 10.0), max_iter=500)
    assert result.C in (0.001, 0.1, 10.0) and set(result.val_accuracy) == {"0.001", "0.1", "10"}
    assert max((0.001, 0.1, 10.0), key=lambda c: result.val_accuracy[f"{c:g}"]) == result.C
    # oracle: the same model fitted directly on all the training features with that C
    scaler = StandardScaler().fit(x)
    direct = LogisticRegression(C=result.C, max_iter=500).fit(scaler.transform(x), y)
    assert result.accuracy == pytest.approx(direct.score(scaler.transform(tx), ty), abs=1 / 300)
    assert (result.train_size, result.val_size, result.test_size, result.features) == (600, 60, 300, 8)
    assert len(result.per_class) == 4
    assert np.mean(result.per_class) == pytest.approx(result.accuracy, abs=0.05)


def test_separable_features_score_high_and_noise_scores_chance():
    x, y = blobs(800, spread=0.3)
    tx, ty = blobs(400, spread=0.3, seed=1)
    assert linear_probe(x, y, tx, ty).accuracy > 0.99
    noise = np.random.default_rng(2).normal(size=(800, 8)).astype(np.float32)
    assert linear_probe(noise, y, tx, ty).accuracy < 0.45  # 4 classes: chance is 0.25


def test_c_is_chosen_without_the_test_labels():
    x, y = blobs(500, spread=3.0)
    tx, ty = blobs(200, spread=3.0, seed=1)
    a = linear_probe(x, y, tx, ty, Cs=(0.001, 0.01, 1.0))
    b = linear_probe(x, y, tx, np.random.default_rng(0).permutation(ty), Cs=(0.001, 0.01, 1.0))
    assert a.C == b.C and a.val_accuracy == b.val_accuracy
    assert b.accuracy < a.accuracy


def test_features_are_the_vits_pooled_output():
    torch.manual_seed(0)
    vit = VisionTransformer(
        VisionConfig(
            image_size=16, patch_size=4, channels=1, vision_d_model=32, vision_n_layer=1, vision_n_head=2
        )
    )
    images = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8)
    x = images.float() / 255
    feats = image_features(vit, images, batch_size=2)
    np.testing.assert_allclose(feats, vit(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    mean = image_features(vit, images, pool="mean")
    np.testing.assert_allclose(
        mean, vit.hidden_states(x)[:, 1:].mean(1).detach().numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(pixel_features(images), images.reshape(5, -1).numpy() / np.float32(255))


def test_bad_inputs_are_one_line_errors():
    x, y = blobs(50)
    with pytest.raises(LMForgeError, match="one width"):
        linear_probe(x, y, x[:, :3], y)
    with pytest.raises(LMForgeError, match="one label"):
        linear_probe(x, y[:-1], x, y)


def test_pixel_probe_on_fashion_mnist():
    """Raw pixels of 1,500 training images already separate the classes well (≈ 84% on all 60,000)."""
    train, test = load_fashion_mnist("train", limit=1500), load_fashion_mnist("test", limit=500)
    x, tx = pixel_features(train.images), pixel_features(test.images)
    result = linear_probe(x, train.labels, tx, test.labels, Cs=(0.01, 0.1), max_iter=50)
    assert 0.7 < result.accuracy < 0.9
    assert result.per_class[1] > 0.9  # trousers are the easy class
