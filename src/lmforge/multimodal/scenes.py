"""Generated test scenes for the compositional probe "red circle" vs "circle, red background".

easy-VQA draws one coloured shape on a light background, so a model trained on it never has to tell the
shape's colour from the background's. `draw_scene` paints a shape of one palette colour on a background
of another (random size and position, like easy-VQA's), and `background_probe` asks whether CLIP's
caption for the shape's colour ("a blue circle") scores above the caption naming the background's
colour ("a red circle"): accuracy 1.0 means the colour is bound to the shape, 0.5 is chance. Nothing
here is trained on; the scenes are made fresh from a seed.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import torch
from PIL import Image, ImageDraw

from lmforge.multimodal.clip import CLIP
from lmforge.multimodal.data import COLOURS, PALETTE, SHAPES, caption


def draw_scene(shape: str, colour: str, background: str, size: int = 64, rng: random.Random | None = None):
    """(3, size, size) uint8: one `colour` `shape` on a plain `background`-coloured image."""
    rng = rng or random.Random(0)
    image = Image.new("RGB", (size, size), PALETTE[background])
    draw = ImageDraw.Draw(image)
    r = rng.randint(size // 8, size // 4)  # half the shape's extent, as easy-VQA's range
    cx, cy = rng.randint(r, size - 1 - r), rng.randint(r, size - 1 - r)
    fill = PALETTE[colour]
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "rectangle":
        w, h = r, rng.randint(r // 2, r)
        draw.rectangle((cx - w, cy - h, cx + w, cy + h), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; shapes: {', '.join(SHAPES)}")
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def background_scenes(
    size: int = 64, per_combination: int = 2, seed: int = 0
) -> tuple[torch.Tensor, list[tuple[str, str, str]]]:
    """Every (shape, shape colour, different background colour) `per_combination` times: images
    (N, 3, size, size) uint8 and their (shape, colour, background) labels."""
    rng = random.Random(seed)
    labels = [
        (s, c, b)
        for s, c, b in itertools.product(SHAPES, COLOURS, COLOURS)
        if c != b
        for _ in range(per_combination)
    ]
    images = torch.stack([draw_scene(s, c, b, size, rng) for s, c, b in labels])
    return images, labels


@torch.inference_mode()
def background_probe(clip: CLIP, per_combination: int = 2, seed: int = 0) -> dict[str, float]:
    """Share of generated scenes where "a {shape colour} {shape}" outscores "a {background colour}
    {shape}" (`background_swap`), and where the shape's colour wins the zero-shot colour question
    over all colours (`colour_of_shape`)."""
    images, labels = background_scenes(clip.config.image_size, per_combination, seed)
    image_emb = clip.encode_images(images)
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    index = {p: i for i, p in enumerate(pairs)}
    sim = image_emb @ clip.encode_texts([caption(c, s) for c, s in pairs]).T
    swap, named = [], []
    for row, (s, c, b) in enumerate(labels):
        swap.append(bool(sim[row, index[(c, s)]] > sim[row, index[(b, s)]]))
        named.append(max(COLOURS, key=lambda o: float(sim[row, index[(o, s)]])) == c)
    return {
        "background_swap": sum(swap) / len(swap),
        "colour_of_shape": sum(named) / len(named),
        "scenes": len(labels),
    }
