"""Image–text metrics: CLIPScore (Hessel et al., 2021).

CLIPScore(image, text) = w · max(cos(E_image, E_text), 0) with w = 2.5, on the features of a CLIP model
(`lmforge.multimodal.evaluate.clip_score_model` computes them with one of our CLIP checkpoints).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmforge.errors import LMForgeError

CLIPSCORE_WEIGHT = 2.5


def clip_score(
    image_features: torch.Tensor, text_features: torch.Tensor, w: float = CLIPSCORE_WEIGHT
) -> torch.Tensor:
    """CLIPScore of each (image, text) pair, row by row: w · max(cos, 0). Features need not be normalised."""
    if image_features.shape != text_features.shape:
        raise LMForgeError(
            f"CLIPScore pairs images with texts row by row; got {tuple(image_features.shape)} image and "
            f"{tuple(text_features.shape)} text features"
        )
    cos = F.cosine_similarity(image_features.float(), text_features.float(), dim=-1)
    return w * cos.clamp(min=0)
