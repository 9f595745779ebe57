"""`lmforge quickstart --recipe vlm`: train a small VLM on easy-VQA from scratch, evaluate it on the
held-out test split (exact match per question type, caption BLEU-3 / CIDEr) and show sample answers.

Two stages share one time budget, as in LLaVA: first the image tower is trained contrastively as a
CLIP model (`train_clip` with the CLIP recipe's defaults) for `clip_fraction` of the minutes, then the
VLM starts its ViT from that tower (`vision_from`), kept frozen (`freeze_tower`, LLaVA's first stage),
and trains the projector and decoder on questions and captions for the rest.
A ViT trained only through the answer loss learns colour but not shape within minutes; the
contrastive stage is what teaches it shape. `clip_fraction=0` trains the VLM alone from scratch.

OUT/vlm-N/ holds the run: clip/ (the first stage's CLIP run, with its final/ checkpoint when it ran),
log.jsonl, plot.png, run.json, final/ (the model: `lmforge.load`,
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
from lmforge.errors import LMForgeError
from lmforge.io.atomic import atomic_write_text
from lmforge.multimodal.clip import CLIP, ClipConfig
from lmforge.multimodal.data import load_easy_vqa
from lmforge.multimodal.train import ClipTrainConfig, train_clip
from lmforge.multimodal.vlm import VLM, VLMConfig
from lmforge.multimodal.vlm_train import VLMEvalResult, VLMTrainConfig, evaluate_vlm, train_vlm

# The recipe's model: the CLIP recipe's ViT (a convolutional stem on 4x4 patches of 16 px, 3 blocks,
# 128 wide) whose 16 patch states and [CLS] all go to a 2-block, 128-wide decoder.
RECIPE_MODEL = VLMConfig(patch_size=16, stem="conv", prefix_tokens=16)


def tower_config(model: VLMConfig) -> ClipConfig:
    """The CLIP recipe's model with `model`'s vision fields, so its image tower loads into the VLM."""
    from lmforge.multimodal.quickstart import RECIPE_MODEL as CLIP_MODEL

    return dataclasses.replace(CLIP_MODEL, **dataclasses.asdict(model.vision_config()))


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
    stages: dict[str, float] = field(default_factory=dict)
    clip_final: Path | None = None
    vlm: VLM | None = field(default=None, repr=False)
    samples: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        """Exact match over every held-out question."""
        return self.evaluation.accuracy


def _minutes(value: float | None) -> str:
    return "every step" if value is None else f"{value:.2g} min"


def _stage_line(stages: dict[str, float]) -> str:
    return "stages: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in stages.items())


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
        f"captions: exact {e.caption_accuracy:.1%}, BLEU-3 {e.bleu:.1f}, CIDEr {e.cider:.2f}"
        + (
            f", CLIPScore {e.clip_score:.3f} (reference captions {e.clip_score_reference:.3f})"
            if e.clip_score is not None
            else ""
        ),
    ]


def vlm_quickstart(
    out: str | Path = "runs/quickstart",
    seed: int = 0,
    minutes: float | None = 9.0,
    progress: bool = True,
    model: VLMConfig | None = None,
    train: VLMTrainConfig | None = None,
    clip_fraction: float = 0.65,
    clip_train: ClipTrainConfig | None = None,
    freeze_tower: bool = True,
) -> VLMQuickstartResult:
    """Train the image tower as CLIP for `clip_fraction` of `minutes`, the VLM from that tower for the
    rest, then evaluate on the test split. `train` / `clip_train` replace the stages' configs (their
    own `minutes` then rule; the VLM's `vision_from` is set to the first stage's tower)."""
    from lmforge.assets import asset_path

    if not 0.0 <= clip_fraction < 1.0:
        raise LMForgeError(f"clip_fraction must be in [0, 1), got {clip_fraction}")
    say = print if progress else (lambda message: None)
    start = time.perf_counter()
    root = Path(out)
    run_dir = next(root / f"vlm-{i}" for i in range(1, 10_000) if not (root / f"vlm-{i}").exists())
    model = model or RECIPE_MODEL
    share = {"clip": clip_fraction, "vlm": 1.0 - clip_fraction}
    budget = {k: None if minutes is None else minutes * v for k, v in share.items()}
    stages: dict[str, float] = {}
    clip_final = train.vision_from if train is not None else None
    n = 3 if clip_fraction > 0 else 2
    if clip_fraction > 0:
        clip_train = clip_train or ClipTrainConfig(seed=seed, minutes=budget["clip"])
        say(f"[1/{n}] training the image tower contrastively (CLIP) for {_minutes(clip_train.minutes)}")
        t = time.perf_counter()
        clip = train_clip(tower_config(model), clip_train, out=run_dir / "clip", progress=progress)
        stages["clip"] = time.perf_counter() - t
        clip_final = clip.final
        say(f"      CLIP: {clip.steps} steps in {stages['clip'] / 60:.1f} min; tower {clip_final}")
    train = train or VLMTrainConfig(seed=seed, minutes=budget["vlm"], steps=100_000)
    train = dataclasses.replace(
        train, vision_from=clip_final, freeze_vision=freeze_tower and clip_final is not None
    )
    start_from = "the CLIP tower" if clip_final is not None else "scratch"
    say(f"[{n - 1}/{n}] training the VLM (ViT from {start_from}) for {_minutes(train.minutes)}")
    t = time.perf_counter()
    trained = train_vlm(model, train, out=run_dir, progress=progress)
    stages["vlm"] = time.perf_counter() - t
    say(f"[{n}/{n}] evaluating on the easy-VQA test split")
    t = time.perf_counter()
    test = load_easy_vqa("test")
    # the captions' CLIPScore under the first stage's CLIP (the tower's contrastive partner)
    scorer = CLIP.load(clip_final) if clip_final is not None else None
    evaluation = evaluate_vlm(trained.vlm, test, clip=scorer)
    stages["evaluate"] = time.perf_counter() - t
    total = time.perf_counter() - start
    results = {
        "recipe": "vlm",
        "clip_fraction": clip_fraction,
        "minutes": minutes,
        "stage_seconds": stages,
        "clip_final": None if clip_final is None else str(clip_final),
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
        stages=stages,
        clip_final=clip_final,
        vlm=trained.vlm,
        samples=[_stage_line(stages), *_report_lines(evaluation, test_dir)],
    )
