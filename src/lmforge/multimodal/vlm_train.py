"""Training and evaluation of the VLM on easy-VQA: `train_vlm`, `VLMObjective`, `evaluate_vlm`.

Training runs through the one Trainer (train/trainer.py: AdamW with decay on matrices, warmup + cosine
following the clock under a time budget, clipping, the JSONL log and loss plot, atomic checkpoints whose
model part is a `VLM.save` directory, exact resume). What is the VLM's own lives here: batch k
(`VLMBatches`, seeded by (seed, k)) holds `batch_size // questions_per_image` training images, each
asked `questions_per_image` of its questions (a `caption_share` of them `describe the image.` →
`a red circle`), flipped at random (a flip keeps a shape's name and colour); `VLMObjective`'s loss is
the cross-entropy of the answer tokens and the closing `</s>` only (the image prefix and the question
are context, never targets), each image encoded once for its questions. The test split is never read.

Evaluation (`evaluate_vlm`, on the test split): greedy answers through the generation engine, exact
match overall and per question type (shape, colour, yes/no), and captions scored with corpus BLEU-3
(sacrebleu through `lmforge.eval.metrics.text.bleu`; the captions are 3 words, so BLEU-4 would be 0) and CIDEr
(`cider`: TF-IDF n-gram cosine, n = 1..3 for the same reason, IDF over the test references, ×10,
Vedantam et al. 2015, without CIDEr-D's length penalty and clipping).
"""

from __future__ import annotations

import json
import math
import random
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge import hardware
from lmforge.errors import LMForgeError
from lmforge.io.atomic import atomic_write_text
from lmforge.multimodal.clip import CLIP
from lmforge.multimodal.data import COLOURS, SHAPES, ImageSet, caption, load_easy_vqa
from lmforge.multimodal.train import flip_images, index_rng, run_tokenizer, seed_from
from lmforge.multimodal.vlm import CAPTION_QUESTION, VLM, VLMConfig, prompt_text, train_vlm_tokenizer
from lmforge.options import check_types, option
from lmforge.train.trainer import Objective, TrainConfig, Trainer


def question_type(answer: str) -> str:
    """shape / colour / yes-no, from what the answer names."""
    if answer in SHAPES:
        return "shape"
    if answer in COLOURS:
        return "colour"
    return "yes/no"


@dataclass
class VLMTrainConfig:
    """How `train_vlm` trains; every field is an option of `lmforge quickstart --recipe vlm`."""

    steps: int = option(4000, "optimizer steps (the time budget may stop it earlier)")
    minutes: float | None = option(
        None, "training time budget: the schedule follows the clock to end within it (none: every step)"
    )
    batch_size: int = option(64, "(image, question, answer) samples per step")
    questions_per_image: int = option(
        4, "samples per image in a batch: each image is encoded once for that many of its questions"
    )
    lr: float = option(1e-3, "peak learning rate")
    warmup_steps: int = option(100, "linear warmup steps")
    weight_decay: float = option(0.05, "AdamW weight decay on matrices")
    caption_share: float = option(0.2, "share of samples that ask for a caption instead of a question")
    train_images: int | None = option(None, "use the first N train-split images (none: all)")
    flips: bool = option(True, "random horizontal/vertical flips of training images")
    vision_from: Path | None = option(None, "start the ViT from this CLIP checkpoint's image tower")
    freeze_vision: bool = option(False, "keep the ViT's weights fixed (with --vision-from)")
    log_every: int = option(100, "steps between log lines")
    seed: int = option(0, "seed for initialisation and batches")
    resume: bool = option(False, "continue the run in `out` from its latest checkpoint")

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("steps", "batch_size", "log_every", "questions_per_image"):
            if getattr(self, name) <= 0:
                raise LMForgeError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.minutes is not None and self.minutes <= 0:
            raise LMForgeError(f"minutes must be positive, got {self.minutes}")
        if not 0 <= self.caption_share < 1:
            raise LMForgeError(f"caption_share must be in [0, 1), got {self.caption_share}")
        if self.freeze_vision and self.vision_from is None:
            raise LMForgeError(
                "freeze_vision needs vision_from: a ViT trained from scratch cannot stay frozen"
            )

    def training(self, progress: bool = True) -> TrainConfig:
        """The Trainer's settings for this run (fp32, AdamW betas (0.9, 0.98), clipping at 1, no
        validation)."""
        return TrainConfig(
            steps=self.steps,
            max_minutes=self.minutes,
            batch_size=self.batch_size,
            lr=self.lr,
            min_lr=self.lr / 10,
            warmup_steps=min(self.warmup_steps, self.steps),
            weight_decay=self.weight_decay,
            beta2=0.98,
            eval_every=0,
            log_every=self.log_every,
            seed=self.seed,
            precision="fp32",
            progress=progress,
            tensorboard=False,
            resume=self.resume,
        )


