"""A small Vision Transformer (ViT, Dosovitskiy et al. 2020) built from the text model's blocks.

Design choices:
- patch embedding: a stride-`patch_size` convolution, (B, 3, H, W) -> (B, N, C) with N = (H / p)²,
  or (`stem="conv"`) two 3x3 stride-2 convolutions and then a stride-p/4 one, which trains faster on
  small data (Xiao et al. 2021, "Early convolutions help transformers see better");
- a learned [CLS] token in front and learned positions for the N + 1 tokens;
- the blocks are `lmforge.model.transformer.Block`s of a bidirectional `ModelConfig` (no causal mask, no
  RoPE), so attention backends and norms are the text model's own code; pre-norm with a final norm;
- the image embedding is the [CLS] token's final state (`pool="cls"`) or the mean over patches;
- pixels come in as floats in [0, 1] and are normalised inside the model (mean 0.5, std 0.25), so a
  caller never has to know the statistics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError
from lmforge.model.transformer import Block, make_norm

Pool = Literal["cls", "mean"]
Stem = Literal["patch", "conv"]


def option(default, help: str):
    """`lmforge.options.option` (a field with its help text), written out here because `lmforge.model`
    imports nothing above `lmforge.config`; `lmforge.options` reads the same `help` metadata."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass
class VisionConfig:
    """The ViT's shape; every field is an option of the image–text commands."""

    image_size: int = option(64, "input image side in pixels (square images)")
    patch_size: int = option(8, "patch side in pixels; image_size must be a multiple of it")
    channels: int = option(3, "input channels")
    vision_d_model: int = option(128, "ViT width")
    vision_n_layer: int = option(3, "ViT blocks")
    vision_n_head: int = option(4, "ViT attention heads")
    pool: Pool = option("cls", "image embedding: the [CLS] token's state or the mean over patches")
    stem: Stem = option(
        "patch",
        "patch embedding: one strided convolution (patch) or two 3x3 stride-2 convolutions first (conv)",
    )

    def __post_init__(self) -> None:
        for name in (
            "image_size",
            "patch_size",
            "channels",
            "vision_d_model",
            "vision_n_layer",
            "vision_n_head",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise LMForgeError(f"invalid VisionConfig.{name}={value!r}: must be a positive integer")
        if self.image_size % self.patch_size:
            raise LMForgeError(
                f"invalid VisionConfig.patch_size={self.patch_size}: image_size={self.image_size} must be a multiple"
            )
        if self.pool not in ("cls", "mean"):
            raise LMForgeError(f"invalid VisionConfig.pool={self.pool!r}: must be cls or mean")
        if self.stem not in ("patch", "conv"):
            raise LMForgeError(f"invalid VisionConfig.stem={self.stem!r}: must be patch or conv")
        if self.stem == "conv" and self.patch_size % 4:
            raise LMForgeError(
                f"invalid VisionConfig.patch_size={self.patch_size}: the conv stem needs a multiple of 4"
            )
        self.block_config()  # validates the widths and heads

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def block_config(self) -> ModelConfig:
        """The transformer blocks' config: a bidirectional pre-norm encoder, GELU MLP, with biases."""
        return ModelConfig.encoder(
            self.vision_n_layer, self.vision_n_head, self.vision_d_model, max_seq_len=self.n_patches + 1
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class VisionTransformer(nn.Module):
    """Images (B, 3, H, W) in [0, 1] -> embeddings (B, C), or every token's state (B, N + 1, C)."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = config
        block_config = config.block_config()
        C = config.vision_d_model
        p = config.patch_size
        if config.stem == "conv":  # early convolutions (Xiao et al. 2021): /4 by two 3x3 convs, then p/4
            self.stem = nn.Sequential(
                nn.Conv2d(config.channels, C // 4, 3, stride=2, padding=1),
                nn.GELU(),
                nn.Conv2d(C // 4, C // 2, 3, stride=2, padding=1),
                nn.GELU(),
            )
            self.patch_emb = nn.Conv2d(C // 2, C, p // 4, stride=p // 4)
        else:
            self.stem = nn.Identity()
            self.patch_emb = nn.Conv2d(config.channels, C, p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_emb = nn.Parameter(torch.randn(1, config.n_patches + 1, C) * 0.02)
        self.blocks = nn.ModuleList(Block(block_config) for _ in range(config.vision_n_layer))
        self.norm = make_norm(block_config)

    def hidden_states(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N + 1, C): the [CLS] token then the patches, after the final norm."""
        if images.dim() != 4 or images.shape[1:] != (
            self.config.channels,
            self.config.image_size,
            self.config.image_size,
        ):
            size = self.config.image_size
            raise LMForgeError(
                f"images of shape {tuple(images.shape)} given; this vision encoder takes "
                f"(batch, {self.config.channels}, {size}, {size})"
            )
        x = (images - 0.5) / 0.25
        x = self.patch_emb(self.stem(x)).flatten(2).transpose(1, 2)  # (B, N, C)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_emb  # (B, N+1, C)
        for block in self.blocks:
            x = block(x, None, None)
        return self.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.hidden_states(images)
        return h[:, 0] if self.config.pool == "cls" else h[:, 1:].mean(1)  # (B, C)
