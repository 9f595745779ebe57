"""The Trainer: one loop for causal-LM pretraining, masked-LM pretraining and (instruction) fine-tuning.

The objective lives in the batches (`labels`, -100 = no loss): next-token windows, BERT-masked
windows, or chat examples with loss on assistant tokens only. The loop itself does gradient
accumulation, clipping (the pre-clip norm is logged), bf16/fp16 autocast (fp16 with a GradScaler),
label smoothing, periodic validation (loss, perplexity, bits-per-byte), JSONL/TensorBoard logs, a
progress bar with tokens/s, MFU and ETA, and atomic checkpoints with exact resume.

Exact resume: batches are a pure function of the micro-batch index (train/batches.py), the schedule a
pure function of the step, and the checkpoint holds weights, optimizer, scaler and every RNG state, so
a run killed and resumed logs the same losses as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import LMForgeError
from lmforge.train import checkpoint as ckpt
from lmforge.train import distributed as dist_lib
from lmforge.train.batches import IGNORE, BatchSource, ValSet
from lmforge.train.logging import RunLogger
from lmforge.train.lora import LoRAConfig
from lmforge.train.optim import LRSchedule, build_optimizer

Precision = Literal["fp32", "bf16", "fp16"]
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    """Every training setting; the CLI exposes each as a flag (and a YAML key)."""

    objective: Literal["clm", "mlm", "sft"] = "clm"
    steps: int = 1000  # optimizer steps
    batch_size: int = 8  # sequences per micro-batch (per process)
    grad_accum: int = 1  # micro-batches per optimizer step
    seq_len: int = 256
    lr: float = 1e-3
    min_lr: float | None = None  # None: lr / 10
    warmup_steps: int = 100
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global L2 norm; 0 = no clipping (the norm is still logged)
    label_smoothing: float = 0.0
    precision: Precision = "fp32"
    compile: bool = False
    seed: int = 1337
    eval_every: int = 200  # steps; 0 = only at the end
    eval_batches: int = 20
    save_every: int = 0  # steps; 0 = only at the end
    keep_last: int = 2  # periodic checkpoints kept
    log_every: int = 1
    # Stop (and save) after this much training time; the schedule then also follows the clock, reaching
    # min_lr by the deadline or by `steps`, whichever comes first (such runs are not bit-reproducible).
    max_minutes: float | None = None
    device: str | None = None  # default: cuda if available, else cpu
    distributed: Literal["ddp", "fsdp"] = "ddp"
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "seq_len", "eval_batches"):
            if getattr(self, name) <= 0:
                raise LMForgeError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("eval_every", "save_every", "keep_last", "warmup_steps"):
            if getattr(self, name) < 0:
                raise LMForgeError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise LMForgeError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise LMForgeError(f"unknown precision '{self.precision}'; use fp32, bf16 or fp16")


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over labelled positions (0 for a batch without any, instead of NaN)."""
    flat = labels.reshape(-1)
    total = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        flat,
        ignore_index=IGNORE,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    return total / (flat != IGNORE).sum().clamp(min=1)


def flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: 6 per matmul weight (forward + backward) plus attention scores and
    values, 12·L·d_attn·T (the PaLM appendix estimate, causal masking not discounted)."""
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    config = getattr(model, "config", None)
    attn = 12 * config.n_layer * config.n_head * config.head_dim * seq_len if config is not None else 0
    return 6.0 * matmul + attn


_PEAK: dict[tuple[str, torch.dtype], float] = {}


def measured_peak_flops(
    device: torch.device, dtype: torch.dtype = torch.float32, seconds: float = 0.3
) -> float:
    """Matmul FLOP/s this device reaches on square matrices (cached per process): MFU's denominator.
    The best of several short windows, so a moment of contention from other jobs does not lower it."""
    key = (str(device), dtype)
    if key not in _PEAK:
        n = 1024 if device.type == "cpu" else 4096
        g = torch.Generator().manual_seed(0)  # never the global generator: resume must not see this
        a = torch.randn(n, n, generator=g).to(device, dtype)
        b = torch.randn(n, n, generator=g).to(device, dtype)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        a @ b  # warm-up
        sync()
        best, deadline = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < deadline or best == 0.0:
            start = time.perf_counter()
            for _ in range(2 if device.type == "cpu" else 20):
                a @ b
            sync()
            best = max(best, 2 * n**3 * (2 if device.type == "cpu" else 20) / (time.perf_counter() - start))
        _PEAK[key] = best
    return _PEAK[key]


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


class Trainer:
    """Trains `model` (a module returning logits) on `train_data`, validating on `val_data`."""

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train_data: BatchSource,
        run_dir: str | Path,
        val_data: ValSet | None = None,
        tokenizer=None,
        generation_config: dict | None = None,
        lora: LoRAConfig | None = None,
        base_model: str | None = None,
        identity: dict[str, Any] | None = None,
    ):
        self.config = config
        self.train_data = train_data
        self.val_data = val_data
        self.run_dir = Path(run_dir)
        self.tokenizer = tokenizer
        self.generation_config = generation_config
        self.lora = lora
        self.base_model = base_model
        self.identity = identity or {}
        self.dist = dist_lib.init_distributed(config.device)
        self.device = self.dist.device

        model_config = getattr(model, "config", None)
        if model_config is not None and config.seq_len > model_config.max_seq_len:
            raise LMForgeError(
                f"--seq-len {config.seq_len} exceeds the model's context of {model_config.max_seq_len}; "
                f"lower --seq-len or build the model with a larger max_seq_len"
            )
        self.model = model.to(self.device)
        self.model.train()
        min_lr = config.lr / 10 if config.min_lr is None else config.min_lr
        self.schedule = LRSchedule(
            config.lr, config.steps, min(config.warmup_steps, config.steps), config.schedule, min_lr
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.wrapped = dist_lib.wrap_model(self.model, self.dist, config.distributed)
        # after wrapping: FSDP swaps the parameters for sharded ones, which the optimizer must hold
        self.optimizer = build_optimizer(
            self.model, config.lr, config.weight_decay, (config.beta1, config.beta2), config.eps
        )
        self.forward_model = torch.compile(self.wrapped) if config.compile else self.wrapped
        self.step = 0
        self.best_val = math.inf
        self.logger: RunLogger | None = None

    # -- pieces ----------------------------------------------------------------------------------

    def _autocast(self):
        if self.config.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AUTOCAST[self.config.precision])

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def run_config(self) -> dict[str, Any]:
        model_config = getattr(self.model, "config", None)
        return {
            "train": dataclasses.asdict(self.config),
            "model": model_config.to_dict() if model_config is not None else None,
            "lora": dataclasses.asdict(self.lora) if self.lora else None,
            "identity": self.identity,
            "world_size": self.dist.world_size,
        }

    def trainer_state(self) -> dict[str, Any]:
        """Everything besides the weights that resuming needs (gathered from all ranks)."""
        rngs = dist_lib.all_gather_object(ckpt.rng_state(), self.dist)
        return {
            "step": self.step,
            "optimizer": self._optimizer_state(),
            "scaler": self.scaler.state_dict(),
            "rng": rngs,
            "best_val": self.best_val,
            "world_size": self.dist.world_size,
        }

    def _optimizer_state(self) -> dict[str, Any]:
        if self.dist.enabled and self.config.distributed == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(
                self.model, self.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
        return self.optimizer.state_dict()

    def evaluate(self) -> dict[str, float]:
        """Validation loss (nats/token), perplexity and bits-per-byte (when byte counts are known);
        batches are split across ranks and the sums all-reduced."""
        if self.val_data is None or not len(self.val_data):
            return {}
        model = self.wrapped if self.config.distributed == "fsdp" else self.model
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # nats, tokens, bytes
        with torch.no_grad(), self._autocast():
            for i in range(self.dist.rank, len(self.val_data), self.dist.world_size):
                batch = self._to_device(self.val_data.batches[i])
                logits = model(batch["input_ids"])
                labels = batch["labels"]
                nats = F.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]),
                    labels.reshape(-1),
                    ignore_index=IGNORE,
                    reduction="sum",
                )
                sums[0] += nats.double()
                sums[1] += (labels != IGNORE).sum()
                if self.val_data.num_bytes:
                    sums[2] += self.val_data.num_bytes[i]
        model.train()
        dist_lib.all_reduce_sum(sums, self.dist)
        nats, tokens, nbytes = sums.tolist()
        loss = nats / max(tokens, 1)
        out = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": int(tokens)}
        if nbytes > 0:
            out["bits_per_byte"] = nats / (math.log(2) * nbytes)
        return out

    def _model_state_for_save(self) -> nn.Module:
        """A module whose state_dict is the full model (gathers FSDP shards: collective)."""
        if not (self.dist.enabled and self.config.distributed == "fsdp"):
            return self.model
        from lmforge.model import Transformer

        state = dist_lib.full_state_dict(self.wrapped, "fsdp", self.dist)
        with torch.device("meta"):
            copy = Transformer(self.model.config)
        copy.load_state_dict(state, strict=False, assign=True)
        copy.tie_weights()
        return copy

    def save(self, kind: Literal["step", "best", "final"], metrics: dict | None = None) -> Path | None:
        """Write a checkpoint on rank 0 (all ranks take part in gathering); returns its path on rank 0."""
        state = self.trainer_state() if kind == "step" else None
        model = self._model_state_for_save()
        path = None
        if self.dist.is_main:
            if kind == "step":
                path = self.run_dir / "checkpoints" / f"step-{self.step:06d}"
            else:
                path = self.run_dir / kind
            extra = (
                {"best.json": json.dumps({"step": self.step, **(metrics or {})})} if kind == "best" else None
            )
            ckpt.save_checkpoint(
                path,
                model,
                state,
                self.tokenizer,
                self.generation_config,
                self.lora,
                self.base_model,
                extra,
            )
            if kind == "step":
                ckpt.prune(self.run_dir, self.config.keep_last)
        dist_lib.barrier(self.dist)
        return path

    def _resume(self) -> None:
        path = ckpt.latest_checkpoint(self.run_dir)
        if path is None:
            raise LMForgeError(f"nothing to resume in {self.run_dir}: it has no complete checkpoint")
        ckpt.check_resume_config(self.run_dir, self.run_config())
        state = ckpt.load_trainer_state(path)
        if self.dist.enabled and self.config.distributed == "fsdp":
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            from lmforge.io import checkpoint as ckpt_io

            cfg, naming = ckpt_io.read_config(path)
            opts = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.model, ckpt_io.read_state(path, cfg, naming), options=opts)
            set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=opts)
        else:
            ckpt.load_model_weights(self.model, path)
            self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        ckpt.set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])
        self.step = int(state["step"])
        self.best_val = float(state["best_val"])
        if self.dist.is_main:
            RunLogger.truncate(self.run_dir, self.step)

    # -- the loop --------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to `config.steps` (or `max_minutes`); returns a summary of the run."""
        cfg, info = self.config, self.dist
        if resume:
            self._resume()
        elif ckpt.step_dirs(self.run_dir):
            raise LMForgeError(
                f"{self.run_dir} already holds checkpoints; pass --resume to continue it or choose a new --out"
            )
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.write_run_config(self.run_dir, self.run_config())
            self.logger = RunLogger(self.run_dir, tensorboard=cfg.tensorboard)
        dist_lib.barrier(info)

        tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * info.world_size
        peak = None
        flops_step = flops_per_token(self.model, cfg.seq_len) * tokens_per_step
        if info.is_main:
            dtype = AUTOCAST.get(cfg.precision, torch.float32)
            peak = measured_peak_flops(self.device, dtype) * info.world_size
        bar = None
        if info.is_main and cfg.progress and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, unit="step", dynamic_ncols=True)
        params = [p for p in self.model.parameters() if p.requires_grad]
        start_time = time.perf_counter()
        last_time, last_step, last_print = start_time, self.step, start_time
        first_step = self.step
        train_loss = math.nan
        val_metrics: dict[str, float] = {}
        if self.step == 0 and self.val_data is not None and cfg.eval_every:
            start_metrics = self.evaluate()  # the baseline the run improves on
            if info.is_main:
                self.logger.log({"kind": "val", "step": 0, **start_metrics})
        stop = False
        while self.step < cfg.steps and not stop:
            schedule_step = self.step
            if cfg.max_minutes is not None:
                fraction = (time.perf_counter() - start_time) / (cfg.max_minutes * 60)
                schedule_step = max(self.step, int(fraction * cfg.steps))
            lr = self.schedule.apply(self.optimizer, schedule_step)
            loss_sum = torch.zeros((), device=self.device)
            for micro in range(cfg.grad_accum):
                index = (self.step * cfg.grad_accum + micro) * info.world_size + info.rank
                batch = self._to_device(self.train_data.batch(index))
                sync = micro == cfg.grad_accum - 1 or not (info.enabled and cfg.distributed == "ddp")
                ctx = contextlib.nullcontext() if sync else self.wrapped.no_sync()
                with ctx:
                    with self._autocast():
                        logits = self.forward_model(batch["input_ids"])
                    loss = loss_fn(logits, batch["labels"], cfg.label_smoothing)
                    self.scaler.scale(loss / cfg.grad_accum).backward()
                loss_sum += loss.detach()
            self.scaler.unscale_(self.optimizer)
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            dist_lib.all_reduce_sum(loss_sum, info)
            train_loss = loss_sum.item() / (cfg.grad_accum * info.world_size)
            if not math.isfinite(train_loss) and cfg.precision != "fp16":
                raise LMForgeError(
                    f"the loss became {train_loss} at step {self.step}; lower --lr or enable --grad-clip"
                )

            now = time.perf_counter()
            elapsed = now - start_time
            if cfg.max_minutes is not None:
                stop = bool(dist_lib.broadcast_object(elapsed >= cfg.max_minutes * 60, info))
            if info.is_main and (self.step % cfg.log_every == 0 or self.step == cfg.steps or stop):
                dt = max(now - last_time, 1e-9)
                tok_s = tokens_per_step * (self.step - last_step) / dt
                mfu = flops_step * (self.step - last_step) / dt / peak if peak else None
                last_time, last_step = now, self.step
                record = {
                    "kind": "train",
                    "step": self.step,
                    "loss": train_loss,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "tokens_per_s": tok_s,
                    "mfu": mfu,
                    "elapsed_s": elapsed,
                }
                self.logger.log(record)
                if bar is not None:
                    bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tok_s:,.0f}", mfu=f"{100 * mfu:.1f}%")
                elif cfg.progress and (now - last_print > 30 or self.step == cfg.steps):
                    last_print = now
                    eta = (cfg.steps - self.step) * elapsed / max(self.step - first_step, 1)
                    print(
                        f"step {self.step}/{cfg.steps} | loss {train_loss:.4f} | {tok_s:,.0f} tok/s | "
                        f"mfu {100 * (mfu or 0):.1f}% | elapsed {_fmt_time(elapsed)} | eta {_fmt_time(eta)}",
                        file=sys.stderr,
                        flush=True,
                    )
            if bar is not None:
                bar.update(1)

            last = self.step == cfg.steps or stop
            if self.val_data is not None and ((cfg.eval_every and self.step % cfg.eval_every == 0) or last):
                val_metrics = self.evaluate()
                if info.is_main:
                    self.logger.log({"kind": "val", "step": self.step, **val_metrics})
                    if bar is None and cfg.progress:
                        shown = ", ".join(f"{k} {v:.4f}" for k, v in val_metrics.items() if k != "tokens")
                        print(f"step {self.step}: validation {shown}", file=sys.stderr, flush=True)
                if val_metrics.get("loss", math.inf) < self.best_val:
                    self.best_val = val_metrics["loss"]
                    self.save("best", val_metrics)
            if (cfg.save_every and self.step % cfg.save_every == 0) or last:
                self.save("step")
        if bar is not None:
            bar.close()
        self.save("final")
        total = time.perf_counter() - start_time
        summary = {
            "steps": self.step,
            "train_loss": train_loss,
            "best_val_loss": self.best_val,
            "val": val_metrics,
            "elapsed_s": total,
            "run_dir": str(self.run_dir),
        }
        if info.is_main:
            self.logger.plot()
            self.logger.close()
        return summary
