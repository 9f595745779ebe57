"""Image–text models: data (easy-VQA), a CLIP-style contrastive model, its training and evaluation.

- data.py: easy-VQA images with shape/colour attributes, captions and questions (train/test as shipped)
- clip.py: `ClipConfig`, `ClipModel` (ViT + text Transformer + projections + temperature), `clip_loss`,
  `CLIP` (model + tokenizer, save/load)
- train.py: `train_clip` (AdamW + schedule from train/optim.py, the run log, atomic checkpoints)
- evaluate.py: zero-shot classification, Recall@K, CLIPScore, compositional probe, prediction grid
- quickstart.py: `lmforge quickstart --recipe clip`
"""

from lmforge.multimodal.clip import CLIP, ClipConfig, ClipModel, clip_loss
from lmforge.multimodal.data import ImageSet, load_easy_vqa, read_image
from lmforge.multimodal.evaluate import clip_score, evaluate_clip, zero_shot_accuracy
from lmforge.multimodal.quickstart import ClipQuickstartResult, clip_quickstart
from lmforge.multimodal.train import ClipTrainConfig, train_clip

__all__ = [
    "CLIP",
    "ClipConfig",
    "ClipModel",
    "ClipQuickstartResult",
    "ClipTrainConfig",
    "ImageSet",
    "clip_loss",
    "clip_quickstart",
    "clip_score",
    "evaluate_clip",
    "load_easy_vqa",
    "read_image",
    "train_clip",
    "zero_shot_accuracy",
]
