"""Image–text models: data (easy-VQA, Fashion-MNIST), a CLIP-style contrastive model, its training and
evaluation, masked image modeling and linear probes.

- data.py: easy-VQA images with shape/colour attributes, captions and questions (train/test as shipped);
  Fashion-MNIST (`load_fashion_mnist`: 10 classes, class-name captions)
- clip.py: `ClipConfig`, `ClipModel` (ViT + text Transformer + projections + temperature), `clip_loss`,
  `CLIP` (model + tokenizer, save/load)
- train.py: `train_clip` (AdamW + schedule from train/optim.py, the run log, atomic checkpoints)
- evaluate.py: zero-shot classification, Recall@K, CLIPScore, compositional probe, prediction grid;
  `evaluate_classes` (zero-shot + linear probes on a labelled set)
- probe.py: `linear_probe` (logistic regression on frozen features, C chosen on a validation slice),
  `image_features`, `pixel_features`
- quickstart.py: `lmforge quickstart --recipe clip`
- mae.py: `MaskedAutoencoder` (MAE pretraining of the ViT: `loss(images)`, `transfer_to(vit)`, save/load)
- vlm.py: `VLMConfig`, `VisionLanguageModel` (ViT → projector → decoder prefix), `VLM` (generates like an
  LM, with `image=`; save/load); vlm_train.py: `train_vlm`, `evaluate_vlm`; vlm_quickstart.py:
  `lmforge quickstart --recipe vlm`
"""

from lmforge.multimodal.clip import CLIP, ClipConfig, ClipModel, clip_loss
from lmforge.multimodal.data import ImageSet, load_easy_vqa, load_fashion_mnist, read_image
from lmforge.multimodal.evaluate import (
    clip_score,
    clip_score_pairs,
    evaluate_classes,
    evaluate_clip,
    zero_shot_accuracy,
)
from lmforge.multimodal.mae import MAEConfig, MaskedAutoencoder, load_vision_encoder
from lmforge.multimodal.probe import ProbeResult, image_features, linear_probe, pixel_features
from lmforge.multimodal.quickstart import ClipQuickstartResult, clip_quickstart
from lmforge.multimodal.train import ClipTrainConfig, train_clip
from lmforge.multimodal.vlm import VLM, VisionLanguageModel, VLMConfig
from lmforge.multimodal.vlm_quickstart import VLMQuickstartResult, vlm_quickstart
from lmforge.multimodal.vlm_train import VLMTrainConfig, evaluate_vlm, train_vlm

__all__ = [
    "CLIP",
    "ClipConfig",
    "ClipModel",
    "ClipQuickstartResult",
    "ClipTrainConfig",
    "ImageSet",
    "MAEConfig",
    "MaskedAutoencoder",
    "ProbeResult",
    "VLM",
    "VLMConfig",
    "VLMQuickstartResult",
    "VLMTrainConfig",
    "VisionLanguageModel",
    "clip_loss",
    "clip_quickstart",
    "clip_score",
    "clip_score_pairs",
    "evaluate_classes",
    "evaluate_clip",
    "evaluate_vlm",
    "image_features",
    "linear_probe",
    "load_easy_vqa",
    "load_fashion_mnist",
    "load_vision_encoder",
    "pixel_features",
    "read_image",
    "train_clip",
    "train_vlm",
    "vlm_quickstart",
    "zero_shot_accuracy",
]
