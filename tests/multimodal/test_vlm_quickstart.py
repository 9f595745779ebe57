"""`quickstart --recipe vlm` in two stages: the CLIP stage's image tower is the VLM's starting ViT."""

import json

import pytest
import torch

import lmforge
from lmforge import LMForgeError
from lmforge.multimodal.clip import CLIP
from lmforge.multimodal.train import ClipTrainConfig
from lmforge.multimodal.vlm import VLM, VLMConfig
from lmforge.multimodal.vlm_quickstart import tower_config, vlm_quickstart
from lmforge.multimodal.vlm_train import VLMTrainConfig

TINY = dict(
    patch_size=16, vision_d_model=32, vision_n_layer=1, vision_n_head=2, text_d_model=32, text_n_head=2
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_clip_stage_tower_starts_the_vlm(tmp_path, capsys):
    """The VLM trains at a negligible lr, so its ViT must still be the CLIP stage's trained tower (which
    a few CLIP steps at lr 1e-2 moved far from any fresh initialisation)."""
    clip_train = ClipTrainConfig(
        steps=4, batch_size=16, lr=1e-2, warmup_steps=1, train_images=64, val_images=16
    )
    train = VLMTrainConfig(steps=1, batch_size=8, lr=1e-12, weight_decay=0.0, train_images=32)
    result = vlm_quickstart(
        tmp_path, model=VLMConfig(**TINY), train=train, clip_train=clip_train, clip_fraction=0.5
    )
    out = capsys.readouterr().out
    assert "[1/3] training the image tower contrastively (CLIP)" in out
    assert "[2/3] training the VLM (ViT from the CLIP tower)" in out
    assert result.clip_final == result.run_dir / "clip" / "final"
    tower = CLIP.load(result.clip_final).model.visual.state_dict()
    fresh = VLM.create(VLMConfig(**TINY), result.vlm.tokenizer).network.visual.state_dict()
    assert any((fresh[k] - v).abs().max() > 1e-3 for k, v in tower.items())  # the CLIP stage trained it
    for name, value in tower.items():
        torch.testing.assert_close(result.vlm.network.visual.state_dict()[name], value, rtol=0, atol=1e-6)
    figures = json.loads(result.results.read_text())
    assert set(figures["stage_seconds"]) == {"clip", "vlm", "evaluate"}
    assert figures["clip_final"] == str(result.clip_final)
    assert result.samples[0].startswith("stages: clip ")


def test_tower_config_matches_the_vlm_and_bad_fraction_is_refused(tmp_path):
    assert tower_config(VLMConfig(**TINY)).vision_config() == VLMConfig(**TINY).vision_config()
    with pytest.raises(LMForgeError, match="clip_fraction"):
        vlm_quickstart(tmp_path, clip_fraction=1.0)
    with pytest.raises(LMForgeError, match="clip_fraction"):
        lmforge.QuickstartConfig(recipe="vlm", clip_fraction=-0.1)
