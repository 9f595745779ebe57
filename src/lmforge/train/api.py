"""The training capabilities as API functions: `pretrain`, `finetune`, `quickstart` and `merge_lora`.

```python
import lmforge
result = lmforge.pretrain("data/shakespeare", out="runs/gpt", preset="gpt-nano", steps=2000)
result = lmforge.finetune("smollm2", out="runs/sft", chat_data="chat.jsonl", lora=True, merge=True)
result = lmforge.pretrain("data/shakespeare", lmforge.PretrainConfig(steps=10), out="runs/x")
result.final, result.steps, result.val["bits_per_byte"], result.to_dict()
```
Options come as keywords, as one config object (`PretrainConfig`, `FinetuneConfig`, `QuickstartConfig`;
keywords given beside it win), or both; every option is validated before a model is loaded or data is
read. The CLI commands (`lmforge pretrain ...`) call these and print the result. Everything here runs
unchanged under `torchrun --nproc-per-node N`: only rank 0 writes and reports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lmforge import hardware
from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError
from lmforge.io.atomic import atomic_file, atomic_write_text
from lmforge.options import configure
from lmforge.train import checkpoint as ckpt
from lmforge.train import sources
from lmforge.train.batches import CLMBatches, ValSet, whole_text_val_set
from lmforge.train.config import (
    IMAGE_OBJECTIVES,
    FinetuneConfig,
    PretrainConfig,
    QuickstartConfig,
    check_context,
)
from lmforge.train.distributed import pick_device
from lmforge.train.logging import RunLogger
from lmforge.train.trainer import Trainer, TrainResult, calibrate_steps

if TYPE_CHECKING:
    from lmforge.multimodal.quickstart import ClipQuickstartResult
    from lmforge.multimodal.vlm_quickstart import VLMQuickstartResult

CLIP_MINUTES = 9.0  # quickstart's training time budget when --minutes is not given (LM: config.LM_MINUTES)
VLM_MINUTES = 9.0  # both stages of --recipe vlm (CLIP tower, then the VLM); evaluation adds ~0.3 min


def pretrain(
    data: str | Path, config: PretrainConfig | None = None, *, out: str | Path, **options: Any
) -> TrainResult:
    """Pretrain a model from scratch: a transformer on a `lmforge.prepare` directory, next-token (clm)
    or masked (mlm), or an image model on a dataset named by `data` (easy-vqa, fashion-mnist): CLIP
    (clip), the VLM (vlm) or a masked autoencoder (mae). Writes OUT/log.jsonl, OUT/plot.png,
    OUT/checkpoints/step-N, OUT/best and OUT/final."""
    start = time.perf_counter()
    cfg = configure(PretrainConfig, config, options, "pretrain")
    ckpt.check_run_dir(out, cfg.resume)
    if cfg.objective in IMAGE_OBJECTIVES:
        from lmforge.multimodal.pretrain import image_trainer

        trainer = image_trainer(str(data), cfg, out)
        if trainer.dist.is_main and cfg.progress:
            millions = sum(p.numel() for p in trainer.model.parameters()) / 1e6
            _say(f"model: {cfg.objective} ({millions:.2f}M parameters) on {data}")
        return dataclasses.replace(trainer.fit(), total_s=time.perf_counter() - start)
    tok = _shards_tokenizer(data, cfg.tokenizer)
    defaults = {"vocab_size": tok.vocab_size}
    if tok.pad_token_id is not None:
        defaults["pad_token_id"] = tok.pad_token_id
    model = _new_model(cfg.model_config(**defaults), cfg.seed)
    collator = None
    if cfg.objective == "mlm":
        from lmforge.data.loaders import MLMCollator

        collator = MLMCollator.for_tokenizer(tok, cfg.whole_word, cfg.mask_prob)
    batches = sources.shard_batches(data, tok, cfg, collator)
    identity = {
        "data": str(Path(data).resolve()),
        "tokenizer": tok.fingerprint,
        "objective": cfg.objective,
        "mask_prob": cfg.mask_prob,
        "whole_word": cfg.whole_word,
    }
    trainer = Trainer(
        model,
        cfg.training(),
        batches.train,
        out,
        batches.val,
        tok,
        _generation_config(tok),
        identity=identity,
    )
    if trainer.dist.is_main and cfg.progress:
        millions = model.num_parameters() / 1e6
        _say(f"model: {cfg.preset} ({millions:.2f}M parameters), {cfg.objective}, {batches.description}")
    return dataclasses.replace(trainer.fit(), total_s=time.perf_counter() - start)


def finetune(
    model: str | Path, config: FinetuneConfig | None = None, *, out: str | Path, **options: Any
) -> TrainResult:
    """Fine-tune a loadable model (asset name, checkpoint directory or .gguf): instruction tuning on
    chat JSONL, or continued pretraining on text or shards; all weights or LoRA adapters (a LoRA run
    saves only the adapter in OUT/final and, with `merge`, a merged checkpoint in OUT/merged)."""
    from lmforge.lm import load
    from lmforge.train import lora as lora_lib

    start = time.perf_counter()
    cfg = configure(FinetuneConfig, config, options, "finetune")
    ckpt.check_run_dir(out, cfg.resume)
    lm = load(model, dtype=torch.float32, device="cpu")
    tok = lm.tokenizer
    if tok is None:
        raise LMForgeError(f"{model} has no tokenizer; fine-tuning needs one")
    check_context(cfg.seq_len, lm.config.max_seq_len)
    torch.manual_seed(cfg.seed)
    lora = cfg.lora_config()
    if lora is not None:
        lora_lib.apply_lora(lm.model, lora)
    if cfg.qat != "none":
        from lmforge.quant import qat

        qat.prepare(lm.model, cfg.qat, cfg.group_size, cfg.symmetric)
    if cfg.chat_data:
        batches = sources.chat_batches(cfg.chat_data, tok, cfg, cfg.val_fraction)
    elif cfg.text:
        batches = sources.text_batches(cfg.text, tok, cfg, cfg.val_fraction)
    else:
        batches = sources.shard_batches(cfg.data, tok, cfg)
    data = cfg.chat_data or cfg.text or cfg.data
    identity = {
        "model": str(model),
        "data": str(data),
        "objective": cfg.objective,
        "val_fraction": cfg.val_fraction,
    }
    trainer = Trainer(
        lm.model,
        cfg.training(),
        batches.train,
        out,
        batches.val,
        tok,
        lm.generation_config,
        lora=lora,
        base_model=str(model),
        identity=identity,
    )
    if trainer.dist.is_main and cfg.progress:
        trainable = sum(p.numel() for p in lm.model.parameters() if p.requires_grad) / 1e6
        kind = "LoRA" if lora else "full"
        _say(f"fine-tuning {model} ({kind}, {trainable:.2f}M trainable parameters) on {batches.description}")
    result = trainer.fit()
    if cfg.merge and trainer.dist.is_main:
        lora_lib.merge_lora(lm.model)
        result.merged = lm.save(Path(out) / "merged")
    if cfg.qat != "none" and trainer.dist.is_main:
        quantized = qat.export(lm, Path(out) / cfg.qat, cfg.qat, cfg.group_size, cfg.symmetric)
        result = dataclasses.replace(result, quantized=quantized.out)
    return dataclasses.replace(result, total_s=time.perf_counter() - start)


def merge_lora(model: str | Path, adapter: str | Path, out: str | Path) -> Path:
    """Fold a LoRA adapter (OUT/final of a LoRA fine-tuning run) into its base model and write a plain
    checkpoint directory; returns its path."""
    from lmforge.lm import load
    from lmforge.train import lora as lora_lib

    lora_lib.read_adapter_config(adapter)  # a bad adapter directory fails before the model loads
    lm = load(model, dtype=torch.float32, device="cpu")
    lora_lib.load_adapter(lm.model, adapter)
    lora_lib.merge_lora(lm.model)
    return lm.save(out)


@dataclass
class QuickstartResult(TrainResult):
    """A quickstart's training result plus what it made around it."""

    tokenizer: Path | None = None
    data: Path | None = None
    samples: list[str] = field(default_factory=list)


