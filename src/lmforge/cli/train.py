"""Training commands: `lmforge pretrain`, `lmforge finetune`, `lmforge lora merge`, `lmforge quickstart`.

`pretrain` and `finetune` take every `TrainConfig` field as an option (`--lr`, `--grad-accum`,
`--precision`, ...), appended from the dataclass so the CLI never lags behind the Trainer; `--config
run.yaml` holds the same keys. All of them run unchanged under `torchrun --nproc-per-node N`.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from lmforge.errors import LMForgeError

TRAIN_HELP = {
    "steps": "optimizer steps to train for.",
    "batch_size": "sequences per micro-batch (per process).",
    "grad_accum": "micro-batches accumulated per optimizer step.",
    "seq_len": "tokens per training sequence (at most the model's context).",
    "lr": "peak learning rate.",
    "min_lr": "learning rate at the end of the decay (default: lr / 10).",
    "warmup_steps": "linear warmup steps.",
    "schedule": "decay after warmup.",
    "weight_decay": "decoupled AdamW weight decay (matrices only; none on norms, biases, embeddings).",
    "beta1": "AdamW beta1.",
    "beta2": "AdamW beta2.",
    "eps": "AdamW epsilon.",
    "grad_clip": "clip the global gradient norm to this (0: no clipping; the norm is logged either way).",
    "label_smoothing": "label smoothing of the cross-entropy.",
    "precision": "fp32 (CPU default), or bf16/fp16 autocast (fp16 with loss scaling).",
    "compile": "torch.compile the model.",
    "seed": "seed of initialisation, data order, masking and dropout.",
    "eval_every": "validate every N steps (0: only at the end).",
    "eval_batches": "validation batches per evaluation.",
    "save_every": "checkpoint every N steps (0: only at the end).",
    "keep_last": "periodic checkpoints to keep.",
    "log_every": "write a training record every N steps.",
    "max_minutes": "stop (and checkpoint) after this many minutes of training.",
    "device": "cpu, cuda, cuda:1, ... (default: cuda if available).",
    "distributed": "under torchrun: ddp (replicated model) or fsdp (sharded).",
    "progress": "show a progress bar (or periodic lines when not on a terminal).",
    "tensorboard": "also log to TensorBoard when it is installed.",
}


def _with_train_options(fn: Callable) -> Callable:
    """Append every TrainConfig field not already in `fn`'s signature as a keyword option."""
    from lmforge.train.trainer import TrainConfig

    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    annotations = typing.get_type_hints(fn)
    hints = typing.get_type_hints(TrainConfig)
    taken = {p.name for p in params}
    lines = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in taken or f.name == "objective":
            continue
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name]
            )
        )
        annotations[f.name] = hints[f.name]
        lines.append(f"    {f.name}: {TRAIN_HELP.get(f.name, f.name.replace('_', ' '))}")
    fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    fn.__annotations__ = annotations
    fn.__doc__ = (inspect.getdoc(fn) or "") + "\n" + "\n".join(lines)
    return fn


def _train_config(objective: str, values: dict[str, Any]):
    from lmforge.train.trainer import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(objective=objective, **{k: v for k, v in values.items() if k in names})


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _generation_config(tokenizer) -> dict[str, int]:
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return {k: v for k, v in ids.items() if v is not None}


def _val_from_shards(data: str, split_sampler_args: dict[str, Any], eval_batches: int, tokenizer):
    """Fixed validation batches: the first sequential windows of the val split (None if too short)."""
    from lmforge.data.loaders import CLMBatchSampler
    from lmforge.train.batches import ValSet

    try:
        sampler = CLMBatchSampler(data, split="val", mode="sequential", **split_sampler_args)
    except LMForgeError as exc:
        _say(f"no validation: {exc}")
        return None
    batches, num_bytes = [], []
    for g in range(min(eval_batches, sampler.batches_per_epoch())):
        x, y = sampler.batch(g)
        batches.append({"input_ids": x, "labels": y})
        if tokenizer is not None:
            num_bytes.append(sum(len(tokenizer.decode(row.tolist()).encode("utf-8")) for row in y))
    return ValSet(batches, num_bytes)


