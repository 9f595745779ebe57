"""Masked image modeling through the one Trainer: `MAEObjective`, `ImageBatches`, `mae_run`.

The masked autoencoder (mae.py) is trained like every other model (train/trainer.py: AdamW, warmup +
cosine, clipping, logs, checkpoints, exact resume). Batch k holds `batch_size` training images drawn
without replacement, flipped at random, and the seed of their masks, all from a generator seeded by
(seed, k): the loss of a batch is the MSE on the masked patches of that mask, so a resumed run computes
the same losses. Validation scores the held-out images under fixed masks. A checkpoint's model part is a
`MaskedAutoencoder.save` directory (`load_vision_encoder` reads its ViT for a probe or a CLIP tower).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.errors import LMForgeError
from lmforge.model.vision import VisionConfig
from lmforge.multimodal.data import ImageSet
from lmforge.multimodal.mae import MAEConfig, MaskedAutoencoder
from lmforge.multimodal.train import flip_images, index_rng, seed_from
from lmforge.train.batches import ValSet
from lmforge.train.trainer import Objective, TrainConfig, Trainer


@dataclass
class ImageBatches:
    """Batch k: `batch_size` distinct images (B, c, H, W) in [0, 1], flipped at random, and `mask_seed`
    (a 0-d int64 tensor) for their masks; all from (seed, k)."""

    data: ImageSet
    batch_size: int
    flips: bool = True
    seed: int = 0

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        rng = index_rng(self.seed, index)
        rows = rng.choice(len(self.data), size=min(self.batch_size, len(self.data)), replace=False).tolist()
        images = self.data.float_images(rows)
        if self.flips:
            images = flip_images(images, torch.Generator().manual_seed(seed_from(rng)))
        return {"images": images, "mask_seed": torch.tensor(seed_from(rng))}


def mae_val_set(data: ImageSet, batch_size: int = 200, seed: int = 0) -> ValSet:
    """Fixed batches of `data` with fixed masks (no flips)."""
    batches = []
    for i in range(0, len(data), batch_size):
        rows = list(range(i, min(i + batch_size, len(data))))
        batches.append({"images": data.float_images(rows), "mask_seed": torch.tensor(seed * 1_000_003 + i)})
    return ValSet(batches)


def masked_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The MAE loss of a batch under the mask its `mask_seed` draws (through the forward)."""
    generator = torch.Generator().manual_seed(int(batch["mask_seed"]))
    return model(batch["images"], generator)[0]


class MAEObjective(Objective):
    """The masked autoencoder for the Trainer: masked-patch MSE, validation MSE under fixed masks,
    checkpoints `MaskedAutoencoder.load` reads; throughput in images."""

    name = "mae"
    unit, unit_short = "images", "img"

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], config: TrainConfig) -> torch.Tensor:
        return masked_loss(model, batch)

    def write_model(self, directory: Path, model: nn.Module) -> None:
        model.save(directory)

    def load_weights(self, model: nn.Module, path: Path) -> None:
        saved = MaskedAutoencoder.load(path)
        if saved.vision != model.vision or saved.config != model.config:
            raise LMForgeError(f"{path}: the checkpoint's MAE config differs from this run's model")
        model.load_state_dict(saved.state_dict())

    def model_config(self, model: nn.Module) -> dict[str, Any] | None:
        return {"vision": dataclasses.asdict(model.vision), "mae": dataclasses.asdict(model.config)}


@dataclass
class MAERun:
    """An MAE run ready to `trainer.fit()`: the Trainer and the model it trains."""

    trainer: Trainer
    mae: MaskedAutoencoder


def mae_run(
    vision: VisionConfig,
    config: MAEConfig,
    train: TrainConfig,
    out: str | Path,
    data: ImageSet,
    val_images: int = 400,
    train_images: int | None = None,
    flips: bool = True,
    identity: dict[str, Any] | None = None,
) -> MAERun:
    """The Trainer for a masked autoencoder over a ViT of shape `vision` trained on `data` (its last
    `val_images` held out for validation), writing to `out`."""
    if tuple(data.images.shape[1:]) != (vision.channels, vision.image_size, vision.image_size):
        raise LMForgeError(
            f"the images are {tuple(data.images.shape[1:])} (channels, height, width) but the model takes "
            f"{(vision.channels, vision.image_size, vision.image_size)}; set channels and image_size to match"
        )
    n_val = min(val_images, len(data) // 5)
    n_train = len(data) - n_val if train_images is None else min(train_images, len(data) - n_val)
    if n_train < 1:
        raise LMForgeError(f"need at least 1 training image, have {n_train}")
    torch.manual_seed(train.seed)
    mae = MaskedAutoencoder(vision, config)
    batches = ImageBatches(data.subset(range(n_train)), train.batch_size, flips, train.seed)
    val = mae_val_set(data.subset(range(len(data) - n_val, len(data))), seed=train.seed) if n_val else None
    identity = {
        "objective": "mae",
        "data": data.split,
        "images": len(data),
        "train_images": n_train,
        "val_images": n_val,
        "flips": flips,
        **(identity or {}),
    }
    trainer = Trainer(mae, train, batches, out, val, identity=identity, objective=MAEObjective())
    return MAERun(trainer, mae)