@dataclass
class VLMTrainResult:
    vlm: VLM
    steps: int
    train_loss: float
    seconds: float
    run_dir: Path | None = None
    final: Path | None = None
    hardware: dict = field(default_factory=dict)


def training_texts(data: ImageSet) -> list[str]:
    """What the tokenizer learns from: every prompt and answer the data holds, and every caption."""
    prompts = sorted({prompt_text(q) for q, _, _ in data.questions} | {prompt_text(CAPTION_QUESTION)})
    answers = sorted({a for _, a, _ in data.questions})
    captions = [caption(c, s) for c in COLOURS for s in SHAPES]
    return prompts + [" " + a for a in answers + captions]


def encode_samples(vlm: VLM, samples: Sequence[tuple[str, str, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, targets), (N, L) each: `prompt answer</s>` right-padded; targets hold the next token of the
    answer positions and -100 elsewhere (targets[:, t] is what position t predicts)."""
    tok = vlm.tokenizer
    rows, answer_starts = [], []
    for question, answer, _ in samples:
        prompt = tok.encode(prompt_text(question), add_special_tokens=True)
        rows.append(prompt + tok.encode(" " + answer, add_special_tokens=False) + [tok.eos_token_id])
        answer_starts.append(len(prompt))
    width = max(len(r) for r in rows)
    room = vlm.config.text_max_len - vlm.config.prefix_length
    if width > room:
        raise LMForgeError(
            f"a training sample has {width} tokens but text_max_len leaves room for {room}; raise text_max_len"
        )
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    targets = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (row, start) in enumerate(zip(rows, answer_starts, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        targets[i, start - 1 : len(row) - 1] = torch.tensor(row[start:])
    return ids, targets


def answer_loss(
    vlm: VLM, images: torch.Tensor, ids: torch.Tensor, targets: torch.Tensor, repeat: int = 1
) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens (the prefix and the question are context only); each
    image's prefix serves `repeat` consecutive rows of `ids`."""
    return prefix_answer_loss(vlm.network, images, ids, targets, repeat)


def prefix_answer_loss(
    network: nn.Module, images: torch.Tensor, ids: torch.Tensor, targets: torch.Tensor, repeat: int = 1
) -> torch.Tensor:
    """`answer_loss` on a `VisionLanguageModel` (what the Trainer holds)."""
    P = network.config.prefix_length
    prefix = network.image_prefix(images).repeat_interleave(repeat, dim=0)  # (B, P, C)
    logits = network.decoder(ids, inputs_embeds=prefix)[:, P:]  # (B, T, V): the token positions
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100
    )


@dataclass
class VLMBatches:
    """Batch k: images drawn without replacement, each with `repeat` of its samples (a question, or the
    caption request with probability `caption_share`), flipped at random; all seeded by (seed, k).
    Keys: `images` (B / repeat, 3, H, W), `input_ids` and `labels` (B, T) cut to the longest row."""

    data: ImageSet
    ids: torch.Tensor  # (Q + N, L): every question's row, then every image's caption row
    targets: torch.Tensor
    images_per_batch: int
    repeat: int
    caption_share: float
    flips: bool
    seed: int
    pad_token_id: int

    def __post_init__(self) -> None:
        self.by_image: list[list[int]] = [[] for _ in range(len(self.data))]
        for i, (_, _, r) in enumerate(self.data.questions):
            self.by_image[r].append(i)
        self.asked = [r for r in range(len(self.data)) if self.by_image[r]]

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        rng = index_rng(self.seed, index)
        draw = random.Random(seed_from(rng))
        rows = draw.sample(self.asked, min(self.images_per_batch, len(self.asked)))
        n_questions = len(self.data.questions)
        picks = [
            n_questions + r if draw.random() < self.caption_share else draw.choice(self.by_image[r])
            for r in rows
            for _ in range(self.repeat)
        ]
        ids, targets = self.ids[picks], self.targets[picks]
        width = int((ids != self.pad_token_id).sum(1).max())  # drop all-padding columns
        images = self.data.float_images(torch.tensor(rows))
        if self.flips:
            images = flip_images(images, torch.Generator().manual_seed(seed_from(rng)))
        return {"images": images, "input_ids": ids[:, :width], "labels": targets[:, :width]}


class VLMObjective(Objective):
    """The VLM for the Trainer: the answer-only loss, checkpoints `VLM.load` / `lmforge.load` read;
    throughput in (image, question, answer) samples."""

    name = "vlm"

    def __init__(self, tokenizer: Any, repeat: int):
        self.tokenizer, self.repeat = tokenizer, repeat

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], config: TrainConfig) -> torch.Tensor:
        return prefix_answer_loss(model, batch["images"], batch["input_ids"], batch["labels"], self.repeat)

    def write_model(self, directory: Path, model: nn.Module) -> None:
        VLM(model, self.tokenizer).save(directory)

    def load_weights(self, model: nn.Module, path: Path) -> None:
        saved = VLM.load(path)
        if saved.config != model.config:
            raise LMForgeError(f"{path}: the checkpoint's VLM config differs from this run's model")
        model.load_state_dict(saved.network.state_dict())


