"""Contrastive training of the CLIP model through the one Trainer: `ClipObjective`, `ClipBatches`,
`train_clip`.

The Trainer (train/trainer.py) runs the loop, as for the language models: AdamW with decay on matrices
only, warmup + cosine (following the clock under a time budget), clipping, the JSONL/TensorBoard log
and loss plot, periodic validation, atomic checkpoints (OUT/checkpoints/step-N, OUT/best, OUT/final,
each a `CLIP.save` directory) and exact resume. What is CLIP's own lives here: the symmetric InfoNCE
loss of a batch, the validation loss, the checkpoint's model files, and the batches: batch k draws its
images, their captions (`ImageSet.training_captions`) and random horizontal/vertical flips (which keep
a shape's name and colour) from a generator seeded by (seed, k), so a resumed run sees the same
batches. The last `val_images` of the train split are held out for the validation loss (captions from
`ImageSet.captions`); the test split is never read here.
"""

from __future__ import annotations

import json
import random
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from lmforge import hardware
from lmforge.errors import LMForgeError
from lmforge.io.atomic import atomic_write_text
from lmforge.multimodal.clip import CLIP, ClipConfig, symmetric_infonce, train_caption_tokenizer
from lmforge.multimodal.data import ImageSet, load_easy_vqa, template_captions
from lmforge.options import check_types, option
from lmforge.tokenizer import Tokenizer
from lmforge.train import checkpoint as ckpt
from lmforge.train.batches import ValSet
from lmforge.train.trainer import Objective, TrainConfig, Trainer


def all_template_texts() -> list[str]:
    """Every caption the easy-VQA templates can make (the tokenizer's training text)."""
    return template_captions()


@dataclass
class ClipTrainConfig:
    """How `train_clip` trains; every field is an option of `lmforge quickstart --recipe clip`."""

    steps: int = option(3000, "optimizer steps (a time budget may stop the run earlier)")
    minutes: float | None = option(
        None, "training time budget: the schedule follows the clock to end within it (Trainer max_minutes)"
    )
    batch_size: int = option(128, "image–caption pairs per step")
    lr: float = option(1e-3, "peak learning rate")
    warmup_steps: int = option(50, "linear warmup steps")
    weight_decay: float = option(0.05, "AdamW weight decay on matrices")
    train_images: int | None = option(None, "use the first N train-split images (none: all but val_images)")
    val_images: int = option(400, "images at the end of the train split held out for a validation loss")
    flips: bool = option(True, "random horizontal/vertical flips of training images")
    positives: Literal["pair", "class"] = option(
        "pair",
        "InfoNCE positives: each image's own caption (pair), or every caption of its class in the batch "
        "(class, UniCL: for labelled data such as fashion-mnist, where a batch holds many images of a class)",
    )
    log_every: int = option(50, "steps between log lines and validation losses")
    seed: int = option(0, "seed for initialisation, batches and captions")
    resume: bool = option(False, "continue the run in `out` from its latest checkpoint")

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("steps", "batch_size", "log_every"):
            if getattr(self, name) <= 0:
                raise LMForgeError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.minutes is not None and self.minutes <= 0:
            raise LMForgeError(f"minutes must be positive, got {self.minutes}")

    def training(self, progress: bool = True) -> TrainConfig:
        """The Trainer's settings for this run (fp32, AdamW betas (0.9, 0.98), clipping at 1)."""
        return TrainConfig(
            steps=self.steps,
            max_minutes=self.minutes,
            batch_size=self.batch_size,
            lr=self.lr,
            min_lr=self.lr / 10,
            warmup_steps=min(self.warmup_steps, self.steps),
            weight_decay=self.weight_decay,
            beta2=0.98,
            eval_every=self.log_every,
            log_every=self.log_every,
            seed=self.seed,
            precision="fp32",
            progress=progress,
            tensorboard=False,
            resume=self.resume,
        )


@dataclass
class ClipTrainResult:
    clip: CLIP
    steps: int
    train_loss: float
    val_loss: float | None
    seconds: float
    run_dir: Path | None
    final: Path | None


