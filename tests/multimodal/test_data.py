"""easy-VQA as lmforge reads it: both splits as shipped, attributes that agree with the questions,
float images, and one-line errors for files that are not images or have the wrong size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lmforge.assets import asset_path
from lmforge.errors import LMForgeError
from lmforge.multimodal.data import (
    COLOURS,
    SHAPES,
    attributes_from_pixels,
    attributes_from_questions,
    load_easy_vqa,
    read_image,
)


def test_test_split_as_shipped_with_attributes_the_questions_confirm():
    data = load_easy_vqa("test")
    shipped = json.loads((asset_path("easy-vqa") / "test" / "questions.json").read_text())
    assert len(data) == 1000 and len(data.questions) == len(shipped) == 9673
    assert data.images.shape == (1000, 3, 64, 64) and data.images.dtype == torch.uint8
    x = data.float_images(slice(0, 4))
    assert x.dtype == torch.float32 and x.min() >= 0.0 and x.max() <= 1.0
    # every answer that names a shape or a colour is the attribute lmforge assigned to that image
    named = [(a, r) for _, a, r in data.questions if a in SHAPES or a in COLOURS]
    assert len(named) > 2500
    for answer, row in named:
        assert answer in (data.shapes[row], data.colours[row])
    # the pixel rule (used where the questions leave an attribute open) agrees wherever they settle it
    settled = attributes_from_questions(data.questions)
    checked = 0
    for row, (shape, colour) in settled.items():
        px_shape, px_colour = attributes_from_pixels(data.images[row])
        for truth, guess in ((shape, px_shape), (colour, px_colour)):
            if truth is not None:
                assert truth == guess, row
                checked += 1
    assert checked > 1800
    assert set(data.shapes) == set(SHAPES) and set(data.colours) == set(COLOURS)
    assert data.captions[0] == f"a {data.colours[0]} {data.shapes[0]}"


def test_questions_settle_attributes_through_negations():
    questions = [
        ("is there not a circle?", "yes", 0),  # no circle
        ("does the image contain a triangle?", "no", 0),  # no triangle -> rectangle
        ("is no red shape present?", "no", 0),  # red is there
        ("what shape is present?", "circle", 1),
    ]
    assert attributes_from_questions(questions) == {0: ("rectangle", "red"), 1: ("circle", None)}


def test_train_and_test_are_different_images():
    train = load_easy_vqa("train", limit=50)
    test = load_easy_vqa("test", limit=50)
    assert len(train) == 50 and train.split == "train" and test.split == "test"
    flat_train = {bytes(img.numpy()) for img in train.images}
    assert not flat_train & {bytes(img.numpy()) for img in test.images}


def test_bad_images_are_one_line_errors(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(LMForgeError, match="not a readable image") as err:
        read_image(text)
    assert "\n" not in str(err.value)
    with pytest.raises(LMForgeError, match="not found"):
        read_image(tmp_path / "missing.png")
    big = tmp_path / "big.png"
    Image.fromarray(np.full((100, 80, 3), 200, dtype=np.uint8)).save(big)
    with pytest.raises(LMForgeError, match="80x100 but the model takes 64x64") as err:
        read_image(big)
    assert "\n" not in str(err.value)
    resized = read_image(big, on_wrong_size="resize")
    assert resized.shape == (3, 64, 64) and int(resized[0, 10, 10]) == 200
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((64, 64), 7, dtype=np.uint8)).save(grey)  # one channel: converted to RGB
    assert read_image(grey).shape == (3, 64, 64)
    with pytest.raises(LMForgeError, match="split"):
        load_easy_vqa("validation")
