"""Masked image modeling: a masked autoencoder (MAE, He et al. 2021) over our ViT.

Design choices (as in the paper, at nano scale):
- the encoder is a `lmforge.model.vision.VisionTransformer` (patch stem only: a convolutional stem
  would let masked pixels leak into visible patches); it sees only the visible patches (their
  embeddings + positions) and the [CLS] token, so a 75% mask makes it about 4x cheaper per image;
- masking: per image, patches are ranked by uniform noise and the first `int(N * (1 - mask_ratio))`
  are kept (the same count in every image, so the batch stays one tensor);
- the decoder is narrower, built from the same transformer blocks (`VisionConfig.block_config`): the
  encoded tokens are projected to its width, mask tokens fill the masked places, its own learned
  positions are added, and a linear head predicts each patch's pixels;
- loss: mean squared error over the masked patches only; with `norm_pix_loss` the target is each
  patch's pixels normalised by their own mean and variance (the paper's better-representation variant).

`MaskedAutoencoder.encoder` is a plain ViT: `transfer_to(vit)` copies it into a `VisionTransformer`
or a CLIP image tower of the same shape; `save`/`load` write and read a checkpoint directory
(config.json with `model_type: lmforge-mae`, model.safetensors; atomic, no pickle) and
`load_vision_encoder(path)` returns the encoder alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lmforge.errors import LMForgeError
from lmforge.model.transformer import Block, make_norm
from lmforge.model.vision import VisionConfig, VisionTransformer
from lmforge.multimodal.checkpoint import config_from, load_weights, read_meta, save_model
from lmforge.options import check_types, option

MODEL_TYPE = "lmforge-mae"


@dataclass
class MAEConfig:
    """The masked autoencoder's own fields (the encoder's shape is a `VisionConfig`)."""

    mask_ratio: float = option(0.75, "share of each image's patches hidden from the encoder")
    decoder_d_model: int = option(64, "MAE decoder width")
    decoder_n_layer: int = option(2, "MAE decoder blocks")
    decoder_n_head: int = option(4, "MAE decoder attention heads")
    norm_pix_loss: bool = option(True, "regress each patch's pixels normalised by their own mean and std")

    def __post_init__(self) -> None:
        check_types(self)
        if not 0.0 < self.mask_ratio < 1.0:
            raise LMForgeError(f"invalid MAEConfig.mask_ratio={self.mask_ratio!r}: must be in (0, 1)")
        for name in ("decoder_d_model", "decoder_n_layer", "decoder_n_head"):
            if getattr(self, name) <= 0:
                raise LMForgeError(f"invalid MAEConfig.{name}={getattr(self, name)!r}: must be positive")

    def decoder_vision_config(self, encoder: VisionConfig) -> VisionConfig:
        """The decoder's blocks as a VisionConfig (same image and patch grid, the decoder's width)."""
        return dataclasses.replace(
            encoder,
            vision_d_model=self.decoder_d_model,
            vision_n_layer=self.decoder_n_layer,
            vision_n_head=self.decoder_n_head,
            stem="patch",
        )


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, c, H, W) -> (B, N, p*p*c), patches in row-major order (the ViT's token order), each patch's
    pixels ordered (row, column, channel)."""
    B, c, H, W = images.shape
    p = patch_size
    x = images.reshape(B, c, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    """The inverse of `patchify`: (B, N, p*p*c) -> (B, c, H, W) for square images."""
    B, N, _ = patches.shape
    p, side = patch_size, round(N**0.5)
    x = patches.reshape(B, side, side, p, p, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(B, channels, side * p, side * p)


def random_masking(
    batch: int, n_patches: int, mask_ratio: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(keep (B, K) patch indices in the encoder's order, mask (B, N) with 1 = masked, restore (B, N):
    the position of each patch in [kept..., masked...]); K = int(N * (1 - mask_ratio)), at least 1."""
    keep_count = max(1, int(n_patches * (1 - mask_ratio)))
    noise = torch.rand(batch, n_patches, generator=generator)
    shuffle = noise.argsort(dim=1)  # ascending: the first K are kept
    restore = shuffle.argsort(dim=1)
    keep = shuffle[:, :keep_count]
    mask = torch.ones(batch, n_patches)
    mask[:, :keep_count] = 0
    mask = mask.gather(1, restore)
    return keep, mask, restore


class MaskedAutoencoder(nn.Module):
    """ViT encoder over the visible patches + a small decoder that reconstructs the masked ones."""

    def __init__(self, vision: VisionConfig, config: MAEConfig | None = None):
        super().__init__()
        config = config or MAEConfig()
        if vision.stem != "patch":
            raise LMForgeError(
                f"the masked autoencoder needs VisionConfig.stem='patch', got {vision.stem!r}: a "
                "convolutional stem mixes masked pixels into visible patches"
            )
        self.vision = vision
        self.config = config
        self.encoder = VisionTransformer(vision)
        decoder = config.decoder_vision_config(vision).block_config()
        D = config.decoder_d_model
        self.decoder_embed = nn.Linear(vision.vision_d_model, D)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, D))
        self.decoder_pos = nn.Parameter(torch.randn(1, vision.n_patches + 1, D) * 0.02)
        self.decoder_blocks = nn.ModuleList(Block(decoder) for _ in range(config.decoder_n_layer))
        self.decoder_norm = make_norm(decoder)
        self.decoder_pred = nn.Linear(D, vision.patch_size**2 * vision.channels)
        nn.init.normal_(self.mask_token, std=0.02)

    def encode(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(B, 1 + K, C): the encoder's states for [CLS] and the kept patches (`keep`, (B, K))."""
        vit = self.encoder
        size, c = self.vision.image_size, self.vision.channels
        if images.dim() != 4 or images.shape[1:] != (c, size, size):
            raise LMForgeError(
                f"images of shape {tuple(images.shape)} given; this MAE takes (batch, {c}, {size}, {size})"
            )
        x = (images - 0.5) / 0.25  # the ViT's own input normalisation
        x = vit.patch_emb(vit.stem(x)).flatten(2).transpose(1, 2) + vit.pos_emb[:, 1:]  # (B, N, C)
        x = x.gather(1, keep[:, :, None].expand(-1, -1, x.shape[-1]))  # (B, K, C)
        cls = (vit.cls_token + vit.pos_emb[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)  # (B, 1 + K, C)
        for block in vit.blocks:
            x = block(x, None, None)
        return vit.norm(x)

    def decode(self, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        """(B, N, p*p*c) pixel predictions for every patch from the encoded [CLS] + kept patches."""
        x = self.decoder_embed(latent)  # (B, 1 + K, D)
        B, N = restore.shape
        fill = self.mask_token.expand(B, N - (x.shape[1] - 1), -1)
        patches = torch.cat([x[:, 1:], fill], dim=1)  # (B, N, D) in [kept..., masked...] order
        patches = patches.gather(1, restore[:, :, None].expand(-1, -1, x.shape[-1]))  # image order
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos  # (B, N + 1, D)
        for block in self.decoder_blocks:
            x = block(x, None, None)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def target(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N, p*p*c): each patch's pixels, normalised per patch when `norm_pix_loss`."""
        target = patchify(images, self.vision.patch_size)
        if self.config.norm_pix_loss:
            mean = target.mean(-1, keepdim=True)
            var = target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, predictions (B, N, p*p*c), mask (B, N) with 1 = masked) for images (B, c, H, W) in [0, 1]."""
        keep, mask, restore = random_masking(
            images.shape[0], self.vision.n_patches, self.config.mask_ratio, generator
        )
        keep, mask, restore = keep.to(images.device), mask.to(images.device), restore.to(images.device)
        pred = self.decode(self.encode(images, keep), restore)
        per_patch = ((pred - self.target(images)) ** 2).mean(-1)  # (B, N)
        loss = (per_patch * mask).sum() / mask.sum()
        return loss, pred, mask

    def loss(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean squared error on the masked patches of a fresh random mask."""
        return self(images, generator)[0]

    def transfer_to(self, vit: VisionTransformer) -> VisionTransformer:
        """Copy the trained encoder into `vit` (a ViT or a CLIP model's `.visual`) of the same shape."""
        mine = {k: v for k, v in dataclasses.asdict(self.vision).items() if k != "pool"}
        theirs = {k: v for k, v in dataclasses.asdict(vit.config).items() if k != "pool"}
        if mine != theirs:
            different = sorted(k for k in mine if mine[k] != theirs.get(k))
            raise LMForgeError(
                "the MAE encoder and the target ViT differ in "
                + ", ".join(f"{k} ({mine[k]} vs {theirs.get(k)})" for k in different)
                + "; build the ViT with the MAE's VisionConfig"
            )
        vit.load_state_dict(self.encoder.state_dict())
        return vit

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, path: str | Path) -> Path:
        """Write config.json and model.safetensors (encoder + decoder) into `path`, atomically."""
        return save_model(path, self, MODEL_TYPE, {"vision": self.vision, "mae": self.config})

    @classmethod
    def load(cls, path: str | Path) -> MaskedAutoencoder:
        """Read a directory `save` wrote; anything else is a one-line error."""
        meta = read_meta(path, MODEL_TYPE, "an MAE", "a masked autoencoder", "MaskedAutoencoder.save")
        model = cls(config_from(VisionConfig, meta["vision"]), config_from(MAEConfig, meta["mae"]))
        return load_weights(model, path)


def load_vision_encoder(path: str | Path) -> VisionTransformer:
    """The ViT encoder of an MAE checkpoint directory (ready for a linear probe or a CLIP tower)."""
    return MaskedAutoencoder.load(path).encoder
