"""A CLIP-style image–text model (Radford et al. 2021): two encoders, one shared embedding space.

Design choices:
- image encoder: `lmforge.model.vision.VisionTransformer` (the text model's blocks on image patches);
- text encoder: `lmforge.model.transformer.Transformer` as a bidirectional encoder (learned positions,
  padding masked) over a WordPiece tokenizer trained on the captions with lmforge's own trainer; the
  text embedding is the [CLS] token's final state;
- projection heads: one bias-free linear map per side into `embed_dim`, then L2 normalisation;
- temperature: a learned `logit_scale` (log of 1/τ), initialised to log(1/0.07) and clamped at
  log(100) as in CLIP;
- loss: symmetric InfoNCE, the mean of the image→text and text→image cross-entropies over the batch's
  similarity matrix (`clip_loss`; open_clip's `ClipLoss` is the test oracle).

A checkpoint directory holds config.json (`model_type: lmforge-clip` + the ClipConfig), model.safetensors
and the tokenizer; it is written atomically and read back with `ClipModel.load` (no pickle).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError
from lmforge.model.transformer import Transformer
from lmforge.model.vision import VisionConfig, VisionTransformer
from lmforge.multimodal.checkpoint import config_from, load_weights, read_meta, save_model
from lmforge.options import option
from lmforge.tokenizer import Tokenizer

MODEL_TYPE = "lmforge-clip"


@dataclass
class ClipConfig(VisionConfig):
    """The CLIP model's shape: the ViT's fields (VisionConfig), the text encoder and the projections."""

    text_d_model: int = option(128, "text encoder width")
    text_n_layer: int = option(2, "text encoder blocks")
    text_n_head: int = option(4, "text encoder attention heads")
    text_max_len: int = option(24, "longest caption in tokens ([CLS] and [SEP] included)")
    embed_dim: int = option(64, "width of the shared image–text embedding space")
    init_temperature: float = option(0.07, "initial softmax temperature τ (logit_scale = log 1/τ, learned)")
    vocab_size: int = option(0, "text vocabulary size (0: set from the tokenizer)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.embed_dim, int) or self.embed_dim <= 0:
            raise LMForgeError(f"invalid ClipConfig.embed_dim={self.embed_dim!r}: must be a positive integer")
        if not 0 < self.init_temperature <= 1:
            raise LMForgeError(
                f"invalid ClipConfig.init_temperature={self.init_temperature!r}: must be in (0, 1]"
            )

    def text_config(self) -> ModelConfig:
        return ModelConfig.encoder(
            self.text_n_layer,
            self.text_n_head,
            self.text_d_model,
            max_seq_len=self.text_max_len,
            vocab_size=max(self.vocab_size, 1),
            position="learned",
        )

    def vision_config(self) -> VisionConfig:
        return VisionConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(VisionConfig)})


def clip_logits(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits_per_image (B, B'), logits_per_text (B', B)) from normalised features and scale = 1/τ."""
    logits_per_image = logit_scale * image_features @ text_features.T
    return logits_per_image, logits_per_image.T


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE: row i's positive is column i, in both directions; the mean of the two.

    With `groups` (B,) (e.g. class labels), every pair in the same group is a positive: each row's
    target spreads evenly over its group's columns (UniCL, Yang et al. 2022). A batch of class captions
    holds many images of one class, and plain InfoNCE would push apart captions that say the same thing."""
    logits_per_image, logits_per_text = clip_logits(image_features, text_features, logit_scale)
    return symmetric_infonce(logits_per_image, logits_per_text, groups)


def symmetric_infonce(
    logits_per_image: torch.Tensor, logits_per_text: torch.Tensor, groups: torch.Tensor | None = None
) -> torch.Tensor:
    """The loss of `clip_loss` from its logits (B, B) both ways (computed in float32)."""
    n = logits_per_image.shape[0]
    if groups is None:
        targets = torch.arange(n, device=logits_per_image.device)
    else:
        same = (groups[:, None] == groups[None, :]).float()
        targets = same / same.sum(1, keepdim=True)  # symmetric: the same targets both ways
    return (
        F.cross_entropy(logits_per_image.float(), targets) + F.cross_entropy(logits_per_text.float(), targets)
    ) / 2


class ClipModel(nn.Module):
    """Image encoder + text encoder + projections + learned temperature. Pure: no tokenizer inside;
    `CLIP` pairs it with one."""

    def __init__(self, config: ClipConfig):
        super().__init__()
        if config.vocab_size <= 0:
            raise LMForgeError("ClipConfig.vocab_size is unset: build the model with the tokenizer's size")
        self.config = config
        self.visual = VisionTransformer(config.vision_config())
        self.text = Transformer(config.text_config())
        self.image_proj = nn.Linear(config.vision_d_model, config.embed_dim, bias=False)
        self.text_proj = nn.Linear(config.text_d_model, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, E), unit norm."""
        return F.normalize(self.image_proj(self.visual(images)), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids ([CLS] first) + mask -> (B, E), unit norm."""
        h = self.text.hidden_states(input_ids, attention_mask=attention_mask)  # (B, T, C)
        return F.normalize(self.text_proj(h[:, 0]), dim=-1)

    def scale(self) -> torch.Tensor:
        """1/τ, clamped at 100 as in CLIP."""
        return self.logit_scale.clamp(max=math.log(100)).exp()

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image, logits_per_text)."""
        return clip_logits(
            self.encode_image(images), self.encode_text(input_ids, attention_mask), self.scale()
        )

    def loss(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        image, text = self.encode_image(images), self.encode_text(input_ids, attention_mask)
        return clip_loss(image, text, self.scale(), groups)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def train_caption_tokenizer(captions: Sequence[str], vocab_size: int = 256) -> Tokenizer:
    """A lowercase WordPiece tokenizer ([CLS] ... [SEP], [PAD]) for the captions, the same every time.

    Hugging Face's WordPiece trainer breaks ties between equally frequent merges by hash order, so the
    sub-word pieces it keeps differ from run to run (and so would every token id). The vocabulary kept
    is what the captions alone determine: the special tokens, every single character (word-initial and
    `##` continuation, so any word can still be spelled) and the captions' words, most frequent first,
    up to `vocab_size`, numbered in that fixed order."""
    import json
    from collections import Counter

    from tokenizers import Tokenizer as Backend

    from lmforge.tokenizer.train import train_tokenizer

    trained = train_tokenizer(
        texts=list(captions),
        algorithm="wordpiece",
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
    )
    backend = trained.backend
    data = json.loads(backend.to_str())
    vocab = data["model"]["vocab"]
    specials = sorted((t for t in vocab if t in trained.special_tokens.values()), key=vocab.get)
    chars = sorted(t for t in vocab if len(t.removeprefix("##")) == 1 and t not in specials)
    words: Counter = Counter()
    for text in captions:
        normalized = backend.normalizer.normalize_str(text) if backend.normalizer else text
        words.update(w for w, _ in backend.pre_tokenizer.pre_tokenize_str(normalized))
    ranked = sorted((w for w in words if w not in chars and w not in specials), key=lambda w: (-words[w], w))
    kept = [*specials, *chars, *ranked][: max(vocab_size, len(specials) + len(chars))]
    data["model"]["vocab"] = {token: i for i, token in enumerate(kept)}
    canonical = Backend.from_str(json.dumps(data))
    return Tokenizer._with_config(canonical, trained.config_dict(), None)


class CLIP:
    """A ClipModel with its tokenizer: encode images and texts, save and load a checkpoint directory."""

    def __init__(self, model: ClipModel, tokenizer: Tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.config = model.config

    @classmethod
    def create(cls, config: ClipConfig, tokenizer: Tokenizer, seed: int = 0) -> CLIP:
        config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size)
        torch.manual_seed(seed)
        return cls(ClipModel(config), tokenizer)

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention_mask), (N, T) each; captions longer than text_max_len are cut."""
        if isinstance(texts, str) or not texts:
            raise LMForgeError("give a non-empty list of texts")
        rows = self.tokenizer.encode_batch(
            list(texts), add_special_tokens=True, max_length=self.config.text_max_len
        )
        ids, mask = self.tokenizer.pad(rows)
        return torch.tensor(ids), torch.tensor(mask)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """(N, E) unit-norm text embeddings."""
        self.model.eval()
        out = []
        for i in range(0, len(texts), batch_size):
            ids, mask = self.tokenize(texts[i : i + batch_size])
            out.append(self.model.encode_text(ids, mask))
        return torch.cat(out)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(N, E) unit-norm image embeddings of (N, 3, H, W) images (uint8, or floats in [0, 1])."""
        self.model.eval()
        out = []
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size]
            out.append(self.model.encode_image(x.float() / 255.0 if x.dtype == torch.uint8 else x))
        return torch.cat(out)

    def save(self, path: str | Path) -> Path:
        """Write config.json, model.safetensors and the tokenizer into `path`, atomically."""
        return save_model(path, self.model, MODEL_TYPE, {"clip": self.config}, self.tokenizer.save)

    @classmethod
    def load(cls, path: str | Path) -> CLIP:
        """Read a directory `save` wrote; anything else is a one-line error."""
        written_by = "`lmforge quickstart --recipe clip` or CLIP.save"
        meta = read_meta(path, MODEL_TYPE, "a CLIP", "a CLIP model", written_by)
        model = load_weights(ClipModel(config_from(ClipConfig, meta["clip"])), path)
        return cls(model, Tokenizer.from_dir(path))
