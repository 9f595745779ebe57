"""CLIP, the VLM and the masked autoencoder trained through the one Trainer: exact resume of a killed
run, `lmforge pretrain DATASET --objective clip|vlm|mae` from the CLI, and its one-line errors."""

from __future__ import annotations

import pytest
import torch

import lmforge
from lmforge.cli import main
from lmforge.errors import LMForgeError
from lmforge.multimodal.clip import CLIP, ClipConfig, train_caption_tokenizer
from lmforge.multimodal.data import load_easy_vqa
from lmforge.multimodal.mae import MaskedAutoencoder
from lmforge.multimodal.train import clip_run
from lmforge.multimodal.vlm import VLM, VLMConfig, train_vlm_tokenizer
from lmforge.multimodal.vlm_train import training_texts, vlm_run
from lmforge.train import checkpoint as ckpt
from lmforge.train.logging import read_log
from lmforge.train.trainer import TrainConfig

CLIP_TINY = dict(
    patch_size=16,
    vision_d_model=32,
    vision_n_layer=1,
    vision_n_head=2,
    text_d_model=32,
    text_n_layer=1,
    text_n_head=2,
    embed_dim=32,
)
VLM_TINY = dict(
    patch_size=16, vision_d_model=32, vision_n_layer=1, vision_n_head=2, text_d_model=32, text_n_head=2
)
QUIET = dict(progress=False, tensorboard=False, log_every=1, precision="fp32")
KEYS = ("kind", "step", "loss", "lr", "grad_norm")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Crashing:
    """A batch source that raises at micro-batch `at` (a run killed mid-way)."""

    def __init__(self, source, at: int):
        self.source, self.at = source, at

    def batch(self, index):
        if index == self.at:
            raise RuntimeError("simulated crash")
        return self.source.batch(index)


def _records(run_dir) -> list[tuple]:
    return [
        tuple(r.get(k) for k in KEYS)
        for r in read_log(run_dir / "log.jsonl")
        if r["kind"] in ("train", "val")
    ]


def _killed_and_resumed(tmp_path, make_run) -> None:
    """A run killed after its step-4 checkpoint and resumed (from a fresh model) logs exactly what an
    uninterrupted run logs."""
    make_run(tmp_path / "full").trainer.fit()
    crashing = make_run(tmp_path / "crash")
    crashing.trainer.train_data = Crashing(crashing.trainer.train_data, at=6)
    with pytest.raises(RuntimeError, match="simulated"):
        crashing.trainer.fit()
    assert [s for s, _ in ckpt.step_dirs(tmp_path / "crash")] == [4]
    make_run(tmp_path / "crash", seed_model=99).trainer.fit(resume=True)
    full, resumed = _records(tmp_path / "full"), _records(tmp_path / "crash")
    assert len([r for r in full if r[0] == "train"]) == 8
    assert full == resumed


def test_clip_run_killed_and_resumed_logs_the_same_losses(tmp_path):
    data = load_easy_vqa("train", limit=120)
    cfg = TrainConfig(steps=8, batch_size=16, lr=3e-3, warmup_steps=2, save_every=4, eval_every=3, **QUIET)

    shared = train_caption_tokenizer(
        data.caption_texts()
    )  # its training numbers tokens differently each time

    def make_run(out, seed_model=None):
        # the resumed run (seed_model) takes the tokenizer from its checkpoint
        tokenizer = shared if seed_model is None else None
        run = clip_run(ClipConfig(**CLIP_TINY), cfg, out, data, val_images=24, tokenizer=tokenizer)
        if seed_model is not None:  # resume must restore the weights, not rely on the same init
            torch.manual_seed(seed_model)
            for p in run.clip.model.parameters():
                p.data.normal_()
        return run

    _killed_and_resumed(tmp_path, make_run)
    a, b = CLIP.load(tmp_path / "full" / "final"), CLIP.load(tmp_path / "crash" / "final")
    torch.testing.assert_close(a.model.state_dict(), b.model.state_dict(), rtol=0, atol=0)


