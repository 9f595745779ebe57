"""Image–text data that ships offline: easy-VQA (64×64 images of one coloured shape, with questions) and
Fashion-MNIST (28×28 greyscale clothing images in 10 classes).

The `easy-vqa` package ships a train split (4,000 images) and a test split (1,000 images); they stay
apart: training reads `train`, every evaluation reads `test`. The package has no attribute file, so each
image's shape and colour are read from its own questions ("what color is the shape?" → "blue";
"is there not a circle?" → "no" says a circle is present, a "yes" rules one out). Where the questions
leave an attribute open (about one image in nine), it is read from the pixels: the colour is the palette
colour nearest to the shape's mean colour, the shape is told by how much of its bounding box it fills
(rectangle ≈ 1, circle ≈ π/4, triangle ≈ 1/2). tests/multimodal/test_data.py checks that the pixel rule
agrees with the questions on every image the questions settle.

Fashion-MNIST is read from Debian's `dataset-fashion-mnist` (the four IDX files under
/usr/share/datasets/fashion-mnist, or `$LMFORGE_FASHION_MNIST`): 60,000 train and 10,000 test images,
kept as they are, one channel at 28 px (the model's `channels=1, image_size=28`). It is a labelled set:
`classes` holds the 10 class names, `labels` each image's class, and its captions are class-name
templates ("a photo of a {}", ...). The test split is for evaluation only.

Images are kept as uint8 (N, C, H, W) tensors (C = 3 for easy-VQA, 1 for Fashion-MNIST) and handed
out as float tensors in [0, 1].
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from lmforge.assets import asset_path
from lmforge.errors import LMForgeError

SHAPES = ("circle", "rectangle", "triangle")
COLOURS = ("red", "green", "blue", "black", "gray", "teal", "yellow", "brown")
# the generator's palette (RGB); the pixel rule picks the nearest one to a shape's mean colour
PALETTE = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "teal": (0, 128, 128),
    "yellow": (255, 255, 0),
    "brown": (165, 42, 42),
}
Split = Literal["train", "test"]

FASHION_MNIST_CLASSES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)  # Debian's `dataset-fashion-mnist`
# Captions of a labelled image (and the zero-shot prompt ensemble): its class name in a few templates.
CLASS_TEMPLATES = (
    "a photo of a {}",
    "a {}",
    "a picture of a {}",
    "a grey photo of a {}",
    "a photo of the {}",
    "an image of a {}",
)


# Captions a training image is paired with: mostly both attributes, sometimes one of them.
TRAIN_TEMPLATES = (
    "a {colour} {shape}",
    "a picture of a {colour} {shape}",
    "a {colour} {shape} on a light background",
    "a {shape} that is {colour}",
    "the {shape} is {colour}",
    "a {colour} shape",
    "a {shape}",
)


def caption(colour: str, shape: str) -> str:
    """The caption of an image with one `colour` `shape`, as the training pairs use it."""
    return f"a {colour} {shape}"


def template_captions() -> list[str]:
    """Every caption `TRAIN_TEMPLATES` can make for easy-VQA's shapes and colours."""
    return [t.format(colour=c, shape=s) for t in TRAIN_TEMPLATES for c in COLOURS for s in SHAPES]


