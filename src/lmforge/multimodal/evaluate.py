"""Evaluating image–text models: zero-shot classification, retrieval, CLIPScore, compositional probes.

- `zero_shot_classifier` / `zero_shot_accuracy`: each class's text embedding is the normalised mean of
  its prompts' embeddings (prompt ensembling, as in CLIP's ImageNet evaluation); an image takes the class
  of highest cosine similarity.
- `retrieval_recall`: Recall@K both ways with relevance given by labels (an image and a text are a match
  when their labels are equal), so captions shared by several images are handled.
- `clip_score` (from `lmforge.eval.metrics.multimodal`): CLIPScore (Hessel et al. 2021),
  w · max(cos(image, text), 0) with w = 2.5; `clip_score_model` computes it with one of our checkpoints,
  `clip_score_pairs` on image files with their texts (`lmforge eval clipscore`).
- `compositional_probe`: for each image, its caption against captions with the colour swapped, the shape
  swapped, or both; accuracy is the share of pairs where the true caption scores higher. `evaluate_clip`
  adds `scenes.background_probe` ("blue circle" vs "red circle" on generated red-background scenes).
- `evaluate_classes`: on a labelled set (Fashion-MNIST), zero-shot class accuracy with the prompt
  ensemble `CLASS_TEMPLATES` (and with one prompt), per class, and linear probes (`probe.linear_probe`)
  on the frozen image tower's pooled features and on raw pixels, fitted on the train split.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from lmforge.errors import LMForgeError
from lmforge.eval.metrics.multimodal import clip_score
from lmforge.multimodal.clip import CLIP
from lmforge.multimodal.data import CLASS_TEMPLATES, COLOURS, SHAPES, ImageSet, caption
from lmforge.multimodal.probe import ProbeResult, image_features, linear_probe, pixel_features
from lmforge.multimodal.scenes import background_probe

SHAPE_PROMPTS = ("a {}", "a picture of a {}", "a {} on a light background", "the shape is a {}")
COLOUR_PROMPTS = ("a {} shape", "a picture of a {} shape", "something {}", "the shape is {}")


def clip_score_model(clip: CLIP, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """CLIPScore of each image with its text under one of our CLIP checkpoints."""
    if len(texts) != images.shape[0]:
        raise LMForgeError(f"{images.shape[0]} images but {len(texts)} texts: give one text per image")
    return clip_score(clip.encode_images(images), clip.encode_texts(list(texts)))


def clip_score_pairs(
    model: CLIP | str | Path, pairs: str | Path | Sequence[tuple[str | Path, str]], resize: bool = False
) -> dict:
    """CLIPScore of (image file, text) pairs under one of our CLIP checkpoints: the mean, and each pair's.

    `pairs` is a list, or a JSONL file with `{"image": path, "text": caption}` per line (relative image paths
    are read beside the file); images of another size are refused, or resized with `resize`."""
    import json

    from lmforge.multimodal.data import read_image

    clip = model if isinstance(model, CLIP) else CLIP.load(model)
    if isinstance(pairs, str | Path):
        path = Path(pairs)
        if not path.is_file():
            raise LMForgeError(f"pairs file not found: {path}")
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append((path.parent / row["image"], str(row["text"])))
            except (ValueError, KeyError, TypeError):
                raise LMForgeError(
                    f'{path}:{n}: each line must be a JSON object {{"image": path, "text": caption}}'
                ) from None
        pairs = rows
    if not pairs:
        raise LMForgeError("no (image, text) pairs to score")
    size, mode = clip.config.image_size, "resize" if resize else "refuse"
    images = torch.stack([read_image(image, size, mode) for image, _ in pairs])
    if clip.config.channels == 1:  # a grey model: the mean of the three channels
        images = images.float().mean(1, keepdim=True).round().to(torch.uint8)
    scores = clip_score_model(clip, images, [text for _, text in pairs]).tolist()
    return {"clip_score": sum(scores) / len(scores), "pairs": len(scores), "scores": scores}


def zero_shot_classifier(clip: CLIP, classes: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """(n_classes, E): per class, the normalised mean of its normalised prompt embeddings."""
    prompts = [t.format(c) for c in classes for t in templates]
    emb = clip.encode_texts(prompts).view(len(classes), len(templates), -1)
    return F.normalize(emb.mean(1), dim=-1)


def zero_shot_predict(image_emb: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    return (image_emb @ classifier.T).argmax(-1)


def zero_shot_accuracy(
    clip: CLIP, data: ImageSet, attribute: str, templates: Sequence[str] | None = None
) -> float:
    """Accuracy of zero-shot `attribute` ("shape" or "colour"; "class" on a labelled set) classification
    over `data`."""
    predicted, truth = _zero_shot(clip, data, attribute, templates)
    return float((predicted == truth).float().mean())


def _zero_shot(
    clip: CLIP, data: ImageSet, attribute: str, templates: Sequence[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted, true) class indices of `data` under zero-shot classification of `attribute`."""
    if attribute == "class":
        if not data.labelled:
            raise LMForgeError("zero-shot 'class' accuracy needs a labelled set (classes + labels)")
        classes, truth, default = data.classes, torch.tensor(data.labels), CLASS_TEMPLATES
    else:
        classes, labels, default = {
            "shape": (SHAPES, data.shapes, SHAPE_PROMPTS),
            "colour": (COLOURS, data.colours, COLOUR_PROMPTS),
        }[attribute]
        truth = torch.tensor([classes.index(x) for x in labels])
    classifier = zero_shot_classifier(clip, classes, templates or default)
    return zero_shot_predict(clip.encode_images(data.images), classifier), truth