def _mlm_collator(tokenizer, whole_word: bool, mask_prob: float):
    from lmforge.data.loaders import MLMCollator, word_continuation_table

    mask_id = tokenizer.special_tokens.get("mask_token")
    mask_id = tokenizer.token_to_id(mask_id) if mask_id else tokenizer.token_to_id("[MASK]")
    if mask_id is None:
        raise LMForgeError("masked-LM pretraining needs a tokenizer with a mask token ([MASK])")
    continuation = (
        word_continuation_table(tokenizer.get_vocab(), tokenizer.vocab_size) if whole_word else None
    )
    return MLMCollator(
        mask_token_id=mask_id,
        vocab_size=tokenizer.vocab_size,
        special_token_ids=tokenizer.all_special_ids,
        mlm_probability=mask_prob,
        whole_word=whole_word,
        continuation=continuation,
    )


def _report(summary: dict[str, Any]) -> None:
    val = summary.get("val") or {}
    shown = ", ".join(f"{k} {v:.4f}" for k, v in val.items() if isinstance(v, float))
    _say(
        f"done: {summary['steps']} steps, train loss {summary['train_loss']:.4f}"
        + (f"; validation {shown}" if shown else "")
    )
    _say(f"run directory: {summary['run_dir']} (final/ loads with lmforge.load)")


@_with_train_options
def pretrain(
    data: str,
    *,
    out: str,
    objective: Literal["clm", "mlm"] = "clm",
    tokenizer: str | None = None,
    preset: str = "gpt-tiny",
    model_overrides: dict | None = None,
    n_layer: int | None = None,
    n_head: int | None = None,
    d_model: int | None = None,
    dropout: float | None = None,
    whole_word: bool = False,
    mask_prob: float = 0.15,
    resume: bool = False,
    **train: Any,
) -> dict:
    """Pretrain a transformer from scratch on prepared shards: next-token (clm) or masked (mlm).

    Writes OUT/log.jsonl, OUT/plot.png, OUT/checkpoints/step-N (with trainer state), OUT/best and
    OUT/final (checkpoint directories `lmforge.load` reads). `--resume` continues OUT exactly.

    Args:
        data: directory written by `lmforge prepare`.
        out: run directory.
        objective: clm (causal next-token) or mlm (BERT masking; needs an encoder preset like bert-tiny).
        tokenizer: tokenizer the shards were made with (default: the one the manifest names).
        preset: model preset (gpt-nano, gpt-tiny, llama-nano, llama-tiny, bert-tiny, gpt2-small).
        model_overrides: any ModelConfig fields as JSON, e.g. '{"position": "rope", "norm": "rmsnorm"}'.
        n_layer: transformer blocks (overrides the preset).
        n_head: attention heads (overrides the preset).
        d_model: model width (overrides the preset).
        dropout: residual/embedding and attention dropout (overrides the preset).
        whole_word: mlm: mask whole words.
        mask_prob: mlm: fraction of tokens selected for masking.
        resume: continue the run in OUT from its latest checkpoint.
    """
    from lmforge.config import ModelConfig
    from lmforge.data.loaders import CLMBatchSampler, check_tokenizer
    from lmforge.data.shards import read_manifest
    from lmforge.model import Transformer
    from lmforge.tokenizer import Tokenizer
    from lmforge.train.batches import ShardBatches
    from lmforge.train.trainer import Trainer

    cfg = _train_config(objective, train)
    manifest = read_manifest(data)
    source = tokenizer or manifest["tokenizer"].get("source")
    if not source:
        raise LMForgeError(f"{data}/manifest.json names no tokenizer; pass --tokenizer")
    tok = Tokenizer.load(source)
    check_tokenizer(data, tok.fingerprint, tok.vocab_size)

    overrides: dict[str, Any] = {"vocab_size": tok.vocab_size, **(model_overrides or {})}
    for name, value in {"n_layer": n_layer, "n_head": n_head, "d_model": d_model}.items():
        if value is not None:
            overrides[name] = value
    if dropout is not None:
        overrides.update(dropout=dropout, attn_dropout=dropout)
    if tok.pad_token_id is not None:
        overrides.setdefault("pad_token_id", tok.pad_token_id)
    model_config = ModelConfig.preset(preset, **overrides)
    if objective == "mlm" and model_config.head != "mlm":
        raise LMForgeError(
            f"--objective mlm needs an encoder with an MLM head (e.g. --preset bert-tiny), not {preset}"
        )
    if objective == "clm" and not model_config.causal:
        raise LMForgeError(f"--objective clm needs a causal decoder preset, not {preset}")
    torch.manual_seed(cfg.seed)
    model = Transformer(model_config)
    model.init_weights(cfg.seed)

    window = cfg.seq_len - 1 if objective == "mlm" else cfg.seq_len  # mlm rows are x + last target
    sampler_args = {"batch_size": cfg.batch_size, "seq_len": window, "seed": cfg.seed}
    sampler = CLMBatchSampler(data, split="train", mode="random", fingerprint=tok.fingerprint, **sampler_args)
    collator = _mlm_collator(tok, whole_word, mask_prob) if objective == "mlm" else None
    train_data = ShardBatches(sampler, collator, cfg.seed)
    if objective == "mlm":
        val_sampler = ShardBatches(
            CLMBatchSampler(data, split="val", mode="sequential", **sampler_args), collator, cfg.seed + 1
        )
        from lmforge.train.batches import mlm_val_set

        n_val = min(cfg.eval_batches, val_sampler.sampler.batches_per_epoch())
        val = mlm_val_set(val_sampler, n_val)
    else:
        val = _val_from_shards(data, sampler_args, cfg.eval_batches, tok)
    identity = {
        "data": str(Path(data).resolve()),
        "tokenizer": tok.fingerprint,
        "mask_prob": mask_prob,
        "whole_word": whole_word,
    }
    trainer = Trainer(model, cfg, train_data, out, val, tok, _generation_config(tok), identity=identity)
    n = model.num_parameters()
    if trainer.dist.is_main:
        _say(
            f"model: {preset} ({n / 1e6:.2f}M parameters), {objective}, data {data} ({sampler.tokens:,} train tokens)"
        )
    summary = trainer.fit(resume=resume)
    if trainer.dist.is_main:
        _report(summary)
    return summary


