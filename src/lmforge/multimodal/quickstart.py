"""`lmforge quickstart --recipe clip`: train a CLIP model on easy-VQA (or, with `dataset="fashion-mnist"`,
on Fashion-MNIST's train split) from scratch, evaluate it on the held-out test split and draw a zero-shot
prediction grid. On Fashion-MNIST the evaluation is zero-shot classification of the 10,000 test images
with the class-prompt ensemble, plus linear probes (fitted on the train split) on the frozen image
tower's features and on raw pixels.

OUT/clip-N/ holds the run: log.jsonl, plot.png, run.json, final/ (the model, `CLIP.load`),
zero_shot_grid.png, retrieval_grid.png (top 5 test images for three captions) and results.json (every figure, the hardware and the load average).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmforge import hardware
from lmforge.errors import LMForgeError
from lmforge.io.atomic import atomic_write_text
from lmforge.multimodal.clip import CLIP, ClipConfig
from lmforge.multimodal.data import load_easy_vqa, load_fashion_mnist
from lmforge.multimodal.evaluate import (
    ClassEvaluation,
    ClipEvaluation,
    evaluate_classes,
    evaluate_clip,
    prediction_grid,
    retrieval_grid,
)
from lmforge.multimodal.train import ClipTrainConfig, train_clip

# The recipe's model: a 3-block ViT with a convolutional stem on 4x4 patches of 16 px, a 2-block text
# encoder, 64-dim shared space.
RECIPE_MODEL = ClipConfig(patch_size=16, stem="conv")
# On Fashion-MNIST: one grey channel at 28 px as shipped, the conv stem on 4x4 patches (7x7 tokens), 64 wide
# on both sides (4x cheaper a step than 128: more epochs in the same minutes). No flips: a shoe upside
# down is not a shoe of the dataset.
FASHION_MODEL = ClipConfig(
    image_size=28, patch_size=4, channels=1, stem="conv", vision_d_model=64, text_d_model=64
)
DATASETS = ("easy-vqa", "fashion-mnist")


@dataclass
class ClipQuickstartResult:
    """What `quickstart(recipe="clip")` made: the run, the model, its figures and the grid."""

    run_dir: Path
    final: Path
    evaluation: ClipEvaluation | ClassEvaluation
    grid: Path
    retrieval_grid: Path
    results: Path
    steps: int
    train_s: float
    total_s: float
    clip: CLIP | None = field(default=None, repr=False)
    samples: list[str] = field(default_factory=list)
    dataset: str = "easy-vqa"

    @property
    def accuracy(self) -> float:
        """Held-out zero-shot accuracy: the mean of shape and colour (easy-VQA), or of the class with the
        prompt ensemble (Fashion-MNIST)."""
        return self.evaluation.accuracy

    @property
    def accuracy_note(self) -> str:
        """What `accuracy` measures, and beside it the linear probes on a labelled set."""
        e = self.evaluation
        if not isinstance(e, ClassEvaluation):
            return "zero-shot shape and colour, held-out test split"
        note = f"zero-shot, {e.images:,} held-out test images, {e.prompts}-prompt ensemble"
        note += f"; linear probe {e.probe.accuracy:.1%}"
        if e.pixel_probe is not None:
            note += f" (raw pixels {e.pixel_probe.accuracy:.1%})"
        return note


def _report_lines(e: ClipEvaluation) -> list[str]:
    r, c = e.retrieval, e.compositional
    return [
        f"zero-shot on {e.images} held-out images: shape {e.shape_accuracy:.1%}, colour {e.colour_accuracy:.1%} "
        f"(one prompt: {e.single_prompt['shape']:.1%} / {e.single_prompt['colour']:.1%})",
        "retrieval over 24-image galleries, R@1/5/10: image→text "
        + "/".join(f"{r[f'image_to_text_R@{k}']:.1%}" for k in (1, 5, 10))
        + ", text→image "
        + "/".join(f"{r[f'text_to_image_R@{k}']:.1%}" for k in (1, 5, 10)),
        f"compositional probe: colour swaps {c['colour_swap']:.1%}, shape swaps {c['shape_swap']:.1%}, "
        f"both {c['both_swapped']:.1%}; shape colour vs background colour (generated scenes) "
        f"{c['background_swap']:.1%}",
        f"CLIPScore: true captions {e.clip_score_matched:.3f}, wrong captions {e.clip_score_mismatched:.3f}",
    ]


def _class_report_lines(e: ClassEvaluation) -> list[str]:
    lines = [
        f"zero-shot on {e.images:,} held-out images: {e.zero_shot:.1%} with {e.prompts} prompts "
        f"(one prompt: {e.single_prompt:.1%})",
        "zero-shot per class: " + ", ".join(f"{c} {a:.0%}" for c, a in e.per_class.items()),
        f"linear probe on the frozen image features ({e.probe.features} dims, C={e.probe.C:g} chosen on "
        f"{e.probe.val_size:,} validation images of the train split): {e.probe.accuracy:.1%}",
    ]
    if e.pixel_probe is not None:
        lines.append(
            f"linear probe on raw pixels ({e.pixel_probe.features} dims, C={e.pixel_probe.C:g}): "
            f"{e.pixel_probe.accuracy:.1%}"
        )
    return lines


def clip_quickstart(
    out: str | Path = "runs/quickstart",
    seed: int = 0,
    minutes: float | None = 9.0,
    progress: bool = True,
    model: ClipConfig | None = None,
    train: ClipTrainConfig | None = None,
    dataset: str = "easy-vqa",
) -> ClipQuickstartResult:
    """Train, evaluate on the test split, draw the grid; `minutes` is the training time budget."""
    if dataset not in DATASETS:
        raise LMForgeError(f"unknown CLIP quickstart dataset {dataset!r}; use one of {', '.join(DATASETS)}")
    start = time.perf_counter()
    root = Path(out)
    run_dir = next(root / f"clip-{i}" for i in range(1, 10_000) if not (root / f"clip-{i}").exists())
    if dataset == "fashion-mnist":
        data, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        model = model or FASHION_MODEL
        train = train or ClipTrainConfig(seed=seed, minutes=minutes, flips=False, positives="class")
    else:
        data, test = None, load_easy_vqa("test")
        model = model or RECIPE_MODEL
        train = train or ClipTrainConfig(seed=seed, minutes=minutes)
    trained = train_clip(model, train, out=run_dir, data=data, progress=progress)
    if dataset == "fashion-mnist":
        evaluation = evaluate_classes(trained.clip, data, test, seed=seed)
        samples = _class_report_lines(evaluation)
    else:
        evaluation = evaluate_clip(trained.clip, test)
        samples = _report_lines(evaluation)
    grid = prediction_grid(trained.clip, test, run_dir / "zero_shot_grid.png", seed=seed)
    retrieval = retrieval_grid(trained.clip, test, run_dir / "retrieval_grid.png")
    total = time.perf_counter() - start
    results = {
        "recipe": "clip",
        "dataset": dataset,
        "steps": trained.steps,
        "train_seconds": trained.seconds,
        "total_seconds": total,
        "train_loss": trained.train_loss,
        "val_loss": trained.val_loss,
        "evaluation": dataclasses.asdict(evaluation),
        "accuracy": evaluation.accuracy,
        "parameters": trained.clip.model.num_parameters(),
        "hardware": hardware.describe(),
        "load_average": os.getloadavg(),
    }
    results_path = atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2))
    return ClipQuickstartResult(
        run_dir=run_dir,
        final=trained.final,
        evaluation=evaluation,
        grid=grid,
        retrieval_grid=retrieval,
        results=results_path,
        steps=trained.steps,
        train_s=trained.seconds,
        total_s=total,
        clip=trained.clip,
        samples=samples,
        dataset=dataset,
    )