def retrieval_recall(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    image_labels: Sequence,
    text_labels: Sequence,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K image→text and text→image: the share of queries with a matching item in the top K."""
    sim = image_emb @ text_emb.T  # (I, T)
    match = torch.tensor([[a == b for b in text_labels] for a in image_labels])
    out = {}
    for name, s, m in (("image_to_text", sim, match), ("text_to_image", sim.T, match.T)):
        order = s.argsort(dim=1, descending=True)
        hits = m.gather(1, order)
        for k in ks:
            out[f"{name}_R@{k}"] = float(hits[:, :k].any(1).float().mean())
    return out


def gallery_retrieval(clip: CLIP, data: ImageSet, draws: int = 20, seed: int = 0) -> dict[str, float]:
    """Recall@1/5/10 both ways over galleries of one image per (colour, shape) pair and their captions
    (24 images, 24 distinct captions, one match each), averaged over `draws` random galleries."""
    by_pair: dict[tuple[str, str], list[int]] = {}
    for r, (c, s) in enumerate(zip(data.colours, data.shapes, strict=True)):
        by_pair.setdefault((c, s), []).append(r)
    pairs = sorted(by_pair)
    rng = random.Random(seed)
    image_emb = clip.encode_images(data.images)
    text_emb = clip.encode_texts([caption(c, s) for c, s in pairs])
    totals: dict[str, float] = {}
    for _ in range(draws):
        rows = [rng.choice(by_pair[p]) for p in pairs]
        scores = retrieval_recall(image_emb[rows], text_emb, pairs, pairs)
        for k, v in scores.items():
            totals[k] = totals.get(k, 0.0) + v / draws
    totals["gallery_size"] = float(len(pairs))
    return totals


def compositional_probe(clip: CLIP, data: ImageSet) -> dict[str, float]:
    """Accuracy of the true caption over every colour swap, shape swap and both-swapped caption."""
    image_emb = clip.encode_images(data.images)
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    text_emb = clip.encode_texts([caption(c, s) for c, s in pairs])
    index = {p: i for i, p in enumerate(pairs)}
    sim = image_emb @ text_emb.T
    wins = {"colour_swap": [], "shape_swap": [], "both_swapped": []}
    for r, (c, s) in enumerate(zip(data.colours, data.shapes, strict=True)):
        true = sim[r, index[(c, s)]]
        for oc, os_ in pairs:
            if (oc, os_) == (c, s):
                continue
            kind = "colour_swap" if os_ == s else "shape_swap" if oc == c else "both_swapped"
            wins[kind].append(bool(true > sim[r, index[(oc, os_)]]))
    out = {k: sum(v) / len(v) for k, v in wins.items()}
    out["all"] = sum(sum(v) for v in wins.values()) / sum(len(v) for v in wins.values())
    return out


@dataclass
class ClipEvaluation:
    shape_accuracy: float
    colour_accuracy: float
    single_prompt: dict[str, float]
    retrieval: dict[str, float]
    compositional: dict[str, float]
    clip_score_matched: float
    clip_score_mismatched: float
    images: int
    extra: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """Mean of the shape and colour zero-shot accuracies."""
        return (self.shape_accuracy + self.colour_accuracy) / 2


def evaluate_clip(clip: CLIP, data: ImageSet) -> ClipEvaluation:
    """Every figure above on `data` (the held-out test split)."""
    single = {
        "shape": zero_shot_accuracy(clip, data, "shape", SHAPE_PROMPTS[:1]),
        "colour": zero_shot_accuracy(clip, data, "colour", COLOUR_PROMPTS[:1]),
    }
    matched = clip_score_model(clip, data.images, data.captions)
    rng = random.Random(0)
    wrong = [
        caption(rng.choice([c for c in COLOURS if c != col]), rng.choice([s for s in SHAPES if s != sh]))
        for col, sh in zip(data.colours, data.shapes, strict=True)
    ]
    mismatched = clip_score_model(clip, data.images, wrong)
    return ClipEvaluation(
        shape_accuracy=zero_shot_accuracy(clip, data, "shape"),
        colour_accuracy=zero_shot_accuracy(clip, data, "colour"),
        single_prompt=single,
        retrieval=gallery_retrieval(clip, data),
        # the swaps on the test images, and generated scenes: the shape's colour vs the background's
        compositional={**compositional_probe(clip, data), **background_probe(clip)},
        clip_score_matched=float(matched.mean()),
        clip_score_mismatched=float(mismatched.mean()),
        images=len(data),
    )


@dataclass
class ClassEvaluation:
    """Zero-shot and linear-probe figures of a CLIP model on a labelled test split."""

    zero_shot: float  # prompt ensemble
    single_prompt: float  # CLASS_TEMPLATES[0] alone
    per_class: dict[str, float]
    probe: ProbeResult  # on the image tower's pooled features
    pixel_probe: ProbeResult | None  # on raw pixels (the baseline)
    images: int
    prompts: int
    features: str = "the ViT's pooled output ([CLS]), before the CLIP projection"

    @property
    def accuracy(self) -> float:
        """Zero-shot accuracy with the prompt ensemble."""
        return self.zero_shot


def evaluate_classes(
    clip: CLIP, train: ImageSet, test: ImageSet, pixel_baseline: bool = True, seed: int = 0
) -> ClassEvaluation:
    """Zero-shot accuracy on `test` and linear probes fitted on `train` (C chosen on a validation slice
    of it), scored on `test`: the image tower's features and, with `pixel_baseline`, raw pixels."""
    if not (train.labelled and test.labelled) or train.classes != test.classes:
        raise LMForgeError("evaluate_classes needs labelled train and test sets with the same classes")
    predicted, truth = _zero_shot(clip, test, "class")
    right = predicted == truth
    single = zero_shot_accuracy(clip, test, "class", CLASS_TEMPLATES[:1])
    tower = clip.model.visual
    probe = linear_probe(
        image_features(tower, train.images),
        train.labels,
        image_features(tower, test.images),
        test.labels,
        seed=seed,
    )
    pixels = None
    if pixel_baseline:
        pixels = linear_probe(
            pixel_features(train.images), train.labels, pixel_features(test.images), test.labels, seed=seed
        )
    return ClassEvaluation(
        zero_shot=float(right.float().mean()),
        single_prompt=single,
        per_class={c: float(right[truth == i].float().mean()) for i, c in enumerate(test.classes)},
        probe=probe,
        pixel_probe=pixels,
        images=len(test),
        prompts=len(CLASS_TEMPLATES),
    )


def _show(ax, image: torch.Tensor) -> None:
    """Draw a (C, H, W) uint8 image: colour as is, one channel in grey."""
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image.permute(1, 2, 0).numpy())


