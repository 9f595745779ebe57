"""CLIPScore (lmforge.eval.metrics.multimodal) against Hugging Face CLIP's own cosine similarities."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import LMForgeError
from lmforge.eval.metrics.multimodal import clip_score


def test_clip_score_matches_hugging_face_clip_features():
    import transformers

    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4
        ),
        vision_config=dict(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    pixels = torch.randn(6, 3, 32, 32)
    ids = torch.randint(0, 99, (6, 7))
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels)
        image_features = model.get_image_features(pixel_values=pixels)
        text_features = model.get_text_features(input_ids=ids)
    image_features = getattr(image_features, "pooler_output", image_features)
    text_features = getattr(text_features, "pooler_output", text_features)
    # HF's own cosines: its logits are exp(logit_scale) * cos(text, image)
    cos = out.logits_per_image.diagonal() / model.logit_scale.exp()
    expected = 2.5 * cos.clamp(min=0)
    assert (cos < 0).any() and (cos > 0).any()  # both sides of the max(., 0)
    torch.testing.assert_close(clip_score(image_features, text_features), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        clip_score(image_features, text_features, w=1.0), expected / 2.5, atol=1e-5, rtol=1e-5
    )
    with pytest.raises(LMForgeError, match="row by row"):
        clip_score(image_features, text_features[:2])