def quickstart(
    config: QuickstartConfig | None = None, **options: Any
) -> QuickstartResult | ClipQuickstartResult | VLMQuickstartResult:
    """Train a byte-level BPE tokenizer on a text (default: Shakespeare), tokenize it, pretrain a small
    GPT for `minutes`, score bits/byte over the whole validation text (`val_text`, or the end of the
    text held out) and generate samples. OUT/tokenizer and OUT/data are reused while the text,
    vocabulary and seed are the same (and made again when they differ); each call trains a new OUT/run-N."""
    start = time.perf_counter()
    cfg = configure(QuickstartConfig, config, options, "quickstart")
    if cfg.recipe == "clip":
        from lmforge.multimodal.quickstart import clip_quickstart

        minutes = cfg.minutes or CLIP_MINUTES
        return clip_quickstart(cfg.out, cfg.seed, minutes, cfg.progress, dataset=cfg.dataset or "easy-vqa")
    if cfg.recipe == "vlm":
        from lmforge.multimodal.vlm_quickstart import vlm_quickstart

        minutes = cfg.minutes or VLM_MINUTES
        return vlm_quickstart(cfg.out, cfg.seed, minutes, cfg.progress, clip_fraction=cfg.clip_fraction)
    cfg = cfg.for_budget()
    minutes = cfg.minutes
    say = _say if cfg.progress else (lambda message: None)
    root = Path(cfg.out)
    train_text, val_text, where = sources.quickstart_texts(cfg.text, cfg.val_text, cfg.val_fraction)
    tok = _quickstart_tokenizer(root / "tokenizer", train_text, cfg, say)
    train_ids, val_ids = _quickstart_data(root / "data", tok, train_text, val_text, say)
    say(f"      text: {where}")
    if len(train_ids) <= cfg.seq_len:
        raise LMForgeError(
            f"the training text is too small for the context: {len(train_ids):,} tokens for --seq-len "
            f"{cfg.seq_len}; give more text or lower --seq-len"
        )
    run_dir = next(root / f"run-{i}" for i in range(1, 10_000) if not (root / f"run-{i}").exists())
    model = _new_model(cfg.model_config(vocab_size=tok.vocab_size, max_seq_len=cfg.seq_len), cfg.seed)
    train = cfg.training()
    train_batches = CLMBatches(
        torch.from_numpy(train_ids.astype(np.int64)), cfg.batch_size, cfg.seq_len, cfg.seed
    )
    token_bytes = np.array([len(tok.token_bytes(i)) for i in range(tok.vocab_size)], dtype=np.int64)
    context = tok.eos_token_id if tok.eos_token_id is not None else 0
    val_full = whole_text_val_set(val_ids, cfg.batch_size, cfg.seq_len, token_bytes, context)
    # periodic validation on the first batches (the whole text is scored once, at the end)
    n = min(4, len(val_full))
    val_sample = ValSet(val_full.batches[:n], val_full.num_bytes[:n])
    device = pick_device(cfg.device)
    precision = hardware.choose_precision(cfg.precision, device, cfg.precision_fallback).precision
    probe = {k: v.to(device) for k, v in train_batches.batch(0).items()}
    # a generous bound on the steps that fit (timings drift on a shared machine): the schedule follows
    # the clock (max_minutes) and ends the run on time
    steps = 3 * calibrate_steps(model.to(device), probe, minutes * 60, precision=precision)
    train = dataclasses.replace(
        train,
        steps=steps,
        warmup_steps=min(cfg.warmup_steps, steps // 10),
        eval_every=max(steps // 4, 1),
        max_minutes=minutes,
    )
    millions = model.num_parameters() / 1e6
    shape = model.config
    say(
        f"[3/4] pretraining a GPT of {shape.n_layer} layers x {shape.d_model} ({millions:.2f}M parameters; "
        f"{cfg.optimizer}, lr {cfg.lr:g}) for {minutes:g} min (at most {steps} steps of "
        f"{cfg.batch_size}x{cfg.seq_len} tokens) -> {run_dir}"
    )
    generation = _generation_config(tok)
    trainer = Trainer(model, train, train_batches, run_dir, val_sample, tok, generation)
    result = trainer.fit()
    trainer.val_data = val_full
    full = trainer.evaluate()
    full_record = {"kind": "val_full", "step": result.steps, "bytes": sum(val_full.num_bytes), **full}
    logger = RunLogger(run_dir, tensorboard=False)
    logger.log(full_record)
    logger.close()
    say(
        f"[4/4] validation over the whole text ({full_record['bytes']:,} bytes): "
        f"loss {full['loss']:.3f} nats/token, {full['bits_per_byte']:.3f} bits/byte"
    )
    samples = _samples(model.eval(), tok, generation, cfg, run_dir / "final")
    values = {f.name: getattr(result, f.name) for f in dataclasses.fields(TrainResult)}
    values.update(val=full, total_s=time.perf_counter() - start)
    return QuickstartResult(**values, tokenizer=root / "tokenizer", data=root / "data", samples=samples)


# -- pieces ----------------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _generation_config(tokenizer: Any) -> dict[str, int]:
    """The special-token ids generation needs, from the tokenizer a model was trained with."""
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return {k: v for k, v in ids.items() if v is not None}


def _new_model(config: ModelConfig, seed: int) -> torch.nn.Module:
    from lmforge.model import Transformer

    torch.manual_seed(seed)
    model = Transformer(config)
    model.init_weights(seed)
    return model


def _shards_tokenizer(data: str | Path, source: str | Path | None) -> Any:
    """The tokenizer of a prepared directory (the one its manifest names unless `source` is given),
    checked against the shards."""
    from lmforge.data.loaders import check_tokenizer
    from lmforge.data.shards import read_manifest
    from lmforge.tokenizer import Tokenizer

    source = source or read_manifest(data)["tokenizer"].get("source")
    if not source:
        raise LMForgeError(f"{data}/manifest.json names no tokenizer; pass --tokenizer")
    tok = Tokenizer.load(source)
    check_tokenizer(data, tok.fingerprint, tok.vocab_size)
    return tok


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8") if isinstance(part, str) else json.dumps(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def _quickstart_tokenizer(directory: Path, text: str, cfg: QuickstartConfig, say: Any) -> Any:
    """A byte-level BPE trained on the training text; reused while text, vocabulary and seed match."""
    from lmforge.tokenizer import Tokenizer
    from lmforge.tokenizer.train import train_tokenizer

    key = _digest(text, cfg.vocab_size, cfg.seed)
    stamp = directory / "quickstart.json"
    if (directory / "tokenizer.json").is_file() and stamp.is_file():
        if json.loads(stamp.read_text()).get("key") == key:
            tok = Tokenizer.from_dir(directory)
            say(f"[1/4] tokenizer: reusing {directory} ({tok.vocab_size} tokens)")
            return tok
        say(f"[1/4] tokenizer: {directory} was made from another text, vocabulary or seed: training again")
    start = time.perf_counter()
    tok = train_tokenizer(texts=[text], algorithm="bpe", vocab_size=cfg.vocab_size, show_progress=False)
    tok.save(directory)
    atomic_write_text(stamp, json.dumps({"key": key, "vocab_size": cfg.vocab_size, "seed": cfg.seed}))
    say(
        f"[1/4] tokenizer: trained byte-level BPE, {tok.vocab_size} tokens ({time.perf_counter() - start:.0f}s)"
    )
    return tok


def _quickstart_data(
    directory: Path, tok: Any, train_text: str, val_text: str, say: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The train and validation texts as token arrays (OUT/data/train.npy, val.npy), reused while the
    texts and the tokenizer match."""
    key = _digest(train_text, val_text, tok.fingerprint)
    stamp = directory / "quickstart.json"
    files = {"train": directory / "train.npy", "val": directory / "val.npy"}
    if stamp.is_file() and all(f.is_file() for f in files.values()):
        if json.loads(stamp.read_text()).get("key") == key:
            arrays = tuple(np.load(f, allow_pickle=False) for f in files.values())
            say(f"[2/4] data: reusing {directory} ({len(arrays[0]):,} train / {len(arrays[1]):,} val tokens)")
            return arrays
        say(f"[2/4] data: {directory} was made from another text or tokenizer: tokenizing again")
    start = time.perf_counter()
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
    arrays = []
    for name, text in (("train", train_text), ("val", val_text)):
        ids = np.asarray(tok.encode(text), dtype=dtype)
        with atomic_file(files[name], suffix=".npy") as tmp:
            np.save(tmp, ids)
        arrays.append(ids)
    atomic_write_text(stamp, json.dumps({"key": key, "tokenizer": tok.fingerprint}))
    say(
        f"[2/4] data: {len(arrays[0]):,} train / {len(arrays[1]):,} val tokens "
        f"({time.perf_counter() - start:.0f}s)"
    )
    return arrays[0], arrays[1]


def _samples(
    model: torch.nn.Module, tok: Any, generation: dict, cfg: QuickstartConfig, final: Path
) -> list[str]:
    """`cfg.samples` sampled continuations of the prompt (temperature 0.8, top-k 50), prompt included."""
    from lmforge.lm import LM

    lm = LM(model, tok, generation, source=str(final))
    texts = []
    for i in range(cfg.samples):
        completion = lm.generate(
            cfg.prompt,
            max_new_tokens=cfg.max_new_tokens,
            do_sample=True,
            temperature=0.8,
            top_k=50,
            seed=cfg.seed + i,
        )
        texts.append(cfg.prompt + completion.text)
    return texts
