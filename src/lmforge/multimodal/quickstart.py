"""`lmforge quickstart --recipe clip`: train a CLIP model on easy-VQA from scratch, evaluate it on the
held-out test split and draw a zero-shot prediction grid.

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
from lmforge.io.atomic import atomic_write_text
from lmforge.multimodal.clip import CLIP, ClipConfig
from lmforge.multimodal.data import load_easy_vqa
from lmforge.multimodal.evaluate import ClipEvaluation, evaluate_clip, prediction_grid, retrieval_grid
from lmforge.multimodal.train import ClipTrainConfig, train_clip

# The recipe's model: a 3-block ViT with a convolutional stem on 4x4 patches of 16 px, a 2-block text
# encoder, 64-dim shared space.
RECIPE_MODEL = ClipConfig(patch_size=16, stem="conv")


@dataclass
class ClipQuickstartResult:
    """What `quickstart(recipe="clip")` made: the run, the model, its figures and the grid."""

    run_dir: Path
    final: Path
    evaluation: ClipEvaluation
    grid: Path
    retrieval_grid: Path
    results: Path
    steps: int
    train_s: float
    total_s: float
    clip: CLIP | None = field(default=None, repr=False)
    samples: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        """Held-out zero-shot accuracy, the mean of shape and colour."""
        return self.evaluation.accuracy


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
        f"both {c['both_swapped']:.1%}",
        f"CLIPScore: true captions {e.clip_score_matched:.3f}, wrong captions {e.clip_score_mismatched:.3f}",
    ]


def clip_quickstart(
    out: str | Path = "runs/quickstart",
    seed: int = 0,
    minutes: float | None = 9.0,
    progress: bool = True,
    model: ClipConfig | None = None,
    train: ClipTrainConfig | None = None,
) -> ClipQuickstartResult:
    """Train, evaluate on the test split, draw the grid; `minutes` is the training time budget."""
    start = time.perf_counter()
    root = Path(out)
    run_dir = next(root / f"clip-{i}" for i in range(1, 10_000) if not (root / f"clip-{i}").exists())
    model = model or RECIPE_MODEL
    train = train or ClipTrainConfig(seed=seed, minutes=minutes)
    trained = train_clip(model, train, out=run_dir, progress=progress)
    test = load_easy_vqa("test")
    evaluation = evaluate_clip(trained.clip, test)
    grid = prediction_grid(trained.clip, test, run_dir / "zero_shot_grid.png", seed=seed)
    retrieval = retrieval_grid(trained.clip, test, run_dir / "retrieval_grid.png")
    total = time.perf_counter() - start
    results = {
        "recipe": "clip",
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
        samples=_report_lines(evaluation),
    )
