"""The generated "shape colour vs background colour" scenes and the probe that reads them."""

from __future__ import annotations

import random

import torch

from lmforge.multimodal.clip import CLIP, ClipConfig, train_caption_tokenizer
from lmforge.multimodal.data import COLOURS, PALETTE, SHAPES, caption
from lmforge.multimodal.scenes import background_probe, background_scenes, draw_scene


def test_scene_paints_the_shape_in_its_colour_on_the_background():
    for shape in SHAPES:
        image = draw_scene(shape, "red", "teal", 64, random.Random(3))
        pixels = image.permute(1, 2, 0).reshape(-1, 3)
        colours = {tuple(p) for p in pixels.tolist()}
        assert colours == {PALETTE["red"], PALETTE["teal"]}  # no anti-aliasing: two colours only
        share = (pixels == torch.tensor(PALETTE["red"])).all(1).float().mean()
        assert 0.01 < share < 0.5  # a shape, not the whole image


def test_scenes_cover_every_shape_colour_and_different_background():
    images, labels = background_scenes(size=32, per_combination=1, seed=1)
    assert images.shape == (len(SHAPES) * len(COLOURS) * (len(COLOURS) - 1), 3, 32, 32)
    assert all(c != b for _, c, b in labels)
    assert len(set(labels)) == len(labels)


def test_background_probe_equals_a_scene_by_scene_computation():
    tokenizer = train_caption_tokenizer([caption(c, s) for c in COLOURS for s in SHAPES])
    clip = CLIP.create(
        ClipConfig(
            image_size=32, patch_size=8, vision_d_model=16, vision_n_layer=1, text_d_model=16, text_n_layer=1
        ),
        tokenizer,
        seed=5,
    )
    got = background_probe(clip, per_combination=1, seed=2)
    images, labels = background_scenes(32, per_combination=1, seed=2)
    wins = 0
    for image, (s, c, b) in zip(images, labels, strict=True):
        e = clip.encode_images(image[None])
        t = clip.encode_texts([caption(c, s), caption(b, s)])
        wins += int((e @ t[0]) > (e @ t[1]))
    assert got["scenes"] == len(labels)
    assert abs(got["background_swap"] - wins / len(labels)) < 1e-9
    assert 0.0 <= got["colour_of_shape"] <= 1.0


def test_evaluate_clip_reports_the_background_probe():
    from lmforge.multimodal.clip import ClipConfig
    from lmforge.multimodal.data import load_easy_vqa
    from lmforge.multimodal.evaluate import evaluate_clip

    tokenizer = train_caption_tokenizer([caption(c, s) for c in COLOURS for s in SHAPES])
    config = ClipConfig(patch_size=16, vision_d_model=16, vision_n_layer=1, text_d_model=16, text_n_layer=1)
    clip = CLIP.create(config, tokenizer, seed=1)
    evaluation = evaluate_clip(clip, load_easy_vqa("test", limit=48))
    assert {k: evaluation.compositional[k] for k in ("background_swap", "colour_of_shape", "scenes")} == (
        background_probe(clip)
    )