@dataclass
class ImageSet:
    """Images with their attributes (easy-VQA: shapes, colours), or their class labels (a labelled set:
    `classes` + `labels`), captions and questions (one split, or a subset of it)."""

    images: torch.Tensor  # (N, C, H, W) uint8
    shapes: list[str] = field(default_factory=list)
    colours: list[str] = field(default_factory=list)
    questions: list[tuple[str, str, int]] = field(default_factory=list)  # (question, answer, row)
    split: str = ""
    classes: tuple[str, ...] = ()  # a labelled set's class names
    labels: list[int] = field(default_factory=list)  # per image, an index into `classes`

    @property
    def labelled(self) -> bool:
        return bool(self.classes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def float_images(self, rows: torch.Tensor | slice | None = None) -> torch.Tensor:
        """(N, 3, H, W) float32 in [0, 1] (of `rows` when given)."""
        x = self.images if rows is None else self.images[rows]
        return x.float() / 255.0

    @property
    def captions(self) -> list[str]:
        if self.labelled:
            return [CLASS_TEMPLATES[0].format(self.classes[y]) for y in self.labels]
        return [caption(c, s) for c, s in zip(self.colours, self.shapes, strict=True)]

    def training_captions(self, rows: list[int], rng: random.Random) -> list[str]:
        """A caption for each of `rows`, its template drawn from `rng` (contrastive training pairs)."""
        if self.labelled:
            return [rng.choice(CLASS_TEMPLATES).format(self.classes[self.labels[r]]) for r in rows]
        return [
            rng.choice(TRAIN_TEMPLATES).format(colour=self.colours[r], shape=self.shapes[r]) for r in rows
        ]

    def caption_texts(self) -> list[str]:
        """Every caption `training_captions` can make (the caption tokenizer's training text)."""
        if self.labelled:
            return [t.format(c) for t in CLASS_TEMPLATES for c in self.classes]
        return template_captions()

    def subset(self, rows: list[int] | range) -> ImageSet:
        index = {r: i for i, r in enumerate(rows)}
        questions = [(q, a, index[r]) for q, a, r in self.questions if r in index]
        return ImageSet(
            self.images[list(rows)],
            [self.shapes[r] for r in rows] if self.shapes else [],
            [self.colours[r] for r in rows] if self.colours else [],
            questions,
            self.split,
            self.classes,
            [self.labels[r] for r in rows] if self.labels else [],
        )


def read_image(
    path: str | Path, size: int = 64, on_wrong_size: Literal["refuse", "resize"] = "refuse"
) -> torch.Tensor:
    """An image file as a (3, size, size) uint8 tensor. A file that is not an image, or one of another
    size (unless `on_wrong_size="resize"`), is a one-line error."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise LMForgeError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise LMForgeError(
            f"{path} is not a readable image ({type(exc).__name__}); give a PNG or JPEG"
        ) from None
    if im.size != (size, size):
        if on_wrong_size != "resize":
            raise LMForgeError(
                f"{path} is {im.size[0]}x{im.size[1]} but the model takes {size}x{size} images; "
                "resize it or pass on_wrong_size='resize' (--resize)"
            )
        im = im.resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)


def attributes_from_questions(
    questions: list[tuple[str, str, int]],
) -> dict[int, tuple[str | None, str | None]]:
    """Each image's (shape, colour) as its questions settle them; None where they leave it open."""
    present: dict[int, set[str]] = {}
    absent: dict[int, set[str]] = {}
    for text, answer, image in questions:
        words = re.findall(r"[a-z]+", text.lower())
        if answer in SHAPES or answer in COLOURS:
            present.setdefault(image, set()).add(answer)
        negated = "not" in words or "no" in words
        for w in words:
            if w not in SHAPES and w not in COLOURS:
                continue
            if answer in ("yes", "no"):
                there = (answer == "yes") != negated
                (present if there else absent).setdefault(image, set()).add(w)
            else:  # "what is the blue shape?", "what color is the circle?" name what is there
                present.setdefault(image, set()).add(w)
    out = {}
    for image in {q[2] for q in questions}:
        pos, neg = present.get(image, set()), absent.get(image, set())
        shapes = [s for s in SHAPES if s in pos] or [s for s in SHAPES if s not in neg]
        colours = [c for c in COLOURS if c in pos] or [c for c in COLOURS if c not in neg]
        out[image] = (
            shapes[0] if len(shapes) == 1 else None,
            colours[0] if len(colours) == 1 else None,
        )
    return out


def attributes_from_pixels(image: torch.Tensor) -> tuple[str, str]:
    """(shape, colour) of a (3, H, W) uint8 easy-VQA image, read from its pixels."""
    x = image.permute(1, 2, 0).numpy().astype(np.float32)
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    background = np.median(border, axis=0)
    mask = np.abs(x - background).sum(-1) > 60
    if not mask.any():
        raise LMForgeError("no shape found in the image (it is all background)")
    ys, xs = np.nonzero(mask)
    fill = mask.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    shape = "triangle" if fill < 0.7 else "circle" if fill < 0.905 else "rectangle"
    # anti-aliased edges blend into the background: the colour is read from the pixels farthest from it
    inside = x[mask]
    distance = np.abs(inside - background).sum(-1)
    mean = inside[distance >= np.median(distance)].mean(0)
    colour = min(PALETTE, key=lambda c: float(((mean - np.array(PALETTE[c])) ** 2).sum()))
    return shape, colour


@functools.lru_cache(maxsize=4)
def _load_split(split: str, limit: int | None = None) -> ImageSet:
    root = asset_path("easy-vqa")
    with open(root / split / "questions.json", encoding="utf-8") as f:
        raw = json.load(f)
    questions = [(str(q), str(a), int(i)) for q, a, i in raw]
    ids = sorted(int(p.stem) for p in (root / split / "images").glob("*.png"))[:limit]
    row = {image_id: r for r, image_id in enumerate(ids)}
    images = torch.stack([read_image(root / split / "images" / f"{i}.png") for i in ids])
    settled = attributes_from_questions(questions)
    shapes, colours = [], []
    for r, image_id in enumerate(ids):
        shape, colour = settled.get(image_id, (None, None))
        if shape is None or colour is None:
            px_shape, px_colour = attributes_from_pixels(images[r])
            shape, colour = shape or px_shape, colour or px_colour
        shapes.append(shape)
        colours.append(colour)
    rows = [(q, a, row[i]) for q, a, i in questions if i in row]
    return ImageSet(images, shapes, colours, rows, split)


def load_easy_vqa(split: Split = "train", limit: int | None = None) -> ImageSet:
    """The easy-VQA `train` or `test` split as shipped (first `limit` images when given)."""
    if split not in ("train", "test"):
        raise LMForgeError(f"unknown easy-VQA split '{split}'; use train or test")
    if limit is not None and limit <= 0:
        raise LMForgeError(f"limit must be a positive number of images, got {limit}")
    return _load_split(split, limit)


def fashion_mnist_dir() -> Path:
    """Folder with Fashion-MNIST's four IDX files: `$LMFORGE_FASHION_MNIST` or Debian's package."""
    env = os.environ.get("LMFORGE_FASHION_MNIST")
    for c in ([env] if env else []) + list(FASHION_MNIST_DIRS):
        if (Path(c) / "t10k-labels-idx1-ubyte.gz").is_file():
            return Path(c)
    raise LMForgeError(
        "Fashion-MNIST was not found: install Debian's `dataset-fashion-mnist` (`apt-get install "
        "dataset-fashion-mnist`, done by `make setup`) or set LMFORGE_FASHION_MNIST to a folder with its "
        "four *-ubyte.gz files"
    )


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (the MNIST format, gzipped or not) as a uint8 array of its stated shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise LMForgeError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise LMForgeError(f"{path} is truncated: {body.size} bytes for a {shape} array")
    return body.reshape(shape)


@functools.lru_cache(maxsize=2)
def _load_fashion(split: str) -> ImageSet:
    root = fashion_mnist_dir()
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")  # (N, 28, 28)
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")  # (N,)
    if images.shape[0] != labels.shape[0]:
        raise LMForgeError(f"{root}: {images.shape[0]} {split} images but {labels.shape[0]} labels")
    tensor = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, 28, 28)
    return ImageSet(tensor, split=split, classes=FASHION_MNIST_CLASSES, labels=labels.astype(int).tolist())


def load_fashion_mnist(split: Split = "train", limit: int | None = None) -> ImageSet:
    """Fashion-MNIST's `train` (60,000) or `test` (10,000) split, (N, 1, 28, 28) with class labels
    (first `limit` images when given)."""
    if split not in ("train", "test"):
        raise LMForgeError(f"unknown Fashion-MNIST split '{split}'; use train or test")
    if limit is not None and limit <= 0:
        raise LMForgeError(f"limit must be a positive number of images, got {limit}")
    data = _load_fashion(split)
    return data if limit is None or limit >= len(data) else data.subset(range(limit))