def _text_tokens(tokenizer, inputs: list[str]) -> list[int]:
    """Documents of text inputs (files, directories, JSONL, built-in corpora) joined by EOS."""
    from lmforge.data.corpus import read_corpus

    eos = tokenizer.eos_token_id
    docs = read_corpus(inputs)
    ids: list[int] = []
    for tokens in tokenizer.encode_batch([d.text for d in docs]):
        ids.extend(tokens)
        if eos is not None:
            ids.append(eos)
    return ids


@_with_train_options
def finetune(
    *,
    model: str,
    out: str,
    chat_data: str | None = None,
    text: list[str] | None = None,
    data: str | None = None,
    val_fraction: float = 0.1,
    lora: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16.0,
    lora_dropout: float = 0.0,
    lora_targets: list[str] | None = None,
    merge: bool = False,
    dropout: float | None = None,
    resume: bool = False,
    steps: int = 100,
    batch_size: int = 4,
    seq_len: int = 512,
    lr: float = 2e-4,
    warmup_steps: int = 10,
    weight_decay: float = 0.0,
    eval_every: int = 50,
    **train: Any,
) -> dict:
    """Fine-tune a loadable model: instruction tuning on chat JSONL, or continued pretraining on text.

    Full fine-tuning or LoRA (`--lora`); LoRA runs save only the adapter (OUT/final/adapter_model.safetensors)
    and, with `--merge`, also OUT/merged, a plain checkpoint with the adapter folded in.

    Args:
        model: asset name (smollm2), checkpoint directory or .gguf file.
        out: run directory.
        chat_data: JSONL file of {"messages": [{"role": ..., "content": ...}, ...]}; loss on assistant tokens only.
        text: text files, directories, .jsonl or built-in corpora for continued pretraining.
        data: a `lmforge prepare` directory made with the model's tokenizer (continued pretraining).
        val_fraction: share of the examples (or tokens) held out for validation; 0 validates on the training examples.
        lora: train LoRA adapters instead of all weights.
        lora_rank: LoRA rank r.
        lora_alpha: LoRA alpha (the update is scaled by alpha / r).
        lora_dropout: dropout on the LoRA input.
        lora_targets: modules to adapt: q k v qkv o mlp, or globs over module names (default: q v).
        merge: LoRA: also write OUT/merged with the adapters merged into the weights.
        dropout: set the model's dropout for training.
        resume: continue the run in OUT from its latest checkpoint.
        steps: optimizer steps.
        batch_size: sequences per micro-batch.
        seq_len: longest training sequence (conversations are cut to it).
        lr: peak learning rate.
        warmup_steps: linear warmup steps.
        weight_decay: decoupled AdamW weight decay.
        eval_every: validate every N steps (0: only at the end).
    """
    from lmforge.lm import load
    from lmforge.train import lora as lora_lib
    from lmforge.train import sft
    from lmforge.train.batches import CLMBatches, SFTBatches, ShardBatches, clm_val_set, sft_val_set
    from lmforge.train.trainer import Trainer

    sources = [s for s in (chat_data, text, data) if s]
    if len(sources) != 1:
        raise LMForgeError("pass exactly one of --chat-data, --text or --data")
    if not 0.0 <= val_fraction < 1.0:
        raise LMForgeError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    objective = "sft" if chat_data else "clm"
    cfg = _train_config(
        objective,
        {
            **train,
            "steps": steps,
            "batch_size": batch_size,
            "seq_len": seq_len,
            "lr": lr,
            "warmup_steps": warmup_steps,
            "weight_decay": weight_decay,
            "eval_every": eval_every,
        },
    )
    lm = load(model, dtype=torch.float32, device="cpu")
    tok = lm.tokenizer
    if tok is None:
        raise LMForgeError(f"{model} has no tokenizer; fine-tuning needs one")
    if cfg.seq_len > lm.config.max_seq_len:
        raise LMForgeError(f"--seq-len {cfg.seq_len} exceeds the model's context of {lm.config.max_seq_len}")
    net = lm.model
    if dropout is not None:
        net.config.dropout = net.config.attn_dropout = dropout
        for m in net.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = dropout
    torch.manual_seed(cfg.seed)
    lora_config = None
    if lora:
        lora_config = lora_lib.LoRAConfig(
            lora_rank, lora_alpha, lora_dropout, list(lora_targets or ["q", "v"])
        )
        lora_lib.apply_lora(net, lora_config)
    elif merge:
        raise LMForgeError("--merge only applies to --lora runs")

    val = None
    if chat_data:
        examples = sft.build_examples(tok, sft.read_chat_jsonl(chat_data), cfg.seq_len + 1)
        n_val = int(len(examples) * val_fraction)
        train_examples, val_examples = examples[n_val:] or examples, examples[:n_val]
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        train_data = SFTBatches(train_examples, cfg.batch_size, pad, cfg.seed)
        val = sft_val_set(val_examples or train_examples, cfg.batch_size, pad)
        what = f"{len(train_examples)} conversations"
    elif text:
        ids = torch.tensor(_text_tokens(tok, text), dtype=torch.long)
        n_val = int(len(ids) * val_fraction)
        train_ids = ids[: len(ids) - n_val]
        train_data = CLMBatches(train_ids, cfg.batch_size, cfg.seq_len, cfg.seed)
        if n_val > cfg.seq_len:
            val = clm_val_set(ids[len(ids) - n_val :], cfg.batch_size, cfg.seq_len, cfg.eval_batches, tok)
        what = f"{len(train_ids):,} tokens of text"
    else:
        from lmforge.data.loaders import CLMBatchSampler

        args = {"batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "seed": cfg.seed}
        sampler = CLMBatchSampler(data, split="train", mode="random", fingerprint=tok.fingerprint, **args)
        train_data = ShardBatches(sampler)
        val = _val_from_shards(data, args, cfg.eval_batches, tok)
        what = f"{sampler.tokens:,} tokens of shards"
    identity = {"model": str(model), "data": str(chat_data or text or data), "val_fraction": val_fraction}
    trainer = Trainer(
        net,
        cfg,
        train_data,
        out,
        val,
        tok,
        lm.generation_config,
        lora=lora_config,
        base_model=str(model),
        identity=identity,
    )
    if trainer.dist.is_main:
        trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
        _say(
            f"fine-tuning {model} ({'LoRA' if lora else 'full'}, {trainable / 1e6:.2f}M trainable parameters) "
            f"on {what}"
        )
    summary = trainer.fit(resume=resume)
    if trainer.dist.is_main:
        if merge:
            lora_lib.merge_lora(net)
            lm.save(Path(out) / "merged")
            _say(f"wrote {Path(out) / 'merged'} (adapters merged)")
        _report(summary)
    return summary


def lora_merge(*, model: str, adapter: str, out: str) -> str:
    """Merge a LoRA adapter into its base model and write a plain checkpoint directory.

    Args:
        model: the base model the adapter was trained on (asset name, directory or .gguf).
        adapter: adapter directory (OUT/final of a `finetune --lora` run).
        out: output checkpoint directory.
    """
    from lmforge.lm import load
    from lmforge.train import lora as lora_lib

    lm = load(model, dtype=torch.float32, device="cpu")
    lora_lib.load_adapter(lm.model, adapter)
    lora_lib.merge_lora(lm.model)
    path = lm.save(out)
    print(f"wrote {path} ({model} + {adapter})")
    return str(path)


def _calibrate_steps(trainer, batch, seconds: float) -> int:
    """Optimizer steps that fit in `seconds`, from the fastest of a few timed forward/backward passes
    (after two warm-up passes); `max_minutes` still stops the run if the machine gets busier."""
    model = trainer.model
    times = []
    for i in range(6):
        start = time.perf_counter()
        logits = model(batch["input_ids"])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten()).backward()
        if i >= 2:
            times.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    per_step = min(times) * trainer.config.grad_accum * 1.25  # + optimizer step, logging, validation
    return max(10, int(seconds / per_step))


