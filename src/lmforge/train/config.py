"""The options of the training capabilities, each declared once, with its help, as a config field.

- `TrainConfig` (trainer.py): the Trainer's settings, shared by every command that trains;
- `ModelShape`: the model a run builds from scratch, a preset with any field changed;
- `PretrainConfig` = TrainConfig + ModelShape + the objective and the shards' tokenizer (and, for the
  image objectives clip / vlm / mae, their data options, declared in ClipTrainConfig / VLMTrainConfig);
- `FinetuneConfig` = TrainConfig with fine-tuning's own defaults (fewer steps, a lower lr, ...) + the
  data source, LoRA and merging;
- `QuickstartConfig` = ModelShape + the time budget, tokenizer size and samples of `lmforge quickstart`.

The CLI flags, `--help` lines and config-file keys of `lmforge pretrain/finetune/quickstart` are derived
from these fields (`lmforge.options`). Validation runs at construction, so `lmforge.pretrain(...)` and
friends refuse a bad option before loading a model or reading data. Where a config offers an option
another one declares (finetune's `lora_rank` is LoRAConfig's `rank`), `same_as` reuses its help and,
unless a different default is the point, its default.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmforge.config import PRESETS, ModelConfig
from lmforge.errors import LMForgeError
from lmforge.generate.config import GenerationConfig
from lmforge.multimodal.train import ClipTrainConfig
from lmforge.multimodal.vlm_train import VLMTrainConfig
from lmforge.options import check_types, option, same_as
from lmforge.quant.config import QuantizeConfig
from lmforge.train.lora import LoRAConfig
from lmforge.train.optim import OptimizerName
from lmforge.train.trainer import Precision, TrainConfig


@dataclass
class ModelShape:
    """The model a run builds from scratch: a preset with any `ModelConfig` field changed."""

    preset: str = option("gpt-tiny", f"model preset: {', '.join(PRESETS)}")
    model_overrides: dict[str, Any] | None = option(
        None,
        'any ModelConfig fields as JSON, e.g. \'{"position": "rope", "norm": "rmsnorm"}\' (--objective '
        "clip / vlm / mae: ClipConfig / VLMConfig / VisionConfig + MAEConfig fields of the recipe model)",
    )
    n_layer: int | None = option(None, "transformer blocks (overrides the preset)")
    n_head: int | None = option(None, "attention heads (overrides the preset)")
    d_model: int | None = option(None, "model width (overrides the preset)")

    def model_config(self, **defaults: Any) -> ModelConfig:
        """The preset with `defaults` (e.g. the tokenizer's vocab_size), then model_overrides, then
        n_layer / n_head / d_model applied; raises LMForgeError naming an invalid field."""
        sizes = {"n_layer": self.n_layer, "n_head": self.n_head, "d_model": self.d_model}
        overrides = {**defaults, **(self.model_overrides or {})}
        overrides.update({k: v for k, v in sizes.items() if v is not None})
        return ModelConfig.preset(self.preset, **overrides)


@dataclass
class PretrainConfig(TrainConfig, ModelShape):
    """Every option of `lmforge.pretrain`: the model to build, the objective and the training run."""

    objective: Literal["clm", "mlm", "clip", "vlm", "mae"] = option(
        "clm",
        "clm (causal next-token), mlm (BERT masking; needs an encoder preset like bert-tiny), or on an "
        "image dataset: clip (contrastive image–caption), vlm (answers and captions; easy-vqa) or mae "
        "(masked image modeling)",
    )
    tokenizer: Path | None = option(
        None, "tokenizer the shards were made with (none: the one their manifest names)"
    )
    whole_word: bool = option(False, "mlm: mask whole words")
    mask_prob: float = option(0.15, "mlm: fraction of tokens selected for masking")
    val_images: int = same_as(ClipTrainConfig, "val_images")
    train_images: int | None = same_as(ClipTrainConfig, "train_images")
    flips: bool = same_as(ClipTrainConfig, "flips")
    positives: Literal["pair", "class"] = same_as(ClipTrainConfig, "positives")
    questions_per_image: int = same_as(VLMTrainConfig, "questions_per_image")
    caption_share: float = same_as(VLMTrainConfig, "caption_share")
    vision_from: Path | None = same_as(VLMTrainConfig, "vision_from")
    freeze_vision: bool = same_as(VLMTrainConfig, "freeze_vision")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.mask_prob < 1.0:
            raise LMForgeError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.objective in IMAGE_OBJECTIVES:
            sizes = [n for n in ("n_layer", "n_head", "d_model") if getattr(self, n) is not None]
            if sizes:
                raise LMForgeError(
                    f"--{sizes[0].replace('_', '-')} shapes a text transformer; for --objective "
                    f"{self.objective} give the model's fields in --model-overrides"
                )
            # the data options, checked as the training functions check them
            VLMTrainConfig(
                questions_per_image=self.questions_per_image,
                caption_share=self.caption_share,
                vision_from=self.vision_from,
                freeze_vision=self.freeze_vision,
            )
            if self.val_images < 0:
                raise LMForgeError(f"val_images must be >= 0, got {self.val_images}")
            return
        model = self.model_config()  # the preset's own vocabulary stands in for the tokenizer's
        if self.objective == "mlm" and model.head != "mlm":
            raise LMForgeError(
                f"objective mlm needs an encoder with an MLM head (e.g. preset bert-tiny), not {self.preset}"
            )
        if self.objective == "clm" and not model.causal:
            raise LMForgeError(f"objective clm needs a causal decoder preset, not {self.preset}")
        check_context(self.seq_len, model.max_seq_len)


IMAGE_OBJECTIVES = ("clip", "vlm", "mae")  # trained on an image dataset (lmforge.multimodal.pretrain)


def check_context(seq_len: int, max_seq_len: int) -> None:
    if seq_len > max_seq_len:
        raise LMForgeError(
            f"--seq-len {seq_len} exceeds the model's context of {max_seq_len}; lower --seq-len "
            "or build the model with a larger max_seq_len"
        )


@dataclass
class FinetuneConfig(TrainConfig):
    """Every option of `lmforge.finetune`: one data source, full or LoRA training, and the training run
    (with fine-tuning's defaults: 100 steps of 4 x 512 tokens at lr 2e-4, no weight decay)."""

    steps: int = same_as(TrainConfig, "steps", 100)
    batch_size: int = same_as(TrainConfig, "batch_size", 4)
    seq_len: int = same_as(TrainConfig, "seq_len", 512)
    lr: float = same_as(TrainConfig, "lr", 2e-4)
    warmup_steps: int = same_as(TrainConfig, "warmup_steps", 10)
    weight_decay: float = same_as(TrainConfig, "weight_decay", 0.0)
    eval_every: int = same_as(TrainConfig, "eval_every", 50)
    chat_data: Path | None = option(
        None, 'JSONL file of {"messages": [{"role": ..., "content": ...}]}; loss on assistant tokens only'
    )
    text: list[str] | None = option(
        None, "text files, directories, .jsonl or built-in corpora for continued pretraining"
    )
    data: Path | None = option(
        None, "a `lmforge prepare` directory made with the model's tokenizer (continued pretraining)"
    )
    val_fraction: float = option(
        0.1, "share of the examples (or tokens) held out for validation; 0 validates on the training examples"
    )
    lora: bool = option(False, "train LoRA adapters instead of all weights")
    lora_rank: int = same_as(LoRAConfig, "rank")
    lora_alpha: float = same_as(LoRAConfig, "alpha")
    lora_dropout: float = same_as(LoRAConfig, "dropout")
    lora_targets: list[str] = same_as(LoRAConfig, "targets")
    merge: bool = option(False, "LoRA: also write OUT/merged with the adapters merged into the weights")
    qat: Literal["none", "int8", "int4"] = option(
        "none",
        "quantization-aware training: the block linears compute with RTN-rounded weights (gradients "
        "straight through); OUT/<scheme> gets the quantized checkpoint at the end",
    )
    group_size: int = same_as(QuantizeConfig, "group_size")
    symmetric: bool = same_as(QuantizeConfig, "symmetric")

    def __post_init__(self) -> None:
        if isinstance(self.text, (list, tuple)):
            self.text = [str(t) if isinstance(t, Path) else t for t in self.text]
        super().__post_init__()
        sources = [s for s in (self.chat_data, self.text, self.data) if s]
        if len(sources) != 1:
            raise LMForgeError("pass exactly one of chat_data, text or data (--chat-data, --text, --data)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise LMForgeError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.merge and not self.lora:
            raise LMForgeError("merge only applies to LoRA runs (--lora)")
        if self.qat != "none" and self.lora:
            raise LMForgeError(
                "--qat trains all weights through the rounding; it does not combine with --lora"
            )
        self.lora_config()  # validates the LoRA options
        if self.chat_data is not None and not Path(self.chat_data).is_file():
            raise LMForgeError(f"chat data file not found: {self.chat_data}")
        if self.data is not None and not (Path(self.data) / "manifest.json").is_file():
            raise LMForgeError(f"{self.data}: not a `lmforge prepare` directory (no manifest.json)")

    @property
    def objective(self) -> str:
        return "sft" if self.chat_data else "clm"

    def lora_config(self) -> LoRAConfig | None:
        if not self.lora:
            return None
        return LoRAConfig(self.lora_rank, self.lora_alpha, self.lora_dropout, list(self.lora_targets))


LM_MINUTES = 9.0  # the LM quickstart's training budget when --minutes is not given

# The LM quickstart's model and training settings for its time budget: the first row whose minutes
# cover the budget; each option a user gives wins over its row. Chosen by equal-time runs on the
# Shakespeare split at one thread (README, "Better models per minute"): Muon beat AdamW (2.28 vs 2.42
# bits/byte in 2 minutes), RoPE beat learned positions (2.20 vs 2.24), lr 6e-3 beat 3e-3,
# RMSNorm without biases and a 2048 vocabulary did worse; 256 wide lost at 2 minutes, matched 128
# wide at 8 (2.012 vs 2.017) and gained nothing from a second thread (2.014 in the default 9 minutes
# at 2 threads); the explicit softmax trains faster than the CPU's fused attention kernel at this
# 128-token context. In the default 9 minutes at 2 threads, batch 32 beat 16 (1.976 vs 2.006 bits/byte:
# 1,149 vs 1,969 steps, 4.7M vs 4.0M tokens; two threads share a bigger batch's matmuls better; the
# default command then scored 1.973); short budgets keep 16 (the nanoGPT comparison at 2.4 minutes ran
# with it: more steps matter more there).
_SMALL_GPT = {
    "preset": "gpt-tiny",
    "n_layer": 4,
    "n_head": 4,
    "d_model": 128,
    "model_overrides": {"position": "rope", "attn_backend": "math"},
    "seq_len": 128,
    "batch_size": 16,
    "lr": 6e-3,
    "optimizer": "muon",
    "warmup_steps": 20,
}
LM_BUDGETS: tuple[tuple[float, dict[str, Any]], ...] = (
    (5.0, _SMALL_GPT),
    (math.inf, {**_SMALL_GPT, "batch_size": 32}),
)


@dataclass
class QuickstartConfig(ModelShape):
    """Every option of `lmforge.quickstart`: the tokenizer, model, time budget and samples."""

    recipe: Literal["lm", "clip", "vlm"] = option(
        "lm",
        "what to train: lm (a BPE + small GPT on text), clip (an image–text model on easy-VQA, evaluated "
        "zero-shot on its test split) or vlm (a vision-language model answering easy-VQA questions, "
        "evaluated by exact match on its test split); clip and vlm take --out, --minutes, --seed and --progress",
    )
    dataset: Literal["easy-vqa", "fashion-mnist"] | None = option(
        None,
        "--recipe clip: the images to train and test on: easy-vqa (shapes and colours) or fashion-mnist "
        "(10 clothing classes; adds linear probes on the image features and on raw pixels) (none: easy-vqa)",
    )
    text: list[str] | None = option(
        None, "UTF-8 text files to train on, joined with blank lines (none: the 42 Shakespeare texts)"
    )
    val_text: Path | None = option(
        None, "text file scored for validation bits/byte, every byte once (none: the end of the text)"
    )
    val_fraction: float = option(0.1, "without --val-text: the share of the text's end held out")
    out: Path = option(Path("runs/quickstart"), "working directory (tokenizer/, data/, run-N/)")
    minutes: float | None = option(
        None,
        "training time budget in minutes, the schedule sized to end within it "
        f"(none: 9 for clip and vlm, {LM_MINUTES:g} for lm)",
    )
    clip_fraction: float = option(
        0.65,
        "--recipe vlm: share of the minutes spent first training the image tower as CLIP, the VLM "
        "starting from it (0: the VLM alone, its ViT from scratch)",
    )
    vocab_size: int = option(4096, "BPE vocabulary size")
    preset: str | None = option(
        None, f"model preset: {', '.join(PRESETS)} (none: the shape LM_BUDGETS gives --minutes)"
    )
    seq_len: int | None = option(None, "tokens per training sequence (none: from LM_BUDGETS)")
    batch_size: int | None = option(None, "sequences per batch (none: from LM_BUDGETS)")
    lr: float | None = option(None, "peak learning rate (none: from LM_BUDGETS)")
    optimizer: OptimizerName | None = option(
        None, "adamw or muon (Muon for the hidden matrices, AdamW for the rest) (none: from LM_BUDGETS)"
    )
    warmup_steps: int | None = option(None, "linear warmup steps (none: from LM_BUDGETS)")
    samples: int = option(2, "samples to generate at the end")
    max_new_tokens: int = same_as(GenerationConfig, "max_new_tokens", 120)
    prompt: str = option("ROMEO:", "text the samples start from")
    seed: int = same_as(TrainConfig, "seed")
    precision: Precision = same_as(TrainConfig, "precision")
    precision_fallback: bool = same_as(TrainConfig, "precision_fallback")
    device: str | None = same_as(TrainConfig, "device")
    progress: bool = same_as(TrainConfig, "progress")

    def __post_init__(self) -> None:
        if isinstance(self.text, (list, tuple)):
            self.text = [str(t) if isinstance(t, Path) else t for t in self.text]
        check_types(self)
        if self.dataset is not None and self.recipe != "clip":
            raise LMForgeError(f"--dataset applies to --recipe clip, not --recipe {self.recipe}")
        if not 0.0 <= self.clip_fraction < 1.0:
            raise LMForgeError(f"clip_fraction must be in [0, 1), got {self.clip_fraction}")
        if not 0.0 < self.val_fraction < 1.0:
            raise LMForgeError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if (self.minutes is not None and self.minutes <= 0) or (self.lr is not None and self.lr <= 0):
            raise LMForgeError(f"minutes and lr must be positive, got {self.minutes} and {self.lr}")
        for name in ("vocab_size", "seq_len", "batch_size", "max_new_tokens"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise LMForgeError(f"{name} must be positive, got {getattr(self, name)}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise LMForgeError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.samples < 0:
            raise LMForgeError(f"samples must be >= 0, got {self.samples}")
        if self.vocab_size < 260:
            raise LMForgeError(
                f"vocab_size must be at least 260 (256 bytes + specials), got {self.vocab_size}"
            )
        if self.preset is not None and self.seq_len is not None:
            self.model_config(vocab_size=self.vocab_size, max_seq_len=self.seq_len)

    def for_budget(self) -> QuickstartConfig:
        """This config with `minutes` and every option left at none filled from LM_BUDGETS' row for
        the budget. The row's model shape applies only when no --preset is given (--d-model etc. and
        --model-overrides still change it); its training settings fill each option left at none."""
        minutes = self.minutes or LM_MINUTES
        row = next(row for up_to, row in LM_BUDGETS if minutes <= up_to)
        filled: dict[str, Any] = {"minutes": minutes}
        sizes = ("n_layer", "n_head", "d_model")
        if self.preset is None:
            filled["preset"] = row["preset"]
            for name in sizes:
                if getattr(self, name) is None:
                    filled[name] = row.get(name)
            filled["model_overrides"] = {**row.get("model_overrides", {}), **(self.model_overrides or {})}
        for name, value in row.items():  # the training settings: the row's other keys
            if name not in ("preset", *sizes, "model_overrides") and getattr(self, name) is None:
                filled[name] = value
        return dataclasses.replace(self, **filled)

    def training(self, **changes: Any) -> TrainConfig:
        """The Trainer's settings for this quickstart (after `for_budget`; the steps are sized later,
        from the clock)."""
        return TrainConfig(
            **{
                "steps": 1,
                "batch_size": self.batch_size,
                "seq_len": self.seq_len,
                "lr": self.lr,
                "optimizer": self.optimizer,
                "warmup_steps": 0,
                "seed": self.seed,
                "precision": self.precision,
                "precision_fallback": self.precision_fallback,
                "device": self.device,
                "eval_batches": 16,
                # a record (and the per-group gradient norms in it) every 10th step: logged every step
                # they cost ~15% of a step at this model size (2.76 vs 3.26 steps/s, 2 threads)
                "log_every": 10,
                "progress": self.progress,
                "tensorboard": False,
                **changes,
            }
        )
