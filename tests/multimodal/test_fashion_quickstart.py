"""Fashion-MNIST with CLIP: zero-shot with the prompt ensemble against a direct computation, the linear
probes against `linear_probe` on the tower's features, the grids on grey images, the `dataset` option;
and `lmforge quickstart --recipe clip --dataset fashion-mnist` end to end (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmforge.cli import main
from lmforge.errors import LMForgeError
from lmforge.multimodal.clip import CLIP, ClipConfig, train_caption_tokenizer
from lmforge.multimodal.data import CLASS_TEMPLATES, ImageSet, load_fashion_mnist
from lmforge.multimodal.evaluate import evaluate_classes, prediction_grid, retrieval_grid, zero_shot_accuracy
from lmforge.multimodal.probe import image_features, linear_probe
from lmforge.multimodal.quickstart import FASHION_MODEL, clip_quickstart
from lmforge.train.config import QuickstartConfig

TINY = dict(
    image_size=28,
    patch_size=4,
    channels=1,
    stem="conv",
    vision_d_model=32,
    vision_n_layer=1,
    vision_n_head=2,
    text_d_model=32,
    text_n_layer=1,
    text_n_head=2,
    text_max_len=12,
    embed_dim=16,
)


@pytest.fixture(scope="module")
def sets():
    return load_fashion_mnist("train", limit=600), load_fashion_mnist("test", limit=200)


@pytest.fixture(scope="module")
def clip(sets):
    return CLIP.create(ClipConfig(**TINY), train_caption_tokenizer(sets[0].caption_texts()), seed=0)


@pytest.fixture(scope="module")
def evaluation(clip, sets):
    return evaluate_classes(clip, *sets)


def test_zero_shot_is_the_prompt_ensemble(clip, sets, evaluation):
    _, test = sets
    result = evaluation
    # direct computation: per class the normalised mean of its prompts' normalised embeddings
    texts = torch.stack(
        [
            F.normalize(clip.encode_texts([t.format(c) for t in CLASS_TEMPLATES]).mean(0), dim=0)
            for c in test.classes
        ]
    )
    images = F.normalize(clip.model.image_proj(clip.model.visual(test.float_images())), dim=-1).detach()
    predicted = (images @ texts.T).argmax(1)
    truth = torch.tensor(test.labels)
    assert result.zero_shot == pytest.approx(float((predicted == truth).float().mean()))
    assert (
        result.accuracy == result.zero_shot
        and result.images == 200
        and result.prompts == len(CLASS_TEMPLATES)
    )
    for i, c in enumerate(test.classes):
        assert result.per_class[c] == pytest.approx(float((predicted[truth == i] == i).float().mean()))
    single = zero_shot_accuracy(clip, test, "class", CLASS_TEMPLATES[:1])
    assert result.single_prompt == single


def test_probes_are_linear_probes_on_the_tower_and_on_pixels(clip, sets, evaluation):
    train, test = sets
    result = evaluation
    direct = linear_probe(
        image_features(clip.model.visual, train.images),
        train.labels,
        image_features(clip.model.visual, test.images),
        test.labels,
    )
    assert result.probe.accuracy == pytest.approx(direct.accuracy) and result.probe.C == direct.C
    assert result.probe.features == TINY["vision_d_model"]
    assert result.pixel_probe.features == 28 * 28 and result.pixel_probe.accuracy > 0.6
    assert evaluate_classes(clip, train, test.subset(range(50)), pixel_baseline=False).pixel_probe is None
    with pytest.raises(LMForgeError, match="labelled"):
        evaluate_classes(clip, train, ImageSet(test.images[:3]))


def test_grids_draw_grey_images(clip, sets, tmp_path):
    _, test = sets
    assert prediction_grid(clip, test, tmp_path / "g.png", n=12).read_bytes()[:4] == b"\x89PNG"
    assert retrieval_grid(clip, test, tmp_path / "r.png", k=3).read_bytes()[:4] == b"\x89PNG"


def test_dataset_option():
    assert QuickstartConfig(recipe="clip", dataset="fashion-mnist").dataset == "fashion-mnist"
    assert QuickstartConfig(recipe="clip").dataset is None
    with pytest.raises(LMForgeError, match="--recipe clip"):
        QuickstartConfig(recipe="lm", dataset="fashion-mnist")
    with pytest.raises(LMForgeError, match="dataset"):
        clip_quickstart(dataset="mnist")
    assert (FASHION_MODEL.image_size, FASHION_MODEL.channels) == (28, 1)


@pytest.mark.slow
def test_fashion_recipe_from_the_cli(tmp_path, capsys):
    argv = ["quickstart", "--recipe", "clip", "--dataset", "fashion-mnist", "--minutes", "1"]
    assert main([*argv, "--out", str(tmp_path), "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("accuracy ") and "linear probe" in lines[-1] and "raw pixels" in lines[-1]
    run = tmp_path / "clip-1"
    results = json.loads((run / "results.json").read_text())
    assert results["dataset"] == "fashion-mnist" and results["evaluation"]["images"] == 10_000
    assert f"{results['accuracy']:.1%}" in lines[-1]
    probe = results["evaluation"]["probe"]
    assert f"{probe['accuracy']:.1%}" in lines[-1] and probe["test_size"] == 10_000
    assert probe["train_size"] == 60_000 and probe["val_size"] == 6_000
    assert (run / "zero_shot_grid.png").read_bytes()[:4] == b"\x89PNG"
    assert CLIP.load(run / "final").config.channels == 1
    # a minute of training on the shared box (a few dozen steps when it is busy: 31% in one run) beats
    # chance (10%) zero-shot, and the probe on its features finds the classes
    assert results["accuracy"] > 0.2 and probe["accuracy"] > 0.6
    assert np.isfinite(results["evaluation"]["pixel_probe"]["accuracy"])
