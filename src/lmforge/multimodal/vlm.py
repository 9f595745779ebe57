"""A small vision-language model (LLaVA-style): vision encoder → projector → prefix vectors for a causal
decoder, which then reads the prompt and answers.

Design choices:
- vision encoder: `lmforge.model.vision.VisionTransformer`, trained from scratch, or started from the
  image tower of one of our CLIP checkpoints (`VLM.create(..., vision_from=CLIP_DIR)`);
- prefix: the ViT's patch states (B, N, Cv) laid back on their grid and average-pooled to a k×k grid
  (`prefix_tokens` = k²), so the decoder reads a few image vectors rather than all N patches;
- projector: a two-layer MLP (Linear → GELU → Linear) from the ViT width to the decoder width;
- decoder: `lmforge.model.transformer.Transformer` (Llama-style: RoPE, RMSNorm, SwiGLU) over a small
  byte-level BPE trained on the questions, answers and captions; the prefix goes in through the
  model's `inputs_embeds` path and generation through the engine's `prefix_embeds` (the KV cache holds
  the image after prefill);
- a sample is `[image prefix] question answer:` followed by ` {answer}</s>`; captions use the
  question `describe the image.` (`prompt_text`).

`VLM` pairs the network with its tokenizer and generation defaults and behaves like an `LM` for
generation: `.model` is the decoder, `.engine` its long-lived engine, `.image_prefix` what an `image=`
turns into, so `vlm.generate("what shape is this?", image="x.png")` runs the same decoding code as text.
A checkpoint directory holds config.json (`model_type: lmforge-vlm` + the VLMConfig), model.safetensors,
the tokenizer and generation_config.json; written atomically, read back by `VLM.load` or `lmforge.load`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError
from lmforge.generate.engine import COMPILE_MODES, CompileMode, Engine
from lmforge.model.transformer import Transformer
from lmforge.model.vision import VisionConfig, VisionTransformer
from lmforge.multimodal.checkpoint import config_from, load_weights, read_meta, save_model
from lmforge.options import check_types, option
from lmforge.tokenizer import Tokenizer

MODEL_TYPE = "lmforge-vlm"
CAPTION_QUESTION = "describe the image."
SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}


def prompt_text(question: str) -> str:
    """The decoder's text prompt for a question (the answer follows it after a space): what a chat
    template is to a chat model."""
    question = question.strip().lower()
    return question if question.endswith("answer:") else f"{question} answer:"


def _prompts(prompt: Any) -> Any:
    """Text prompts in the training format (`prompt_text`); token ids are passed as given."""
    if isinstance(prompt, str):
        return prompt_text(prompt)
    if isinstance(prompt, list | tuple) and prompt and all(isinstance(p, str) for p in prompt):
        return [prompt_text(p) for p in prompt]
    return prompt


@dataclass
class VLMConfig(VisionConfig):
    """The VLM's shape: the ViT's fields (VisionConfig), the prefix, the projector and the decoder."""

    prefix_tokens: int = option(4, "image vectors from the patches: the patch grid pooled to k×k, k² of them")
    prefix_cls: bool = option(
        True, "put the ViT's [CLS] state in front of the pooled patches (one more vector)"
    )
    text_d_model: int = option(128, "decoder width")
    text_n_layer: int = option(2, "decoder blocks")
    text_n_head: int = option(4, "decoder attention heads")
    text_max_len: int = option(48, "decoder context in positions (image prefix included)")
    vocab_size: int = option(0, "decoder vocabulary size (0: set from the tokenizer)")
    image_resize: Literal["refuse", "resize"] = option(
        "refuse", "an image file of another size than image_size: refuse it or resize it"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_types(self)
        grid = self.image_size // self.patch_size
        k = round(self.prefix_tokens**0.5)
        if self.prefix_tokens <= 0 or k * k != self.prefix_tokens or k > grid:
            raise LMForgeError(
                f"invalid VLMConfig.prefix_tokens={self.prefix_tokens}: must be a square k² with k at most "
                f"the patch grid side ({grid})"
            )
        if self.text_max_len <= self.prefix_length + 4:
            raise LMForgeError(
                f"invalid VLMConfig.text_max_len={self.text_max_len}: leave room for a prompt after the "
                f"{self.prefix_length} image vectors"
            )
        if self.image_resize not in ("refuse", "resize"):
            raise LMForgeError(f"invalid VLMConfig.image_resize={self.image_resize!r}: use refuse or resize")

    @property
    def prefix_length(self) -> int:
        """P: the input vectors an image becomes in front of the prompt."""
        return self.prefix_tokens + int(self.prefix_cls)

    def decoder_config(self) -> ModelConfig:
        return ModelConfig.preset(
            "llama-tiny",
            vocab_size=max(self.vocab_size, 1),
            n_layer=self.text_n_layer,
            n_head=self.text_n_head,
            n_kv_head=self.text_n_head,
            d_model=self.text_d_model,
            d_mlp=2 * self.text_d_model,
            max_seq_len=self.text_max_len,
            tie_embeddings=False,
        )

    def vision_config(self) -> VisionConfig:
        return VisionConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(VisionConfig)})


class VisionLanguageModel(nn.Module):
    """ViT → pooled patch grid → MLP projector → decoder prefix. Pure: no tokenizer inside."""

    def __init__(self, config: VLMConfig):
        super().__init__()
        if config.vocab_size <= 0:
            raise LMForgeError("VLMConfig.vocab_size is unset: build the model with the tokenizer's size")
        self.config = config
        self.visual = VisionTransformer(config.vision_config())
        C = config.text_d_model
        self.projector = nn.Sequential(nn.Linear(config.vision_d_model, C), nn.GELU(), nn.Linear(C, C))
        self.decoder = Transformer(config.decoder_config())

    def image_prefix(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) floats in [0, 1] -> (B, P, C) decoder input vectors ([CLS] first with prefix_cls)."""
        h = self.visual.hidden_states(images)  # (B, 1 + N, Cv)
        patches = h[:, 1:]
        B, N, Cv = patches.shape
        g, k = int(N**0.5), int(self.config.prefix_tokens**0.5)
        grid = patches.transpose(1, 2).reshape(B, Cv, g, g)  # (B, Cv, g, g)
        pooled = F.adaptive_avg_pool2d(grid, k).flatten(2).transpose(1, 2)  # (B, k², Cv)
        if self.config.prefix_cls:
            pooled = torch.cat([h[:, :1], pooled], dim=1)  # (B, 1 + k², Cv)
        return self.projector(pooled)  # (B, P, C)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, P + T, V) over the image prefix followed by the token ids (B, T)."""
        return self.decoder(input_ids, inputs_embeds=self.image_prefix(images))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def train_vlm_tokenizer(texts: Sequence[str], vocab_size: int = 512) -> Tokenizer:
    """A lowercase byte-level BPE with <s>, </s> (end of answer) and <pad>, trained on `texts`."""
    from lmforge.tokenizer.train import train_tokenizer

    return train_tokenizer(
        texts=list(texts),
        algorithm="bpe",
        vocab_size=vocab_size,
        min_frequency=1,
        lowercase=True,
        special_tokens=dict(SPECIALS),
        show_progress=False,
    )