def test_vlm_run_killed_and_resumed_logs_the_same_losses(tmp_path):
    data = load_easy_vqa("train", limit=60)
    cfg = TrainConfig(steps=8, batch_size=16, lr=3e-3, warmup_steps=2, save_every=4, eval_every=0, **QUIET)

    shared = train_vlm_tokenizer(training_texts(data))

    def make_run(out, seed_model=None):
        tokenizer = shared if seed_model is None else None
        run = vlm_run(VLMConfig(**VLM_TINY), cfg, out, data, questions_per_image=4, tokenizer=tokenizer)
        if seed_model is not None:
            torch.manual_seed(seed_model)
            for p in run.vlm.network.parameters():
                p.data.normal_()
        return run

    _killed_and_resumed(tmp_path, make_run)
    a, b = VLM.load(tmp_path / "full" / "final"), lmforge.load(tmp_path / "crash" / "final")
    torch.testing.assert_close(a.network.state_dict(), b.network.state_dict(), rtol=0, atol=0)


def test_pretrain_clip_from_the_cli_learns_and_final_loads(tmp_path, capsys):
    out = tmp_path / "clip"
    overrides = '{"vision_d_model": 32, "vision_n_layer": 1, "vision_n_head": 2, "text_d_model": 32, ' + (
        '"text_n_layer": 1, "text_n_head": 2, "embed_dim": 32}'
    )
    args = ["pretrain", "easy-vqa", "--objective", "clip", "--out", str(out), "--model-overrides", overrides]
    args += [
        "--steps",
        "60",
        "--batch-size",
        "48",
        "--lr",
        "3e-3",
        "--warmup-steps",
        "5",
        "--eval-every",
        "30",
        "--log-every",
        "15",
    ]
    args += ["--train-images", "300", "--val-images", "60", "--no-progress"]
    args += ["--no-tensorboard", "--precision", "fp32"]
    assert main(args) == 0
    assert f"model: {out / 'final'}" in capsys.readouterr().out
    records = read_log(out / "log.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    val = [r["loss"] for r in records if r["kind"] == "val"]
    assert [r["step"] for r in train] == [15, 30, 45, 60] and train[-1]["images_per_s"] > 0
    assert train[-1]["loss"] < train[0]["loss"] - 0.3 and val[-1] < val[0] - 0.3  # it learns
    clip = CLIP.load(out / "final")
    assert clip.config.vision_d_model == 32 and clip.config.stem == "conv"  # the recipe's, overridden
    assert CLIP.load(out / "best").config == clip.config
    images = load_easy_vqa("test", limit=4).images
    assert clip.encode_images(images).shape == (4, 32)


def test_pretrain_mae_through_the_api(tmp_path):
    result = lmforge.pretrain(
        "easy-vqa",
        objective="mae",
        out=tmp_path / "mae",
        model_overrides={
            "vision_d_model": 32,
            "vision_n_layer": 1,
            "vision_n_head": 2,
            "decoder_d_model": 32,
        },
        steps=6,
        batch_size=16,
        train_images=64,
        val_images=16,
        eval_every=3,
        **QUIET,
    )
    assert result.steps == 6 and result.val["loss"] > 0
    mae = MaskedAutoencoder.load(result.final)
    assert mae.vision.vision_d_model == 32 and mae.vision.stem == "patch"
    assert [s for s, _ in ckpt.step_dirs(tmp_path / "mae")] == [6]


def test_bad_image_pretraining_options_are_one_line_errors(tmp_path):
    with pytest.raises(LMForgeError, match="unknown image dataset 'shapes'"):
        lmforge.pretrain("shapes", objective="clip", out=tmp_path / "a")
    with pytest.raises(LMForgeError, match="use the easy-vqa dataset"):
        lmforge.pretrain("fashion-mnist", objective="vlm", out=tmp_path / "b")
    with pytest.raises(LMForgeError, match="not a field of the clip model"):
        lmforge.pretrain("easy-vqa", objective="clip", out=tmp_path / "c", model_overrides={"n_embd": 3})
    with pytest.raises(LMForgeError, match="--n-layer shapes a text transformer"):
        lmforge.pretrain("easy-vqa", objective="clip", out=tmp_path / "d", n_layer=2)
    with pytest.raises(LMForgeError, match="freeze_vision needs vision_from"):
        lmforge.pretrain("easy-vqa", objective="vlm", out=tmp_path / "e", freeze_vision=True)
    with pytest.raises(LMForgeError, match="nothing to resume"):
        lmforge.pretrain("easy-vqa", objective="clip", out=tmp_path / "f", resume=True)
