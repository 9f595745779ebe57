"""The masked autoencoder: masking counts, patch order against F.unfold, the visible-only encoder against
the ViT's own forward, the loss on masked patches only (a direct computation), learning, save/load."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lmforge.errors import LMForgeError
from lmforge.model.vision import VisionConfig, VisionTransformer
from lmforge.multimodal.clip import CLIP, ClipConfig, train_caption_tokenizer
from lmforge.multimodal.mae import (
    MAEConfig,
    MaskedAutoencoder,
    load_vision_encoder,
    patchify,
    random_masking,
    unpatchify,
)

TINY = VisionConfig(
    image_size=16, patch_size=4, channels=1, vision_d_model=32, vision_n_layer=2, vision_n_head=2
)
TINY_MAE = MAEConfig(decoder_d_model=16, decoder_n_layer=1, decoder_n_head=2)


def images(n: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("n_patches", "ratio", "kept"), [(49, 0.75, 12), (16, 0.75, 4), (16, 0.5, 8), (4, 0.99, 1)]
)
def test_masking_keeps_exactly_the_right_patches(n_patches, ratio, kept):
    keep, mask, restore = random_masking(5, n_patches, ratio, torch.Generator().manual_seed(1))
    assert keep.shape == (5, kept)
    assert (mask.sum(1) == n_patches - kept).all()
    for row in range(5):
        visible = set(torch.nonzero(mask[row] == 0).flatten().tolist())
        assert set(keep[row].tolist()) == visible  # the kept indices are exactly the unmasked places
        # restore puts patch i at position restore[i] of [kept..., masked...]
        order = keep[row].tolist() + torch.nonzero(mask[row] == 1).flatten().tolist()
        assert sorted(order) == list(range(n_patches))
    # the masks differ between images (drawn per image)
    assert not all(torch.equal(mask[0], mask[r]) for r in range(1, 5))


def test_restore_places_the_kept_patches():
    """decode lays tokens out as [kept..., mask tokens...] and gathers by restore: kept patch j must land
    at its own place in the image, every masked place must take a mask token."""
    keep, mask, restore = random_masking(3, 16, 0.75, torch.Generator().manual_seed(2))
    for row in range(3):
        for j, patch in enumerate(keep[row].tolist()):
            assert restore[row, patch] == j
        assert (restore[row][mask[row] == 1] >= keep.shape[1]).all()
    assert (restore.sort(dim=1).values == torch.arange(16)).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_patchify_matches_unfold_and_inverts(channels):
    x = images(2, channels)
    patches = patchify(x, 4)  # (B, N, p*p*c), pixels (row, col, channel)
    ref = F.unfold(x, kernel_size=4, stride=4).transpose(1, 2)  # (B, N, c*p*p), channel first
    ref = ref.reshape(2, 16, channels, 16).transpose(2, 3).reshape(2, 16, -1)
    assert torch.equal(patches, ref)
    assert torch.equal(unpatchify(patches, 4, channels), x)


def test_encoder_on_all_patches_is_the_vit():
    torch.manual_seed(0)
    mae = MaskedAutoencoder(TINY, TINY_MAE).eval()
    x = images(3)
    everything = torch.arange(TINY.n_patches).expand(3, -1)
    torch.testing.assert_close(mae.encode(x, everything), mae.encoder.hidden_states(x))
    # a subset of patches: [CLS] + K states
    keep, _, _ = random_masking(3, TINY.n_patches, 0.75)
    assert mae.encode(x, keep).shape == (3, 1 + 4, 32)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_counts_only_masked_patches(norm_pix):
    torch.manual_seed(0)
    mae = MaskedAutoencoder(TINY, MAEConfig(**{**TINY_MAE.__dict__, "norm_pix_loss": norm_pix}))
    x = images(4)
    with torch.no_grad():
        loss, pred, mask = mae(x, torch.Generator().manual_seed(3))
    assert pred.shape == (4, 16, 16) and mask.shape == (4, 16)
    # direct computation: a loop over the masked patches, targets cut out of the image by hand
    total, count = 0.0, 0
    for b in range(4):
        for i in range(16):
            if mask[b, i] == 0:
                continue
            r, c = divmod(i, 4)
            target = x[b, 0, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].reshape(-1)
            if norm_pix:
                target = (target - target.mean()) / (target.var() + 1e-6) ** 0.5
            total += float(((pred[b, i].detach() - target) ** 2).mean())
            count += 1
    assert count == 4 * 12
    assert float(loss) == pytest.approx(total / count, rel=1e-5)
    # the same generator draws the same mask, so the loss is reproducible
    with torch.no_grad():
        again = mae.loss(x, torch.Generator().manual_seed(3))
    assert float(again) == pytest.approx(float(loss), rel=1e-6)


def test_gradients_reach_only_the_visible_patches_of_the_encoder():
    """The encoder never sees a masked patch: its pixels do not affect the encoding."""
    torch.manual_seed(0)
    mae = MaskedAutoencoder(TINY, TINY_MAE)
    x = images(2).requires_grad_()
    keep, mask, _ = random_masking(2, 16, 0.75, torch.Generator().manual_seed(4))
    mae.encode(x, keep).sum().backward()
    pixel_grad = patchify(x.grad.abs(), 4).sum(-1)  # (B, N)
    assert (pixel_grad[mask == 1] == 0).all()
    assert (pixel_grad[mask == 0] > 0).all()


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    mae = MaskedAutoencoder(TINY, TINY_MAE)
    # images with structure to learn: a bright square at a random place on a dark background
    g = torch.Generator().manual_seed(5)
    x = torch.zeros(32, 1, 16, 16)
    for i, (r, c) in enumerate(torch.randint(0, 10, (32, 2), generator=g).tolist()):
        x[i, 0, r : r + 6, c : c + 6] = 1.0
    optimizer = torch.optim.AdamW(mae.parameters(), lr=1e-2)
    fixed = torch.Generator().manual_seed(6)
    with torch.no_grad():
        before = float(mae.loss(x, torch.Generator().manual_seed(7)))
    for _ in range(25):
        loss = mae.loss(x, fixed)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = float(mae.loss(x, torch.Generator().manual_seed(7)))  # masks it never trained on
    assert after < 0.7 * before


def test_save_load_and_transfer_to_a_vit_and_a_clip_tower(tmp_path):
    torch.manual_seed(0)
    mae = MaskedAutoencoder(TINY, TINY_MAE)
    path = mae.save(tmp_path / "mae")
    assert json.loads((path / "config.json").read_text())["model_type"] == "lmforge-mae"
    loaded = MaskedAutoencoder.load(path)
    for k, v in mae.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = images(2)
    encoder = load_vision_encoder(path)
    torch.testing.assert_close(encoder(x), mae.encoder(x))
    # into a fresh ViT of the same shape (mean pooling is a reading of the states, not a weight)
    vit = mae.transfer_to(VisionTransformer(VisionConfig(**{**TINY.__dict__, "pool": "mean"})))
    torch.testing.assert_close(vit.hidden_states(x), mae.encoder.hidden_states(x))
    # into a CLIP image tower
    tok = train_caption_tokenizer(["a red circle", "a blue square"], vocab_size=64)
    clip_config = ClipConfig(
        **TINY.__dict__, text_d_model=16, text_n_layer=1, text_n_head=2, text_max_len=8, embed_dim=8
    )
    clip = CLIP.create(clip_config, tok)
    mae.transfer_to(clip.model.visual)
    torch.testing.assert_close(clip.model.visual.hidden_states(x), mae.encoder.hidden_states(x))


def test_bad_configs_and_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(LMForgeError, match="stem='patch'"):
        MaskedAutoencoder(VisionConfig(image_size=16, patch_size=4, stem="conv"))
    with pytest.raises(LMForgeError, match="mask_ratio"):
        MAEConfig(mask_ratio=1.0)
    mae = MaskedAutoencoder(TINY, TINY_MAE)
    with pytest.raises(LMForgeError, match="patch_size"):
        mae.transfer_to(VisionTransformer(VisionConfig(**{**TINY.__dict__, "patch_size": 8})))
    with pytest.raises(LMForgeError, match="takes"):
        mae.loss(torch.rand(2, 3, 16, 16))
    with pytest.raises(LMForgeError, match="not an MAE checkpoint"):
        MaskedAutoencoder.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "lmforge-clip"}))
    with pytest.raises(LMForgeError, match="not a masked autoencoder"):
        MaskedAutoencoder.load(tmp_path)