def prediction_grid(clip: CLIP, data: ImageSet, path: str | Path, n: int = 24, seed: int = 0) -> Path:
    """A PNG of `n` held-out images, each titled with its zero-shot colour + shape prediction (its class on
    a labelled set; green when right, red otherwise)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmforge.io.atomic import atomic_file

    rows = random.Random(seed).sample(range(len(data)), min(n, len(data)))
    image_emb = clip.encode_images(data.images[rows])
    if data.labelled:
        predicted = zero_shot_predict(image_emb, zero_shot_classifier(clip, data.classes, CLASS_TEMPLATES))
        titles = [data.classes[p] for p in predicted.tolist()]
        right = [p == data.labels[r] for p, r in zip(predicted.tolist(), rows, strict=True)]
        what = f"{len(data.classes)}-class"
    else:
        shape = zero_shot_predict(image_emb, zero_shot_classifier(clip, SHAPES, SHAPE_PROMPTS)).tolist()
        colour = zero_shot_predict(image_emb, zero_shot_classifier(clip, COLOURS, COLOUR_PROMPTS)).tolist()
        titles = [f"{COLOURS[c]} {SHAPES[s]}" for s, c in zip(shape, colour, strict=True)]
        right = [
            SHAPES[s] == data.shapes[r] and COLOURS[c] == data.colours[r]
            for r, s, c in zip(rows, shape, colour, strict=True)
        ]
        what = "easy-VQA"
    cols = 6
    fig, axes = plt.subplots(
        (len(rows) + cols - 1) // cols, cols, figsize=(cols * 1.7, 1.9 * len(rows) / cols + 0.4)
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, r, title, ok in zip(axes.flat, rows, titles, right, strict=False):
        _show(ax, data.images[r])
        ax.set_title(title, fontsize=8, color="tab:green" if ok else "tab:red")
    fig.suptitle(f"zero-shot predictions on held-out {what} images", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def retrieval_grid(
    clip: CLIP, data: ImageSet, path: str | Path, queries: Sequence[str] | None = None, k: int = 5
) -> Path:
    """A PNG with one row per text query: the `k` images of `data` the model ranks highest for it
    (framed green when the image matches the query's caption, red otherwise)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmforge.io.atomic import atomic_file

    if queries is None and data.labelled:
        queries = [CLASS_TEMPLATES[0].format(data.classes[i]) for i in (0, 7, 8)][: len(data.classes)]
    queries = list(
        queries or [caption("red", "circle"), caption("teal", "triangle"), caption("yellow", "rectangle")]
    )
    captions = data.captions
    top = (clip.encode_texts(queries) @ clip.encode_images(data.images).T).topk(k, dim=1).indices
    fig, axes = plt.subplots(len(queries), k, figsize=(k * 1.4, len(queries) * 1.5 + 0.3), squeeze=False)
    for q, (text, rows) in enumerate(zip(queries, top.tolist(), strict=True)):
        for j, r in enumerate(rows):
            ax = axes[q][j]
            _show(ax, data.images[r])
            ax.set_xticks([])
            ax.set_yticks([])
            right = captions[r] == text
            for spine in ax.spines.values():
                spine.set_color("tab:green" if right else "tab:red")
                spine.set_linewidth(2)
        axes[q][0].set_ylabel(text, fontsize=8)
    fig.suptitle(f"text → image retrieval: top {k} of {len(data)} held-out images", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
