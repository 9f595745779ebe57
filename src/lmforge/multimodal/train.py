"""Contrastive training of the CLIP model on easy-VQA image–caption pairs: `train_clip`.

It reuses the project's training parts rather than the LM `Trainer` (whose batches, metrics and
checkpoints are token windows): AdamW with decay on matrices only and the warmup + cosine schedule
(train/optim.py), the JSONL/TensorBoard log and loss plot (train/logging.py), atomic checkpoints
(`CLIP.save`). Each step draws a batch of training images (random horizontal/vertical flips, which
keep a shape's name and colour) and, for each image, a caption drawn by `ImageSet.training_captions`;
the last `val_images` of the train split are held out for a validation loss. The test split is never read here.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lmforge import hardware
from lmforge.errors import LMForgeError
from lmforge.io.atomic import atomic_write_text
from lmforge.multimodal.clip import CLIP, ClipConfig, train_caption_tokenizer
from lmforge.multimodal.data import ImageSet, load_easy_vqa, template_captions
from lmforge.options import check_types, option
from lmforge.train.logging import RunLogger
from lmforge.train.optim import LRSchedule, build_optimizer

CALIBRATION_STEPS = 10  # steps timed before a time budget sizes the schedule (again at 5x)


def all_template_texts() -> list[str]:
    """Every caption the easy-VQA templates can make (the tokenizer's training text)."""
    return template_captions()


@dataclass
class ClipTrainConfig:
    """How `train_clip` trains; every field is an option of `lmforge quickstart --recipe clip`."""

    steps: int = option(3000, "optimizer steps (a time budget may size the schedule to fewer)")
    minutes: float | None = option(
        None, "training time budget: the schedule is sized from the first steps' pace to end within it"
    )
    batch_size: int = option(128, "image–caption pairs per step")
    lr: float = option(1e-3, "peak learning rate")
    warmup_steps: int = option(50, "linear warmup steps")
    weight_decay: float = option(0.05, "AdamW weight decay on matrices")
    train_images: int | None = option(None, "use the first N train-split images (none: all but val_images)")
    val_images: int = option(400, "images at the end of the train split held out for a validation loss")
    flips: bool = option(True, "random horizontal/vertical flips of training images")
    log_every: int = option(50, "steps between log lines and validation losses")
    seed: int = option(0, "seed for initialisation, batches and captions")

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("steps", "batch_size", "log_every"):
            if getattr(self, name) <= 0:
                raise LMForgeError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.minutes is not None and self.minutes <= 0:
            raise LMForgeError(f"minutes must be positive, got {self.minutes}")


@dataclass
class ClipTrainResult:
    clip: CLIP
    steps: int
    train_loss: float
    val_loss: float | None
    seconds: float
    run_dir: Path | None
    final: Path | None


def _flip(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    horizontal = torch.rand(images.shape[0], generator=g) < 0.5
    vertical = torch.rand(images.shape[0], generator=g) < 0.5
    images = torch.where(horizontal[:, None, None, None], images.flip(-1), images)
    return torch.where(vertical[:, None, None, None], images.flip(-2), images)


@torch.no_grad()
def validation_loss(clip: CLIP, data: ImageSet, batch_size: int = 200) -> float:
    """Mean InfoNCE over fixed batches of `data` with the first template's captions."""
    clip.model.eval()
    losses, captions = [], data.captions
    for i in range(0, len(data) - 1, batch_size):
        rows = list(range(i, min(i + batch_size, len(data))))
        if len(rows) < 2:
            break
        ids, mask = clip.tokenize([captions[r] for r in rows])
        losses.append(float(clip.model.loss(data.float_images(rows), ids, mask)))
    return sum(losses) / len(losses)


def train_clip(
    model: ClipConfig | None = None,
    train: ClipTrainConfig | None = None,
    out: str | Path | None = None,
    data: ImageSet | None = None,
    progress: bool = True,
) -> ClipTrainResult:
    """Train a CLIP model from scratch on easy-VQA's train split (or on `data`).

    With `out`, writes OUT/log.jsonl, OUT/plot.png, OUT/run.json and the model as OUT/final.
    """
    model = model or ClipConfig()
    train = train or ClipTrainConfig()
    if data is None:
        data = load_easy_vqa("train")
    if data.images.shape[-1] != model.image_size:
        raise LMForgeError(
            f"the images are {data.images.shape[-1]}x{data.images.shape[-2]} but the model takes "
            f"{model.image_size}x{model.image_size}; set image_size to match"
        )
    n_val = min(train.val_images, len(data) // 5)
    n_train = len(data) - n_val if train.train_images is None else min(train.train_images, len(data) - n_val)
    if n_train < 2:
        raise LMForgeError(f"need at least 2 training images, have {n_train}")
    train_set, val_set = data.subset(range(n_train)), data.subset(range(len(data) - n_val, len(data)))
    tokenizer = train_caption_tokenizer(data.caption_texts())
    clip = CLIP.create(model, tokenizer, seed=train.seed)
    optimizer = build_optimizer(clip.model, train.lr, train.weight_decay, betas=(0.9, 0.98))
    schedule = LRSchedule(
        train.lr, train.steps, min(train.warmup_steps, train.steps), "cosine", train.lr / 10
    )
    rng = random.Random(train.seed)
    g = torch.Generator().manual_seed(train.seed)
    logger = RunLogger(out, tensorboard=False) if out is not None else None
    batch = min(train.batch_size, n_train)
    start = time.perf_counter()
    loss_value, val, step = math.nan, None, 0
    total = train.steps
    timed: dict[int, float] = {}
    for step in range(train.steps):
        if train.minutes is not None and step in (CALIBRATION_STEPS, 5 * CALIBRATION_STEPS):
            # size the schedule to the time budget from the pace so far; once more after the first
            # steps (slower: allocator warm-up), from the pace since then
            timed[step] = time.perf_counter() - start
            first = min(timed)
            pace = timed[step] / step if step == first else (timed[step] - timed[first]) / (step - first)
            remaining = (train.minutes * 60 - timed[step]) / pace
            total = max(step + 1, min(train.steps, step + int(remaining)))
            schedule = LRSchedule(train.lr, total, min(train.warmup_steps, total), "cosine", train.lr / 10)
        clip.model.train()
        lr = schedule.apply(optimizer, step)
        rows = rng.sample(range(n_train), batch)
        images = train_set.float_images(rows)
        if train.flips:
            images = _flip(images, g)
        ids, mask = clip.tokenize(train_set.training_captions(rows, rng))
        loss = clip.model.loss(images, ids, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(clip.model.parameters(), 1.0))
        optimizer.step()
        loss_value = float(loss.detach())
        elapsed = time.perf_counter() - start
        last = step + 1 == total or (train.minutes is not None and elapsed > train.minutes * 60)
        if (step + 1) % train.log_every == 0 or last:
            record = {"kind": "train", "step": step + 1, "loss": loss_value, "lr": lr, "grad_norm": grad_norm}
            record["temperature"] = float(1 / clip.model.scale().detach())
            if n_val >= 2:
                val = validation_loss(clip, val_set)
            if logger is not None:
                logger.log(record)
                if val is not None:
                    logger.log({"kind": "val", "step": step + 1, "loss": val})
            if progress:
                shown = f", val {val:.3f}" if val is not None else ""
                print(
                    f"step {step + 1}/{total}: loss {loss_value:.3f}{shown}, τ {record['temperature']:.3f}, "
                    f"{(step + 1) / elapsed:.1f} steps/s",
                    file=sys.stderr,
                    flush=True,
                )
        if last:
            break
    seconds = time.perf_counter() - start
    clip.model.eval()
    final = None
    if out is not None:
        out = Path(out)
        final = clip.save(out / "final")
        logger.plot()
        logger.close()
        run = {
            "model": asdict(clip.config),
            "train": asdict(train),
            "steps": step + 1,
            "train_images": n_train,
            "val_images": n_val,
            "seconds": seconds,
            "hardware": hardware.describe(),
        }
        atomic_write_text(out / "run.json", json.dumps(run, indent=2))
    return ClipTrainResult(clip, step + 1, loss_value, val, seconds, out, final)