@dataclass
class VLMRun:
    """A VLM run ready to `trainer.fit()`: the Trainer and the model it trains."""

    trainer: Trainer
    vlm: VLM


def vlm_run(
    model: VLMConfig,
    train: TrainConfig,
    out: str | Path,
    data: ImageSet,
    questions_per_image: int = 4,
    caption_share: float = 0.2,
    flips: bool = True,
    vision_from: str | Path | None = None,
    freeze_vision: bool = False,
    identity: dict[str, Any] | None = None,
    tokenizer: Any = None,
) -> VLMRun:
    """The Trainer for a VLM of shape `model` trained on `data`'s questions and captions, writing to
    `out`; the ViT starts from a CLIP checkpoint's tower with `vision_from` (kept fixed with
    `freeze_vision`). The tokenizer is `tokenizer`, else that of the run in `out` when it has a
    checkpoint (a resumed run keeps its own), else one trained on `data`."""
    if data.images.shape[-1] != model.image_size:
        raise LMForgeError(
            f"the images are {data.images.shape[-1]}x{data.images.shape[-2]} but the model takes "
            f"{model.image_size}x{model.image_size}; set image_size to match"
        )
    if not data.questions:
        raise LMForgeError("the training images have no questions")
    if freeze_vision and vision_from is None:
        raise LMForgeError("freeze_vision needs vision_from: a ViT trained from scratch cannot stay frozen")
    if tokenizer is None:
        tokenizer = run_tokenizer(out)
    if tokenizer is None:
        tokenizer = train_vlm_tokenizer(training_texts(data))
    vlm = VLM.create(model, tokenizer, train.seed, vision_from)
    if freeze_vision:
        vlm.network.visual.requires_grad_(False)
    captions = [(CAPTION_QUESTION, c, r) for r, c in enumerate(data.captions)]
    ids, targets = encode_samples(vlm, data.questions + captions)  # captions last: row r at Q + r
    k = min(questions_per_image, train.batch_size)
    batches = VLMBatches(
        data,
        ids,
        targets,
        max(1, train.batch_size // k),
        k,
        caption_share,
        flips,
        train.seed,
        vlm.tokenizer.pad_token_id,
    )
    identity = {
        "objective": "vlm",
        "data": data.split,
        "images": len(data),
        "questions_per_image": k,
        "caption_share": caption_share,
        "flips": flips,
        "vision_from": None if vision_from is None else str(vision_from),
        "freeze_vision": freeze_vision,
        "tokenizer": tokenizer.fingerprint,
        **(identity or {}),
    }
    objective = VLMObjective(vlm.tokenizer, k)
    trainer = Trainer(vlm.network, train, batches, out, identity=identity, objective=objective)
    return VLMRun(trainer, vlm)


def train_vlm(
    model: VLMConfig | None = None,
    train: VLMTrainConfig | None = None,
    out: str | Path | None = None,
    data: ImageSet | None = None,
    progress: bool = True,
) -> VLMTrainResult:
    """Train a VLM on easy-VQA's train split (or on `data`) to answer its questions and caption, with the
    Trainer. With `out`, writes its run directory (log.jsonl, plot.png, checkpoints/, final/) and
    OUT/run.json; `train.resume` continues it exactly."""
    model = model or VLMConfig()
    train = train or VLMTrainConfig()
    data = load_easy_vqa("train") if data is None else data
    if train.train_images is not None:
        data = data.subset(range(min(train.train_images, len(data))))
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(out) if out is not None else Path(scratch)
        run = vlm_run(
            model,
            train.training(progress),
            run_dir,
            data,
            train.questions_per_image,
            train.caption_share,
            train.flips,
            train.vision_from,
            train.freeze_vision,
        )
        fitted = run.trainer.fit()
    run.vlm.network.eval()
    result = VLMTrainResult(
        run.vlm, fitted.steps, fitted.train_loss, fitted.elapsed_s, hardware=hardware.describe()
    )
    if out is not None:
        result.run_dir, result.final = run_dir, fitted.final
        record = {"model": asdict(run.vlm.config), "train": asdict(train), "steps": result.steps}
        record.update(train_loss=result.train_loss, seconds=result.seconds, hardware=result.hardware)
        atomic_write_text(run_dir / "run.json", json.dumps(record, indent=2, default=str))
    return result


def cider(predictions: Sequence[str], references: Sequence[Sequence[str]], n: int = 4) -> float:
    """CIDEr (Vedantam et al. 2015): per n, the cosine between TF-IDF vectors of a prediction's n-grams
    and each reference's (IDF over the references' images), averaged over references and n, ×10."""

    def grams(text: str, k: int) -> Counter:
        words = text.lower().split()
        return Counter(tuple(words[i : i + k]) for i in range(len(words) - k + 1))

    N = len(references)
    scores = [0.0] * len(predictions)
    for k in range(1, n + 1):
        df: Counter = Counter()
        for refs in references:
            df.update({g for r in refs for g in grams(r, k)})

        def vector(c: Counter, df: Counter = df) -> dict:
            total = sum(c.values()) or 1
            return {g: (v / total) * math.log(N / max(1.0, df[g])) for g, v in c.items()}

        for i, (pred, refs) in enumerate(zip(predictions, references, strict=True)):
            p = vector(grams(pred, k))
            p_norm = math.sqrt(sum(v * v for v in p.values()))
            sims = []
            for ref in refs:
                r = vector(grams(ref, k))
                r_norm = math.sqrt(sum(v * v for v in r.values()))
                dot = sum(v * r.get(g, 0.0) for g, v in p.items())
                sims.append(dot / (p_norm * r_norm) if p_norm and r_norm else 0.0)
            scores[i] += sum(sims) / len(sims) / n
    return 10 * sum(scores) / max(len(scores), 1)


@dataclass
class VLMEvalResult:
    accuracy: float  # exact match over every question, 0-1
    by_type: dict[str, float]  # exact match per question type
    counts: dict[str, int]
    caption_accuracy: float  # captions equal to "a {colour} {shape}"
    bleu: float  # corpus BLEU-3 of the captions, 0-100
    cider: float
    samples: list[tuple[int, str, str, str]]  # (image row, question, answer, expected)
    clip_score: float | None = None  # mean CLIPScore of the captions under a CLIP model, when given
    clip_score_reference: float | None = None  # the same for the reference captions

    def to_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def evaluate_vlm(
    vlm: VLM,
    data: ImageSet | None = None,
    batch_size: int = 256,
    limit: int | None = None,
    samples: int = 6,
    clip: CLIP | None = None,
) -> VLMEvalResult:
    """Exact-match accuracy (overall and per question type) and caption BLEU / CIDEr on easy-VQA's
    test split (or `data`); `limit` keeps the first N questions. With `clip`, also the captions' mean
    CLIPScore (Hessel et al. 2021: 2.5 · max(cos, 0)) beside the reference captions' under that model."""
    data = load_easy_vqa("test") if data is None else data
    questions = data.questions[:limit] if limit else data.questions
    if not questions:
        raise LMForgeError("no questions to evaluate")
    answers = _answer(vlm, [q for q, _, _ in questions], data, [r for _, _, r in questions], batch_size)
    right: Counter = Counter()
    counts: Counter = Counter()
    for (_, expected, _), got in zip(questions, answers, strict=True):
        kind = question_type(expected)
        counts[kind] += 1
        right[kind] += got == expected
    rows = list(range(len(data)))
    caps = _answer(vlm, [CAPTION_QUESTION] * len(rows), data, rows, batch_size)
    refs = data.captions
    from lmforge.eval.metrics.text import bleu

    step = max(1, len(questions) // max(samples, 1))
    scores = {}
    if clip is not None:
        from lmforge.multimodal.evaluate import clip_score_model

        scores["clip_score"] = float(clip_score_model(clip, data.images, caps).mean())
        scores["clip_score_reference"] = float(clip_score_model(clip, data.images, refs).mean())
    return VLMEvalResult(
        accuracy=sum(right.values()) / len(questions),
        by_type={k: right[k] / counts[k] for k in sorted(counts)},
        counts=dict(sorted(counts.items())),
        caption_accuracy=sum(c == r for c, r in zip(caps, refs, strict=True)) / len(rows),
        bleu=bleu(caps, refs, max_ngram_order=3),
        cider=cider(caps, [[r] for r in refs], n=3),
        samples=[(r, q, answers[i], a) for i, (q, a, r) in enumerate(questions) if i % step == 0][:samples],
        **scores,
    )


def _answer(vlm: VLM, questions: list[str], data: ImageSet, rows: list[int], batch_size: int) -> list[str]:
    out = []
    for i in range(0, len(questions), batch_size):
        chunk = rows[i : i + batch_size]
        images = list(data.images[chunk])
        out += vlm.ask(questions[i : i + batch_size], images, max_new_tokens=6)
    return out
