"""The CLIP model: loss and logits against open_clip's ClipLoss, shapes, save/load, bad checkpoints."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmforge.errors import LMForgeError
from lmforge.multimodal.clip import CLIP, ClipConfig, clip_logits, clip_loss, train_caption_tokenizer


def open_clip_loss_module():
    """open_clip/loss.py on its own: `import open_clip` needs torchvision and timm, which the loss does
    not (open_clip_torch is installed with --no-deps so that torch stays at the tested version)."""
    spec = importlib.util.find_spec("open_clip")
    assert spec is not None, "open_clip_torch is not installed: `make setup` installs it (--no-deps)"
    path = Path(next(iter(spec.submodule_search_locations))) / "loss.py"
    module_spec = importlib.util.spec_from_file_location("open_clip_loss", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


TINY = dict(
    image_size=16,
    patch_size=4,
    vision_d_model=32,
    vision_n_layer=1,
    vision_n_head=2,
    text_d_model=32,
    text_n_layer=1,
    text_n_head=2,
    text_max_len=8,
    embed_dim=16,
)
CAPTIONS = ["a red circle", "a blue triangle", "a green rectangle", "a photo of a teal shape"]


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_loss_and_logits_match_open_clip(batch):
    loss_module = open_clip_loss_module()
    reference = loss_module.ClipLoss()
    g = torch.Generator().manual_seed(batch)
    image = F.normalize(torch.randn(batch, 32, generator=g), dim=-1)
    text = F.normalize(torch.randn(batch, 32, generator=g), dim=-1)
    for scale in (1.0, 14.3, 100.0):
        logit_scale = torch.tensor(scale)
        ref_image, ref_text = reference.get_logits(image, text, logit_scale)
        ours_image, ours_text = clip_logits(image, text, logit_scale)
        torch.testing.assert_close(ours_image, ref_image)
        torch.testing.assert_close(ours_text, ref_text)
        torch.testing.assert_close(clip_loss(image, text, logit_scale), reference(image, text, logit_scale))
    # gradients agree too (the loss is what trains the model)
    a = image.clone().requires_grad_()
    b = image.clone().requires_grad_()
    clip_loss(a, text, 10.0).backward()
    reference(b, text, torch.tensor(10.0)).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_grouped_loss_spreads_each_rows_target_over_its_group():
    """With groups, a row's positives are every column of its group (UniCL): against a loop over the
    definition, -1/|P| * sum of log-softmax over the positives, both ways; distinct groups give open_clip's
    plain InfoNCE."""
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(9, 16, generator=g), dim=-1)
    text = F.normalize(torch.randn(9, 16, generator=g), dim=-1)
    groups = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2, 0])
    got = clip_loss(image, text, 7.0, groups)
    logits = 7.0 * image @ text.T
    total = 0.0
    for matrix in (logits, logits.T):
        logp = matrix.log_softmax(-1)
        for i in range(9):
            positives = [j for j in range(9) if groups[j] == groups[i]]
            total += -sum(float(logp[i, j]) for j in positives) / len(positives)
    assert float(got) == pytest.approx(total / 18, rel=1e-5)
    reference = open_clip_loss_module().ClipLoss()
    torch.testing.assert_close(
        clip_loss(image, text, 7.0, torch.arange(9)), reference(image, text, torch.tensor(7.0))
    )
    assert not torch.allclose(got, clip_loss(image, text, 7.0))


def test_perfectly_aligned_features_give_low_loss():
    eye = torch.eye(8)
    assert clip_loss(eye, eye, 100.0) < 1e-3
    assert clip_loss(eye, eye.roll(1, 0), 100.0) > 10


def test_shapes_temperature_and_save_load(tmp_path):
    tokenizer = train_caption_tokenizer(CAPTIONS)
    clip = CLIP.create(ClipConfig(**TINY), tokenizer, seed=0)
    model = clip.model
    assert clip.config.vocab_size == tokenizer.vocab_size
    torch.testing.assert_close(model.scale(), torch.tensor(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert float(model.scale().detach()) == pytest.approx(100.0)  # clamped as in CLIP
    images = torch.rand(4, 3, 16, 16)
    ids, mask = clip.tokenize(CAPTIONS)
    assert ids.shape == mask.shape and ids.shape[0] == 4 and int(ids[:, 0].unique()) == tokenizer.cls_token_id
    per_image, per_text = model(images, ids, mask)
    assert per_image.shape == (4, 4) and torch.equal(per_image.T, per_text)
    image_emb, text_emb = clip.encode_images(images), clip.encode_texts(CAPTIONS)
    assert image_emb.shape == text_emb.shape == (4, 16)
    torch.testing.assert_close(image_emb.norm(dim=-1), torch.ones(4))
    # padding does not change a caption's embedding
    torch.testing.assert_close(clip.encode_texts(CAPTIONS[:1]), text_emb[:1], atol=1e-5, rtol=1e-5)
    clip.save(tmp_path / "clip")
    assert sorted(p.name for p in (tmp_path / "clip").iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    again = CLIP.load(tmp_path / "clip")
    torch.testing.assert_close(again.encode_images(images), image_emb)
    torch.testing.assert_close(again.encode_texts(CAPTIONS), text_emb)
    assert again.config == clip.config
    assert float(again.model.logit_scale.detach()) == pytest.approx(10.0)


def test_gradients_reach_both_towers_and_the_temperature():
    clip = CLIP.create(ClipConfig(**TINY), train_caption_tokenizer(CAPTIONS))
    ids, mask = clip.tokenize(CAPTIONS)
    clip.model.train()
    clip.model.loss(torch.rand(4, 3, 16, 16), ids, mask).backward()
    grads = {n: p.grad for n, p in clip.model.named_parameters()}
    assert grads["logit_scale"] is not None and grads["logit_scale"].abs() > 0
    assert grads["visual.patch_emb.weight"].abs().sum() > 0
    assert grads["text.tok_emb.weight"].abs().sum() > 0
    assert not math.isnan(float(grads["image_proj.weight"].sum()))


def test_bad_checkpoints_and_configs(tmp_path):
    with pytest.raises(LMForgeError, match="not a CLIP checkpoint"):
        CLIP.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(LMForgeError, match="'llama' model, not a CLIP model"):
        CLIP.load(tmp_path)
    with pytest.raises(LMForgeError, match="embed_dim"):
        ClipConfig(embed_dim=0)
    with pytest.raises(LMForgeError, match="non-empty list"):
        CLIP.create(ClipConfig(**TINY), train_caption_tokenizer(CAPTIONS)).tokenize("a red circle")
