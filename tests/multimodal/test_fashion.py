"""Fashion-MNIST from Debian's `dataset-fashion-mnist` (installed by `make setup`; a test here fails with
the install command when it is absent): shapes, labels and pixel statistics against the published
figures, the labelled ImageSet's captions, and bad files."""

from __future__ import annotations

import gzip
import random

import numpy as np
import pytest
import torch

from lmforge.errors import LMForgeError
from lmforge.multimodal import data as data_module
from lmforge.multimodal.data import (
    CLASS_TEMPLATES,
    FASHION_MNIST_CLASSES,
    load_easy_vqa,
    load_fashion_mnist,
    read_idx,
)


def test_splits_as_published():
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    assert train.images.shape == (60_000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10_000, 1, 28, 28)
    assert train.classes == FASHION_MNIST_CLASSES and len(FASHION_MNIST_CLASSES) == 10
    # balanced classes: 6,000 per class in train, 1,000 in test
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    # the first labels of each split, as in the dataset's own README/sample viewer
    assert train.labels[:10] == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert test.labels[:10] == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    # the train split's pixel mean and std in [0, 1], the normalisation constants everyone uses
    x = train.float_images()
    assert float(x.mean()) == pytest.approx(0.2860, abs=5e-4)
    assert float(x.std()) == pytest.approx(0.3530, abs=5e-4)
    assert train.split == "train" and test.split == "test"


def test_limit_and_subset_keep_labels():
    first = load_fashion_mnist("test", limit=50)
    assert len(first) == 50 and first.labels == load_fashion_mnist("test").labels[:50]
    part = first.subset([3, 1])
    assert part.labels == [first.labels[3], first.labels[1]] and part.classes == FASHION_MNIST_CLASSES
    assert torch.equal(part.images[0], first.images[3])
    with pytest.raises(LMForgeError, match="split"):
        load_fashion_mnist("validation")
    with pytest.raises(LMForgeError, match="limit"):
        load_fashion_mnist("test", limit=0)


def test_captions_name_the_class():
    data = load_fashion_mnist("test", limit=20)
    names = [FASHION_MNIST_CLASSES[y] for y in data.labels]
    assert data.captions == [f"a photo of a {n}" for n in names]
    drawn = data.training_captions(list(range(20)), random.Random(0))
    assert all(c in [t.format(n) for t in CLASS_TEMPLATES] for c, n in zip(drawn, names, strict=True))
    assert len({c.replace(n, "{}") for c, n in zip(drawn, names, strict=True)}) > 1  # several templates
    texts = data.caption_texts()
    assert set(drawn) <= set(texts) and len(texts) == len(CLASS_TEMPLATES) * 10
    # easy-VQA stays an attribute set
    easy = load_easy_vqa("test", limit=5)
    assert not easy.labelled and easy.captions[0].startswith("a ") and easy.shapes


def test_missing_dataset_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("LMFORGE_FASHION_MNIST", str(tmp_path))
    monkeypatch.setattr(data_module, "FASHION_MNIST_DIRS", (str(tmp_path / "nowhere"),))
    with pytest.raises(LMForgeError, match="dataset-fashion-mnist"):
        data_module.fashion_mnist_dir()


def test_read_idx_refuses_bad_files(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"PK\x03\x04 not an idx file")
    with pytest.raises(LMForgeError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 2, 0, 0, 0, 3, 0, 0, 0, 3]) + bytes(5))
    with pytest.raises(LMForgeError, match="truncated"):
        read_idx(short)
    ok = tmp_path / "ok"
    ok.write_bytes(bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6)))
    assert read_idx(ok).tolist() == [[0, 1, 2], [3, 4, 5]]
