"""Training and evaluation of the VLM on easy-VQA: `train_vlm`, `evaluate_vlm`.

Training (the same parts as the CLIP trainer: AdamW with decay on matrices, warmup + cosine, the
JSONL log and loss plot, an atomic checkpoint): each step draws a batch of (image, question, answer)
samples from the train split, a `caption_share` of them captions (`describe the image.` →
`a red circle`), flips the images at random (a flip keeps a shape's name and colour), and minimises the
cross-entropy of the answer tokens and the closing `</s>` only: the image prefix and the question are
context, never targets. With `minutes`, the schedule is sized to the budget from the pace so far
(re-estimated every 20 steps). The test split is never read here.

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
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from lmforge import hardware
from lmforge.errors import LMForgeError
from lmforge.io.atomic import atomic_write_text
from lmforge.multimodal.data import COLOURS, SHAPES, ImageSet, caption, load_easy_vqa
from lmforge.multimodal.vlm import CAPTION_QUESTION, VLM, VLMConfig, prompt_text, train_vlm_tokenizer
from lmforge.options import check_types, option
from lmforge.train.logging import RunLogger
from lmforge.train.optim import LRSchedule, build_optimizer

CALIBRATION_STEPS = 20


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
    minutes: float | None = option(None, "stop after this many minutes of training (none: run every step)")
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
    P = vlm.config.prefix_length
    prefix = vlm.network.image_prefix(images).repeat_interleave(repeat, dim=0)  # (B, P, C)
    logits = vlm.network.decoder(ids, inputs_embeds=prefix)[:, P:]  # (B, T, V): the token positions
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100
    )


def _flip(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    horizontal = torch.rand(images.shape[0], generator=g) < 0.5
    vertical = torch.rand(images.shape[0], generator=g) < 0.5
    images = torch.where(horizontal[:, None, None, None], images.flip(-1), images)
    return torch.where(vertical[:, None, None, None], images.flip(-2), images)


def train_vlm(
    model: VLMConfig | None = None,
    train: VLMTrainConfig | None = None,
    out: str | Path | None = None,
    data: ImageSet | None = None,
    progress: bool = True,
) -> VLMTrainResult:
    """Train a VLM on easy-VQA's train split (or on `data`) to answer its questions and caption.

    With `out`, writes OUT/log.jsonl, OUT/plot.png, OUT/run.json and the model as OUT/final."""
    model = model or VLMConfig()
    train = train or VLMTrainConfig()
    data = load_easy_vqa("train") if data is None else data
    if data.images.shape[-1] != model.image_size:
        raise LMForgeError(
            f"the images are {data.images.shape[-1]}x{data.images.shape[-2]} but the model takes "
            f"{model.image_size}x{model.image_size}; set image_size to match"
        )
    if train.train_images is not None:
        data = data.subset(range(min(train.train_images, len(data))))
    if not data.questions:
        raise LMForgeError("the training images have no questions")
    vlm = VLM.create(model, train_vlm_tokenizer(training_texts(data)), train.seed, train.vision_from)
    if train.freeze_vision:
        vlm.network.visual.requires_grad_(False)
    captions = [(CAPTION_QUESTION, c, r) for r, c in enumerate(data.captions)]
    ids_all, targets_all = encode_samples(vlm, data.questions + captions)  # captions last: row r at Q + r
    n_questions = len(data.questions)
    by_image: list[list[int]] = [[] for _ in range(len(data))]
    for i, (_, _, r) in enumerate(data.questions):
        by_image[r].append(i)
    asked = [r for r in range(len(data)) if by_image[r]]
    k = min(train.questions_per_image, train.batch_size)
    n_images = max(1, train.batch_size // k)
    rng = random.Random(train.seed)
    optimizer = build_optimizer(vlm.network, train.lr, train.weight_decay, betas=(0.9, 0.98))
    warmup = min(train.warmup_steps, train.steps)
    schedule = LRSchedule(train.lr, train.steps, warmup, "cosine", train.lr / 10)
    g = torch.Generator().manual_seed(train.seed)
    logger = RunLogger(out, tensorboard=False) if out is not None else None
    start = time.perf_counter()
    loss_value, step, total = math.nan, 0, train.steps
    for step in range(train.steps):
        if train.minutes is not None and step >= CALIBRATION_STEPS and step % CALIBRATION_STEPS == 0:
            # size the schedule to the budget from the pace so far, again every CALIBRATION_STEPS steps
            # (on a shared machine the pace drifts: a fixed estimate would end early or overrun)
            pace = (time.perf_counter() - start) / step
            total = max(step + 1, min(train.steps, int(train.minutes * 60 / pace)))
            schedule = LRSchedule(train.lr, total, min(warmup, total), "cosine", train.lr / 10)
        vlm.network.train()
        lr = schedule.apply(optimizer, step)
        rows = rng.sample(asked, min(n_images, len(asked)))
        picks = [
            n_questions + r if rng.random() < train.caption_share else rng.choice(by_image[r])
            for r in rows
            for _ in range(k)
        ]
        ids, targets = ids_all[picks], targets_all[picks]
        width = int((ids != vlm.tokenizer.pad_token_id).sum(1).max())  # drop all-padding columns
        images = data.float_images(torch.tensor(rows))
        if train.flips:
            images = _flip(images, g)
        loss = answer_loss(vlm, images, ids[:, :width], targets[:, :width], repeat=k)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(vlm.network.parameters(), 1.0))
        optimizer.step()
        loss_value = float(loss.detach())
        elapsed = time.perf_counter() - start
        last = step + 1 == total or (train.minutes is not None and elapsed > train.minutes * 60)
        if (step + 1) % train.log_every == 0 or last:
            record = {"kind": "train", "step": step + 1, "loss": loss_value, "lr": lr, "grad_norm": grad_norm}
            if logger is not None:
                logger.log(record)
            if progress:
                print(
                    f"step {step + 1}/{total}: answer loss {loss_value:.4f}, {(step + 1) / elapsed:.1f} steps/s",
                    file=sys.stderr,
                    flush=True,
                )
        if last:
            break
    seconds = time.perf_counter() - start
    vlm.network.eval()
    result = VLMTrainResult(vlm, step + 1, loss_value, seconds, hardware=hardware.describe())
    if out is not None:
        out = Path(out)
        result.run_dir, result.final = out, vlm.save(out / "final")
        logger.plot()
        logger.close()
        run = {"model": asdict(vlm.config), "train": asdict(train), "steps": result.steps}
        run.update(train_loss=loss_value, seconds=seconds, hardware=result.hardware)
        atomic_write_text(out / "run.json", json.dumps(run, indent=2, default=str))
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

    def to_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def evaluate_vlm(
    vlm: VLM, data: ImageSet | None = None, batch_size: int = 256, limit: int | None = None, samples: int = 6
) -> VLMEvalResult:
    """Exact-match accuracy (overall and per question type) and caption BLEU / CIDEr on easy-VQA's
    test split (or `data`); `limit` keeps the first N questions."""
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
    return VLMEvalResult(
        accuracy=sum(right.values()) / len(questions),
        by_type={k: right[k] / counts[k] for k in sorted(counts)},
        counts=dict(sorted(counts.items())),
        caption_accuracy=sum(c == r for c, r in zip(caps, refs, strict=True)) / len(rows),
        bleu=bleu(caps, refs, max_ngram_order=3),
        cider=cider(caps, [[r] for r in refs], n=3),
        samples=[(r, q, answers[i], a) for i, (q, a, r) in enumerate(questions) if i % step == 0][:samples],
    )


def _answer(vlm: VLM, questions: list[str], data: ImageSet, rows: list[int], batch_size: int) -> list[str]:
    out = []
    for i in range(0, len(questions), batch_size):
        chunk = rows[i : i + batch_size]
        images = list(data.images[chunk])
        out += vlm.ask(questions[i : i + batch_size], images, max_new_tokens=6)
    return out