def flip_images(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each image flipped horizontally and/or vertically with probability 1/2 each."""
    horizontal = torch.rand(images.shape[0], generator=g) < 0.5
    vertical = torch.rand(images.shape[0], generator=g) < 0.5
    images = torch.where(horizontal[:, None, None, None], images.flip(-1), images)
    return torch.where(vertical[:, None, None, None], images.flip(-2), images)


def index_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of batch `index`: a pure function of (seed, index), whoever draws it and when."""
    return np.random.default_rng([seed, index])


def seed_from(rng: np.random.Generator) -> int:
    return int(rng.integers(2**62))


@dataclass
class ClipBatches:
    """Batch k: `batch_size` distinct images, a caption each, flipped at random; all seeded by (seed, k).
    Keys: `images` (B, 3, H, W) floats in [0, 1], `input_ids` and `attention_mask` (B, T)."""

    data: ImageSet
    tokenize: Any  # CLIP.tokenize
    batch_size: int
    flips: bool = True
    seed: int = 0
    groups: bool = False  # add `groups`, the rows' class labels (positives="class")

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        rng = index_rng(self.seed, index)
        rows = rng.choice(len(self.data), size=min(self.batch_size, len(self.data)), replace=False).tolist()
        captions = self.data.training_captions(rows, random.Random(seed_from(rng)))
        images = self.data.float_images(rows)
        if self.flips:
            images = flip_images(images, torch.Generator().manual_seed(seed_from(rng)))
        ids, mask = self.tokenize(captions)
        batch = {"images": images, "input_ids": ids, "attention_mask": mask}
        return batch | ({"groups": torch.tensor([self.data.labels[r] for r in rows])} if self.groups else {})


def clip_val_set(clip: CLIP, data: ImageSet, batch_size: int = 200, groups: bool = False) -> ValSet:
    """Fixed batches of `data` with their plain captions ("a red circle"), no flips (with `groups`: the
    rows' class labels too)."""
    captions, batches = data.captions, []
    for i in range(0, len(data) - 1, batch_size):
        rows = list(range(i, min(i + batch_size, len(data))))
        if len(rows) < 2:
            break
        ids, mask = clip.tokenize([captions[r] for r in rows])
        batch = {"images": data.float_images(rows), "input_ids": ids, "attention_mask": mask}
        batches.append(batch | ({"groups": torch.tensor([data.labels[r] for r in rows])} if groups else {}))
    return ValSet(batches)


def contrastive_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Symmetric InfoNCE of a batch through the model's forward (so DDP and torch.compile see it): row
    i's positive is column i, both ways, or every column of its group when the batch has `groups` (the
    same value as `clip_loss`)."""
    logits_per_image, logits_per_text = model(batch["images"], batch["input_ids"], batch["attention_mask"])
    return symmetric_infonce(logits_per_image, logits_per_text, batch.get("groups"))


class ClipObjective(Objective):
    """CLIP for the Trainer: InfoNCE loss, validation InfoNCE, checkpoints `CLIP.load` reads; throughput
    in images."""

    name = "clip"
    unit, unit_short = "images", "img"

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], config: TrainConfig) -> torch.Tensor:
        return contrastive_loss(model, batch)

    def write_model(self, directory: Path, model: nn.Module) -> None:
        CLIP(model, self.tokenizer).save(directory)

    def load_weights(self, model: nn.Module, path: Path) -> None:
        saved = CLIP.load(path)
        if saved.config != model.config:
            raise LMForgeError(f"{path}: the checkpoint's CLIP config differs from this run's model")
        model.load_state_dict(saved.model.state_dict())


def run_tokenizer(out: str | Path) -> Tokenizer | None:
    """The tokenizer saved in the latest checkpoint of the run in `out` (None: no checkpoint)."""
    latest = ckpt.latest_checkpoint(out)
    return Tokenizer.from_dir(latest) if latest is not None else None


@dataclass
class ClipRun:
    """A CLIP run ready to `trainer.fit()`: the Trainer, the model it trains and the image counts."""

    trainer: Trainer
    clip: CLIP
    train_images: int
    val_images: int


def clip_run(
    model: ClipConfig,
    train: TrainConfig,
    out: str | Path,
    data: ImageSet,
    val_images: int = 400,
    train_images: int | None = None,
    flips: bool = True,
    identity: dict[str, Any] | None = None,
    tokenizer: Tokenizer | None = None,
    positives: str = "pair",
) -> ClipRun:
    """The Trainer for a CLIP model of shape `model` trained on `data` (its last `val_images` held out
    for validation), writing to `out`. The caption tokenizer is `tokenizer`, else that of the run in
    `out` when it has a checkpoint (WordPiece training numbers its vocabulary differently each time, so
    a resumed run must keep its own), else one trained on `data.caption_texts()`."""
    if data.images.shape[-1] != model.image_size:
        raise LMForgeError(
            f"the images are {data.images.shape[-1]}x{data.images.shape[-2]} but the model takes "
            f"{model.image_size}x{model.image_size}; set image_size to match"
        )
    n_val = min(val_images, len(data) // 5)
    n_train = len(data) - n_val if train_images is None else min(train_images, len(data) - n_val)
    if n_train < 2:
        raise LMForgeError(f"need at least 2 training images, have {n_train}")
    groups = positives == "class"
    if groups and not data.labelled:
        raise LMForgeError(
            f"positives=class needs class labels, and {data.split or 'this data'} has none: use positives=pair"
        )
    train_set, val_set = data.subset(range(n_train)), data.subset(range(len(data) - n_val, len(data)))
    if tokenizer is None:
        tokenizer = run_tokenizer(out)
    if tokenizer is None:
        tokenizer = train_caption_tokenizer(data.caption_texts())
    clip = CLIP.create(model, tokenizer, seed=train.seed)
    batches = ClipBatches(train_set, clip.tokenize, min(train.batch_size, n_train), flips, train.seed, groups)
    val = clip_val_set(clip, val_set, groups=groups) if n_val >= 2 else None
    identity = {
        "objective": "clip",
        "data": data.split,
        "images": len(data),
        "train_images": n_train,
        "val_images": n_val,
        "flips": flips,
        "positives": positives,
        "tokenizer": tokenizer.fingerprint,
        **(identity or {}),
    }
    objective = ClipObjective(tokenizer)
    trainer = Trainer(clip.model, train, batches, out, val, identity=identity, objective=objective)
    return ClipRun(trainer, clip, n_train, n_val)


def train_clip(
    model: ClipConfig | None = None,
    train: ClipTrainConfig | None = None,
    out: str | Path | None = None,
    data: ImageSet | None = None,
    progress: bool = True,
) -> ClipTrainResult:
    """Train a CLIP model from scratch on easy-VQA's train split (or on `data`) with the Trainer.

    With `out`, writes the Trainer's run directory (log.jsonl, plot.png, checkpoints/, best/, final/)
    and OUT/run.json; `train.resume` continues it exactly."""
    model = model or ClipConfig()
    train = train or ClipTrainConfig()
    data = load_easy_vqa("train") if data is None else data
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(out) if out is not None else Path(scratch)
        run = clip_run(
            model,
            train.training(progress),
            run_dir,
            data,
            train.val_images,
            train.train_images,
            train.flips,
            positives=train.positives,
        )
        result = run.trainer.fit()
    run.clip.model.eval()
    val_loss = result.val.get("loss")
    if out is not None:
        record = {
            "model": asdict(run.clip.config),
            "train": asdict(train),
            "steps": result.steps,
            "train_images": run.train_images,
            "val_images": run.val_images,
            "seconds": result.elapsed_s,
            "hardware": hardware.describe(),
        }
        atomic_write_text(run_dir / "run.json", json.dumps(record, indent=2))
    return ClipTrainResult(
        run.clip,
        result.steps,
        result.train_loss,
        val_loss,
        result.elapsed_s,
        run_dir if out is not None else None,
        result.final if out is not None else None,
    )
