"""`lmforge pretrain DATASET --objective clip|vlm|mae`: the image models through the one Trainer.

The model is the quickstart recipe's (CLIP: `quickstart.RECIPE_MODEL`; VLM: `vlm_quickstart.RECIPE_MODEL`;
MAE: a patch-stem `VisionConfig` and `MAEConfig`), with any of its fields changed by `model_overrides`
(`--model-overrides '{"vision_n_layer": 4}'`); on Fashion-MNIST (1×28×28) the image fields default to
that shape. Training, logs, checkpoints and `--resume` are the Trainer's, as for `--objective clm`;
OUT/final loads with `CLIP.load`, `VLM.load` (and `lmforge.load`) or `MaskedAutoencoder.load`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.errors import LMForgeError
from lmforge.model.vision import VisionConfig
from lmforge.multimodal.clip import ClipConfig
from lmforge.multimodal.data import ImageSet, load_easy_vqa, load_fashion_mnist
from lmforge.multimodal.mae import MAEConfig
from lmforge.multimodal.vlm import VLMConfig

if TYPE_CHECKING:
    from lmforge.train.config import PretrainConfig
    from lmforge.train.trainer import Trainer

DATASETS = {"easy-vqa": load_easy_vqa, "fashion-mnist": load_fashion_mnist}
# image fields a dataset needs unless model_overrides set them (easy-VQA: the configs' own 3×64×64)
DATASET_SHAPE = {"easy-vqa": {}, "fashion-mnist": {"image_size": 28, "channels": 1, "patch_size": 7}}
NEEDS_QUESTIONS = {"vlm"}


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def model_configs(objective: str, dataset: str, overrides: dict[str, Any] | None) -> tuple[Any, ...]:
    """The model configs of a run: (ClipConfig,), (VLMConfig,) or (VisionConfig, MAEConfig); an
    override naming no field of them is a one-line error."""
    from lmforge.multimodal.quickstart import RECIPE_MODEL as CLIP_MODEL
    from lmforge.multimodal.vlm_quickstart import RECIPE_MODEL as VLM_MODEL

    overrides = dict(overrides or {})
    shape = dict(DATASET_SHAPE[dataset])
    if objective == "mae" or shape:
        shape.setdefault("stem", "patch")  # MAE needs it; the recipes' conv stem is sized for 64 px
    classes: tuple[type, ...] = {
        "clip": (ClipConfig,),
        "vlm": (VLMConfig,),
        "mae": (VisionConfig, MAEConfig),
    }[objective]
    known = set().union(*(_fields(c) for c in classes))
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise LMForgeError(
            f"--model-overrides: {', '.join(unknown)} is not a field of the {objective} model; "
            f"use any of {', '.join(sorted(known))}"
        )
    values = {**shape, **overrides}
    if objective == "clip":
        return (dataclasses.replace(CLIP_MODEL, **values),)
    if objective == "vlm":
        return (dataclasses.replace(VLM_MODEL, **values),)
    vision = VisionConfig(**{k: v for k, v in values.items() if k in _fields(VisionConfig)})
    return vision, MAEConfig(**{k: v for k, v in values.items() if k in _fields(MAEConfig)})


def check_dataset(name: str, objective: str) -> None:
    """An unknown dataset name, or one without questions for the VLM, is a one-line error."""
    if name not in DATASETS:
        raise LMForgeError(
            f"unknown image dataset {name!r} for --objective {objective}; use {' or '.join(DATASETS)}"
        )
    if objective in NEEDS_QUESTIONS and name != "easy-vqa":
        raise LMForgeError(f"--objective {objective} trains on questions: use the easy-vqa dataset")


def image_trainer(dataset: str, cfg: PretrainConfig, out: str | Path) -> Trainer:
    """The Trainer of `lmforge pretrain DATASET --objective clip|vlm|mae` (options checked before the
    data is read)."""
    check_dataset(dataset, cfg.objective)
    configs = model_configs(cfg.objective, dataset, cfg.model_overrides)
    data: ImageSet = DATASETS[dataset]("train")
    train = cfg.training()
    identity = {"dataset": dataset}
    if cfg.objective == "clip":
        from lmforge.multimodal.train import clip_run

        run = clip_run(
            configs[0],
            train,
            out,
            data,
            cfg.val_images,
            cfg.train_images,
            cfg.flips,
            identity,
            positives=cfg.positives,
        )
    elif cfg.objective == "vlm":
        from lmforge.multimodal.vlm_train import vlm_run

        if cfg.train_images is not None:
            data = data.subset(range(min(cfg.train_images, len(data))))
        run = vlm_run(
            configs[0],
            train,
            out,
            data,
            cfg.questions_per_image,
            cfg.caption_share,
            cfg.flips,
            cfg.vision_from,
            cfg.freeze_vision,
            identity,
        )
    else:
        from lmforge.multimodal.mae_train import mae_run

        run = mae_run(*configs, train, out, data, cfg.val_images, cfg.train_images, cfg.flips, identity)
    return run.trainer
