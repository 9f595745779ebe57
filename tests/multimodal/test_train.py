"""A tiny CLIP trained on a few hundred easy-VQA images learns: the loss falls and zero-shot colour
accuracy on held-out test images is far above chance; the run directory holds a loadable model."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.errors import LMForgeError
from lmforge.multimodal.clip import CLIP, ClipConfig
from lmforge.multimodal.data import COLOURS, load_easy_vqa
from lmforge.multimodal.evaluate import zero_shot_accuracy
from lmforge.multimodal.train import ClipTrainConfig, train_clip
from lmforge.train.logging import read_log

TINY = dict(
    patch_size=16,
    vision_d_model=32,
    vision_n_layer=1,
    vision_n_head=2,
    text_d_model=32,
    text_n_layer=1,
    text_n_head=2,
    embed_dim=32,
)


def test_tiny_training_learns(tmp_path):
    torch.manual_seed(0)
    data = load_easy_vqa("train", limit=300)
    test = load_easy_vqa("test", limit=300)
    train = ClipTrainConfig(steps=100, batch_size=48, lr=3e-3, warmup_steps=5, val_images=60, log_every=25)
    untrained = CLIP.create(ClipConfig(**TINY), train_tokenizer_for_test())
    before = zero_shot_accuracy(untrained, test, "colour")
    result = train_clip(ClipConfig(**TINY), train, out=tmp_path / "run", data=data, progress=False)
    records = read_log(tmp_path / "run" / "log.jsonl")
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    val = [r["loss"] for r in records if r["kind"] == "val"]
    assert result.steps == 100 and len(losses) == 4
    assert losses[-1] < losses[0] - 0.5  # the contrastive loss falls
    assert val[-1] < val[0]
    after = zero_shot_accuracy(result.clip, test, "colour")
    assert after > 0.4 > before + 0.2  # chance is 1/8 over the 8 colours (measured: 0.51 after, 0.14 before)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["train_images"] == 240 and run["val_images"] == 60 and "hardware" in run
    assert (tmp_path / "run" / "plot.png").stat().st_size > 0
    again = CLIP.load(tmp_path / "run" / "final")
    torch.testing.assert_close(
        again.encode_images(test.images[:8]), result.clip.encode_images(test.images[:8])
    )
    assert len(COLOURS) == 8


def train_tokenizer_for_test():
    from lmforge.multimodal.clip import train_caption_tokenizer
    from lmforge.multimodal.train import all_template_texts

    return train_caption_tokenizer(all_template_texts())


def test_bad_training_inputs():
    with pytest.raises(LMForgeError, match="batch_size must be a positive"):
        ClipTrainConfig(batch_size=0)
    with pytest.raises(LMForgeError, match="minutes must be positive"):
        ClipTrainConfig(minutes=0)
    data = load_easy_vqa("train", limit=20)
    with pytest.raises(LMForgeError, match="the model takes 32x32"):
        train_clip(
            ClipConfig(image_size=32, patch_size=8), ClipTrainConfig(steps=1), data=data, progress=False
        )


def test_class_positives_carry_the_labels_into_the_loss():
    """positives="class": batches carry the rows' labels and the objective's loss is clip_loss with
    them as groups (UniCL) — not the pair loss; unlabelled data refuses it in one line."""
    from lmforge.multimodal.clip import clip_loss, train_caption_tokenizer
    from lmforge.multimodal.data import load_fashion_mnist
    from lmforge.multimodal.train import ClipBatches, contrastive_loss

    data = load_fashion_mnist("train", limit=64)
    config = ClipConfig(**{**TINY, "image_size": 28, "patch_size": 7, "channels": 1})
    clip = CLIP.create(config, train_caption_tokenizer(data.caption_texts()), seed=0)
    batch = ClipBatches(data, clip.tokenize, 32, flips=False, seed=3, groups=True).batch(5)
    again = ClipBatches(data, clip.tokenize, 32, flips=False, seed=3, groups=False).batch(5)
    assert torch.equal(batch["images"], again["images"]) and "groups" not in again
    rows = [next(i for i in range(64) if torch.equal(data.float_images([i])[0], x)) for x in batch["images"]]
    assert batch["groups"].tolist() == [data.labels[r] for r in rows]
    assert len(set(batch["groups"].tolist())) < 32  # several images of a class: positives beyond the diagonal
    model = clip.model.eval()
    with torch.no_grad():
        image = model.encode_image(batch["images"])
        text = model.encode_text(batch["input_ids"], batch["attention_mask"])
        got = contrastive_loss(model, batch)
        torch.testing.assert_close(got, clip_loss(image, text, model.scale(), batch["groups"]))
        assert not torch.allclose(got, contrastive_loss(model, again))
    with pytest.raises(LMForgeError, match="positives=class needs class labels"):
        train_clip(
            ClipConfig(**TINY),
            ClipTrainConfig(steps=1, positives="class"),
            data=load_easy_vqa("train", limit=20),
            progress=False,
        )