def quickstart(
    out: str = "runs/quickstart",
    minutes: float = 4.0,
    vocab_size: int = 4096,
    preset: str = "gpt-tiny",
    n_layer: int | None = None,
    n_head: int | None = None,
    d_model: int | None = None,
    seq_len: int = 128,
    batch_size: int = 16,
    lr: float = 3e-3,
    samples: int = 2,
    max_new_tokens: int = 120,
    prompt: str = "ROMEO:",
    seed: int = 1337,
    device: str | None = None,
) -> dict:
    """Train a BPE tokenizer on Shakespeare, prepare shards, pretrain a small GPT for a few minutes,
    report validation bits-per-byte and print samples.

    Re-running reuses OUT/tokenizer and OUT/data and trains a new OUT/run-N.

    Args:
        out: working directory (tokenizer/, data/, run-N/).
        minutes: training time budget (the schedule is sized to end within it).
        vocab_size: BPE vocabulary size.
        preset: model preset (gpt-tiny: 4 layers, 128 wide; gpt-nano: nanoGPT's 6 x 384).
        n_layer: override the preset's number of blocks.
        n_head: override the preset's attention heads.
        d_model: override the preset's width.
        seq_len: context length trained on.
        batch_size: sequences per step.
        lr: peak learning rate.
        samples: samples to print at the end.
        max_new_tokens: tokens per sample.
        prompt: text the samples start from.
        seed: seed of everything.
        device: cpu or cuda (default: cuda if available).
    """
    from lmforge.config import ModelConfig
    from lmforge.data.loaders import CLMBatchSampler
    from lmforge.data.pipeline import PrepareOptions
    from lmforge.data.pipeline import prepare as run_prepare
    from lmforge.model import Transformer
    from lmforge.tokenizer import Tokenizer
    from lmforge.tokenizer.train import train_tokenizer
    from lmforge.train.batches import ShardBatches
    from lmforge.train.trainer import TrainConfig, Trainer

    t0 = time.perf_counter()
    root = Path(out)
    tok_dir, data_dir = root / "tokenizer", root / "data"
    if (tok_dir / "tokenizer.json").is_file():
        tok = Tokenizer.from_dir(tok_dir)
        _say(f"[1/4] tokenizer: reusing {tok_dir} ({tok.vocab_size} tokens)")
    else:
        tok = train_tokenizer(["shakespeare-train"], "bpe", vocab_size, show_progress=False, output=tok_dir)
        _say(
            f"[1/4] tokenizer: trained byte-level BPE, {tok.vocab_size} tokens ({time.perf_counter() - t0:.0f}s)"
        )
    t1 = time.perf_counter()
    if (data_dir / "manifest.json").is_file():
        _say(f"[2/4] data: reusing {data_dir}")
    else:
        report = run_prepare(
            ["shakespeare-train"], tok, data_dir, PrepareOptions(seed=seed), tokenizer_source=str(tok_dir)
        )
        splits = report["splits"]
        _say(
            f"[2/4] data: {report['kept']['documents']} documents -> {splits['train']['tokens']:,} train / "
            f"{splits['val']['tokens']:,} val tokens ({time.perf_counter() - t1:.0f}s)"
        )
    run_dir = next(root / f"run-{i}" for i in range(1, 10_000) if not (root / f"run-{i}").exists())
    overrides = {k: v for k, v in {"n_layer": n_layer, "n_head": n_head, "d_model": d_model}.items() if v}
    model_config = ModelConfig.preset(preset, vocab_size=tok.vocab_size, max_seq_len=seq_len, **overrides)
    torch.manual_seed(seed)
    model = Transformer(model_config)
    model.init_weights(seed)
    args = {"batch_size": batch_size, "seq_len": seq_len, "seed": seed}
    sampler = CLMBatchSampler(data_dir, split="train", mode="random", fingerprint=tok.fingerprint, **args)
    val = _val_from_shards(str(data_dir), args, 16, tok)
    cfg = TrainConfig(
        steps=1,
        batch_size=batch_size,
        seq_len=seq_len,
        lr=lr,
        warmup_steps=0,
        seed=seed,
        device=device,
        eval_batches=16,
        tensorboard=False,
    )
    probe = Trainer(model, cfg, ShardBatches(sampler), run_dir, val, tok)
    # a generous bound on the steps that fit (timings drift on a shared machine); the schedule follows
    # the clock (max_minutes) and ends the run on time
    steps = 3 * _calibrate_steps(probe, probe._to_device(ShardBatches(sampler).batch(0)), minutes * 60)
    cfg = dataclasses.replace(
        cfg,
        steps=steps,
        warmup_steps=min(100, steps // 10),
        eval_every=max(steps // 4, 1),
        max_minutes=minutes,
    )
    n_params = model.num_parameters()
    _say(
        f"[3/4] pretraining {preset} ({n_params / 1e6:.2f}M parameters) for {minutes:g} min "
        f"(at most {steps} steps of {batch_size}x{seq_len} tokens) -> {run_dir}"
    )
    trainer = Trainer(model, cfg, ShardBatches(sampler), run_dir, val, tok, _generation_config(tok))
    summary = trainer.fit()
    from lmforge.generate import generate
    from lmforge.lm import LM

    lm = LM(trainer.model.eval(), tok, _generation_config(tok), source=str(run_dir / "final"))
    bpb = summary["val"].get("bits_per_byte")
    _say(f"[4/4] validation: loss {summary['val']['loss']:.3f} nats/token, {bpb:.3f} bits/byte; samples:")
    texts = []
    for i in range(samples):
        completion = generate(
            lm,
            prompt,
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=0.8,
            top_k=50,
            seed=seed + i,
        )
        texts.append(prompt + completion.text)
        print(f"--- sample {i + 1} ---\n{texts[-1]}\n", flush=True)
    total = time.perf_counter() - t0
    _say(
        f"done in {total / 60:.1f} min; model: {run_dir / 'final'} (lmforge generate --model {run_dir / 'final'})"
    )
    return {**summary, "samples": texts, "total_s": total}


COMMANDS = {"pretrain": pretrain, "finetune": finetune, "lora merge": lora_merge, "quickstart": quickstart}
