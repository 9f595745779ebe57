"""`lmforge quickstart --recipe vlm`: train a small VLM on easy-VQA from scratch, evaluate it on the
held-out test split (exact match per question type, caption BLEU-3 / CIDEr) and show sample answers.

OUT/vlm-N/ holds the run: log.jsonl, plot.png, run.json, final/ (the model: `lmforge.load`,
`lmforge generate --model OUT/vlm-N/final --image FILE --prompt ...`) and results.json (every figure,
the hardware and the load average).
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
from lmforge.multimodal.data import load_easy_vqa
from lmforge.multimodal.vlm import VLM, VLMConfig
from lmforge.multimodal.vlm_train import VLMEvalResult, VLMTrainConfig, evaluate_vlm, train_vlm

# The recipe's model: the CLIP recipe's ViT (a convolutional stem on 4x4 patches of 16 px, 3 blocks,
# 128 wide) whose 16 patch states and [CLS] all go to a 2-block, 128-wide decoder.
RECIPE_MODEL = VLMConfig(patch_size=16, stem="conv", prefix_tokens=16)


@dataclass
class VLMQuickstartResult:
    """What `quickstart(recipe="vlm")` made: the run, the model and its held-out figures."""

    run_dir: Path
    final: Path
    evaluation: VLMEvalResult
    results: Path
    steps: int
    train_s: float
    total_s: float
    vlm: VLM | None = field(default=None, repr=False)
    samples: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        """Exact match over every held-out question."""
        return self.evaluation.accuracy


def _report_lines(e: VLMEvalResult, test_dir: str) -> list[str]:
    kinds = ", ".join(f"{k} {v:.1%} ({e.counts[k]})" for k, v in e.by_type.items())
    lines = [
        f"  image {test_dir}/{row}.png  Q: {q}  A: {got}  (expected {want})"
        for row, q, got, want in e.samples
    ]
    return [
        "sample answers on held-out images:",
        *lines,
        f"exact match by question type: {kinds}",
        f"captions: exact {e.caption_accuracy:.1%}, BLEU-3 {e.bleu:.1f}, CIDEr {e.cider:.2f}",
    ]


def vlm_quickstart(
    out: str | Path = "runs/quickstart",
    seed: int = 0,
    minutes: float | None = 8.0,
    progress: bool = True,
    model: VLMConfig | None = None,
    train: VLMTrainConfig | None = None,
) -> VLMQuickstartResult:
    """Train, then evaluate on the test split; `minutes` is the training time budget."""
    from lmforge.assets import asset_path

    start = time.perf_counter()
    root = Path(out)
    run_dir = next(root / f"vlm-{i}" for i in range(1, 10_000) if not (root / f"vlm-{i}").exists())
    train = train or VLMTrainConfig(seed=seed, minutes=minutes, steps=100_000)
    trained = train_vlm(model or RECIPE_MODEL, train, out=run_dir, progress=progress)
    test = load_easy_vqa("test")
    evaluation = evaluate_vlm(trained.vlm, test)
    total = time.perf_counter() - start
    results = {
        "recipe": "vlm",
        "steps": trained.steps,
        "train_seconds": trained.seconds,
        "total_seconds": total,
        "train_loss": trained.train_loss,
        "evaluation": dataclasses.asdict(evaluation),
        "accuracy": evaluation.accuracy,
        "parameters": trained.vlm.network.num_parameters(),
        "hardware": hardware.describe(),
        "load_average": os.getloadavg(),
    }
    results_path = atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2))
    test_dir = str(asset_path("easy-vqa") / "test" / "images")
    return VLMQuickstartResult(
        run_dir=run_dir,
        final=trained.final,
        evaluation=evaluation,
        results=results_path,
        steps=trained.steps,
        train_s=trained.seconds,
        total_s=total,
        vlm=trained.vlm,
        samples=_report_lines(evaluation, test_dir),
    )