class VLM:
    """A VisionLanguageModel with its tokenizer and generation defaults, used like an `LM`:
    `generate`/`stream`/`chat` with `image=` (a file path, a (3, H, W) tensor, or one per prompt)."""

    def __init__(
        self,
        network: VisionLanguageModel,
        tokenizer: Tokenizer,
        generation_config: dict[str, Any] | None = None,
        source: str | None = None,
        compile: CompileMode = "eager",
    ):
        if compile not in COMPILE_MODES:
            raise LMForgeError(f"unknown compile mode {compile!r}; use one of {', '.join(COMPILE_MODES)}")
        self.network = network
        self.tokenizer = tokenizer
        self.generation_config = generation_config or {
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "max_new_tokens": 8,
        }
        self.source = source
        self.compile = compile
        self._engine: Engine | None = None

    @classmethod
    def create(
        cls, config: VLMConfig, tokenizer: Tokenizer, seed: int = 0, vision_from: str | Path | None = None
    ) -> VLM:
        """A new, randomly initialised VLM (the ViT copied from a CLIP checkpoint with `vision_from`)."""
        config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size)
        torch.manual_seed(seed)
        network = VisionLanguageModel(config)
        network.decoder.init_weights(seed=seed)
        if vision_from is not None:
            from lmforge.multimodal.clip import CLIP

            clip = CLIP.load(vision_from)
            if clip.config.vision_config() != config.vision_config():
                raise LMForgeError(
                    f"{vision_from}: the CLIP image tower ({clip.config.vision_config()}) differs from this "
                    "VLM's vision fields; give the same image_size, patch_size and vision_* options"
                )
            network.visual.load_state_dict(clip.model.visual.state_dict())
        return cls(network, tokenizer)

    # -- what the generation code reads (see lmforge.generate.api) ------------------------------------

    @property
    def model(self) -> Transformer:
        """The decoder: what the engine steps."""
        return self.network.decoder

    @property
    def config(self) -> VLMConfig:
        return self.network.config

    @property
    def engine(self) -> Engine:
        if self._engine is None or self._engine.model is not self.model:
            self._engine = Engine(self.model, compile=self.compile)
        return self._engine

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def images_tensor(self, images: Sequence[str | Path | torch.Tensor]) -> torch.Tensor:
        """(B, 3, H, W) floats in [0, 1] from image files or (3, H, W) tensors (uint8, or floats in [0, 1])."""
        from lmforge.multimodal.data import read_image

        size = self.config.image_size
        out = []
        for image in images:
            if isinstance(image, str | Path):
                image = read_image(image, size, self.config.image_resize)
            if not isinstance(image, torch.Tensor) or image.dim() != 3:
                raise LMForgeError(
                    f"an image is a file path or a (3, {size}, {size}) tensor, got {type(image).__name__}"
                )
            out.append(image.float() / 255.0 if image.dtype == torch.uint8 else image.float())
        x = torch.stack(out).to(self.device)
        if x.shape[1:] != (self.config.channels, size, size):
            raise LMForgeError(
                f"images of shape {tuple(x.shape[1:])} given; this model takes (3, {size}, {size})"
            )
        return x

    @torch.inference_mode()
    def image_prefix(self, images: Sequence[str | Path | torch.Tensor]) -> torch.Tensor:
        """(B, P, C) prefix vectors of B images: what `generate(..., image=...)` puts before the prompt."""
        self.network.eval()
        return self.network.image_prefix(self.images_tensor(images))

    def generate(self, prompt, *, image=None, **options):
        """Answer a question (or several) about an image; see `lmforge.generate.generate` for the
        options. Text prompts are put in the training format (`prompt_text`), token ids go as given."""
        from lmforge.generate import generate

        return generate(self, _prompts(prompt), image=image, **options)

    def stream(self, prompt, *, image=None, **options):
        """Yield the answer's text deltas; see `lmforge.generate.stream`."""
        from lmforge.generate import stream

        return stream(self, _prompts(prompt), image=image, **options)

    def chat(self, messages: list[dict[str, str]], *, stream: bool = False, image=None, **options):
        """Answer the latest user message about `image` (the model is trained on single questions, so
        earlier turns are not read); with `stream=True` yield `Delta`s."""
        question = next((m.get("content") for m in reversed(messages or []) if m.get("role") == "user"), None)
        if not question:
            raise LMForgeError('give at least one {"role": "user", "content": ...} message')
        if stream:
            return self.stream(question, image=image, **options)
        return self.generate(question, image=image, **options)

    def ask(
        self,
        questions: str | Sequence[str],
        images: str | Path | torch.Tensor | Sequence[str | Path | torch.Tensor],
        **options: Any,
    ) -> str | list[str]:
        """Greedy answers to questions about images (one image for all, or one per question)."""
        single = isinstance(questions, str)
        qs = [questions] if single else list(questions)
        if isinstance(images, str | Path) or (isinstance(images, torch.Tensor) and images.dim() == 3):
            images = [images]
        out = self.generate(qs, image=list(images), **options)
        out = out if isinstance(out, list) else [out]
        answers = [o.text.strip() for o in out]
        return answers[0] if single else answers

    def caption(self, images, **options: Any) -> str | list[str]:
        """Captions of one image or several."""
        single = isinstance(images, str | Path) or (isinstance(images, torch.Tensor) and images.dim() == 3)
        images = [images] if single else list(images)
        out = self.ask([CAPTION_QUESTION] * len(images), images, **options)
        return out[0] if single else out

    def info(self) -> dict[str, Any]:
        c = self.config
        return {
            "source": self.source,
            "kind": "vision-language model",
            "parameters": self.network.num_parameters(),
            "vision_parameters": sum(p.numel() for p in self.network.visual.parameters()),
            "image_size": c.image_size,
            "prefix_length": c.prefix_length,
            "context_length": c.text_max_len,
            "vocab_size": c.vocab_size,
        }

    def __repr__(self) -> str:
        return f"VLM(source={self.source!r}, params={self.network.num_parameters():,})"

    # -- checkpoint ------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write config.json, model.safetensors, the tokenizer and generation_config.json, atomically."""

        def extra(tmp: Path) -> None:
            (tmp / "generation_config.json").write_text(json.dumps(self.generation_config, indent=2))
            self.tokenizer.save(tmp)

        return save_model(path, self.network, MODEL_TYPE, {"vlm": self.config}, extra)

    @classmethod
    def load(cls, path: str | Path, compile: CompileMode = "eager") -> VLM:
        """Read a directory `save` wrote; anything else is a one-line error."""
        path = Path(path)
        written_by = "`lmforge quickstart --recipe vlm` or VLM.save"
        meta = read_meta(path, MODEL_TYPE, "a VLM", "a VLM", written_by)
        network = load_weights(VisionLanguageModel(config_from(VLMConfig, meta["vlm"])), path)
        generation = None
        if (path / "generation_config.json").is_file():
            generation = json.loads((path / "generation_config.json").read_text(encoding="utf-8"))
        return cls(network, Tokenizer.from_dir(path), generation, source=str(path), compile=compile)


def is_vlm_dir(path: str | Path) -> bool:
    """Whether `path` is a directory whose config.json says `model_type: lmforge-vlm`."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == MODEL_TYPE
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False
