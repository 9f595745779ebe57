"""The ViT: shapes, the text model's blocks reused, pooling, options, and errors for wrong inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmforge.errors import LMForgeError
from lmforge.model.transformer import Block
from lmforge.model.vision import VisionConfig, VisionTransformer
from lmforge.options import specs


def test_shapes_blocks_and_pooling():
    torch.manual_seed(0)
    config = VisionConfig(image_size=32, patch_size=8, vision_d_model=32, vision_n_layer=2, vision_n_head=4)
    vit = VisionTransformer(config).eval()
    images = torch.rand(3, 3, 32, 32)
    h = vit.hidden_states(images)
    assert h.shape == (3, 1 + 16, 32)
    assert vit(images).shape == (3, 32)
    torch.testing.assert_close(vit(images), h[:, 0])
    assert sum(isinstance(m, Block) for m in vit.modules()) == 2  # the text model's blocks, not copies
    # bidirectional: the [CLS] state depends on the last patch (a causal mask would hide it)
    changed = images.clone()
    changed[:, :, 24:, 24:] = 1 - changed[:, :, 24:, 24:]
    assert not torch.allclose(vit(changed), vit(images))
    # each image is encoded on its own: batch composition does not change a row
    torch.testing.assert_close(vit(images[:1]), vit(images)[:1], atol=1e-5, rtol=1e-5)
    mean_vit = VisionTransformer(dataclasses.replace(config, pool="mean")).eval()
    mean_vit.load_state_dict(vit.state_dict())
    torch.testing.assert_close(mean_vit(images), h[:, 1:].mean(1))


def test_gradients_reach_every_parameter():
    vit = VisionTransformer(VisionConfig(image_size=16, patch_size=4, vision_d_model=16, vision_n_layer=1))
    vit(torch.rand(2, 3, 16, 16)).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vit.parameters())


def test_options_and_errors():
    names = [s.name for s in specs(VisionConfig)]
    assert names[:3] == ["image_size", "patch_size", "channels"]
    assert all(s.help for s in specs(VisionConfig))
    with pytest.raises(LMForgeError, match="patch_size"):
        VisionConfig(image_size=30, patch_size=8)
    with pytest.raises(LMForgeError, match="head"):
        VisionConfig(vision_d_model=30, vision_n_head=4)
    vit = VisionTransformer(VisionConfig(image_size=16, patch_size=4, vision_d_model=16, vision_n_layer=1))
    with pytest.raises(LMForgeError, match=r"takes \(batch, 3, 16, 16\)"):
        vit(torch.rand(2, 3, 20, 20))


def test_conv_stem():
    config = VisionConfig(image_size=32, patch_size=8, vision_d_model=32, vision_n_layer=1, stem="conv")
    vit = VisionTransformer(config)
    assert vit.hidden_states(torch.rand(2, 3, 32, 32)).shape == (2, 1 + 16, 32)
    convs = [m for m in vit.stem.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2), (2, 2)] and vit.patch_emb.stride == (2, 2)
    # the plain patch stem has no stem parameters: its state dict is the same as before the option
    assert not any(k.startswith("stem.") for k in VisionTransformer(VisionConfig()).state_dict())
    with pytest.raises(LMForgeError, match="multiple of 4"):
        VisionConfig(image_size=36, patch_size=6, stem="conv")
