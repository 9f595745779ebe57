"""The Trainer: one loop for every model lmforge trains: causal-LM and masked-LM pretraining,
(instruction) fine-tuning, and the image–text models (CLIP, the VLM, MAE; see lmforge.multimodal).

What differs between them is an `Objective` the Trainer is given: the loss of one micro-batch, the
validation metrics, the model files a checkpoint holds (and reading its weights back on resume), and
what throughput counts (tokens, images). The default, `LMObjective`, trains a transformer on token
batches whose `labels` carry the task (-100 = no loss): next-token windows, BERT-masked windows, or chat
examples with loss on assistant tokens only. The loop itself does gradient
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

from lmforge import hardware
from lmforge.errors import LMForgeError
from lmforge.options import check_types, option
from lmforge.train import checkpoint as ckpt
from lmforge.train import distributed as dist_lib
from lmforge.train import monitor
from lmforge.train.batches import IGNORE, BatchSource, ValSet
from lmforge.train.logging import RunLogger
from lmforge.train.lora import LoRAConfig, LoRALinear
from lmforge.train.optim import LRSchedule, OptimizerName, build_optimizer

Precision = Literal["auto", "fp32", "bf16", "fp16"]
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    """Every setting of a training run, each declared here once with its help: `lmforge pretrain` and
    `finetune` take each as a flag and a config-file key (`lmforge.options`)."""

    steps: int = option(1000, "optimizer steps to train for")
    batch_size: int = option(8, "sequences per micro-batch (per process)")
    grad_accum: int = option(1, "micro-batches accumulated per optimizer step")
    seq_len: int = option(256, "tokens per training sequence (at most the model's context)")
    lr: float = option(1e-3, "peak learning rate")
    min_lr: float | None = option(None, "learning rate at the end of the decay (none: lr / 10)")
    warmup_steps: int = option(100, "linear warmup steps")
    schedule: Literal["cosine", "linear", "constant"] = option("cosine", "decay after warmup")
    optimizer: OptimizerName = option(
        "adamw",
        "adamw, or muon: PyTorch's Muon (orthogonalised momentum) for the hidden weight matrices and "
        "AdamW for embeddings, output head, norms and biases, one lr for both (Muon's step matched to "
        "AdamW's update RMS)",
    )
    weight_decay: float = option(
        0.1, "decoupled AdamW weight decay (matrices only; none on norms, biases, embeddings)"
    )
    beta1: float = option(0.9, "AdamW beta1")
    beta2: float = option(0.95, "AdamW beta2")
    eps: float = option(1e-8, "AdamW epsilon")
    grad_clip: float = option(
        1.0, "clip the global gradient norm to this (0: no clipping; the norm is logged either way)"
    )
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy")
    dropout: float | None = option(
        None, "dropout while training: embedding, residual and attention (none: the model's own)"
    )
    precision: Precision = option(
        "auto",
        "auto (bf16 autocast where the CPU/GPU runs it natively and a measured probe finds it faster, "
        "else fp32), fp32, or bf16/fp16 autocast (fp16 with loss scaling)",
    )
    precision_fallback: bool = option(
        True, "when --precision bf16/fp16 is not native here: run in fp32 (--no-precision-fallback: stop)"
    )
    compile: bool = option(False, "torch.compile the model")
    seed: int = option(1337, "seed of initialisation, data order, masking and dropout")
    eval_every: int = option(200, "validate every N steps (0: only at the end)")
    eval_batches: int = option(20, "validation batches per evaluation")
    save_every: int = option(0, "checkpoint every N steps (0: only at the end)")
    keep_last: int = option(2, "periodic checkpoints to keep")
    log_every: int = option(1, "write a training record every N steps")
    on_nan: Literal["stop", "skip"] = option(
        "stop",
        "a non-finite loss or gradient: stop (naming the step and the last good checkpoint), or skip "
        "the step, rolling back to the last good checkpoint",
    )
    spike_factor: float = option(
        3.0, "warn when a step's loss exceeds this x the running average of recent losses (0: off)"
    )
    update_ratio_every: int = option(
        10, "log per-group update/weight ratios every N steps (0: never; costs a copy of the weights)"
    )
    monitor_activations: int = option(
        0,
        "log activation RMS / max-abs per layer group and each block's mean attention entropy every N "
        "steps that write a record (0: never; costs one extra forward of a batch with explicit attention "
        "weights)",
    )
    # the schedule then follows the clock too: warmup counts steps, then the decay reaches min_lr by the
    # deadline or by `steps`, whichever comes first (such runs are not bit-reproducible)
    max_minutes: float | None = option(None, "stop (and checkpoint) after this many minutes of training")
    device: str | None = option(None, "cpu, cuda, cuda:1, ... (none: cuda if available)")
    distributed: Literal["ddp", "fsdp"] = option(
        "ddp", "under torchrun: ddp (replicated model) or fsdp (sharded)"
    )
    progress: bool = option(True, "show progress (a bar on a terminal, periodic lines otherwise)")
    tensorboard: bool = option(True, "also log to TensorBoard when it is installed")
    resume: bool = option(False, "continue the run in the run directory from its latest checkpoint")

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("steps", "batch_size", "grad_accum", "seq_len", "eval_batches", "log_every"):
            if getattr(self, name) <= 0:
                raise LMForgeError(f"{name} must be positive, got {getattr(self, name)}")
        for name in (
            "eval_every",
            "save_every",
            "keep_last",
            "warmup_steps",
            "weight_decay",
            "grad_clip",
            "spike_factor",
            "update_ratio_every",
            "monitor_activations",
        ):
            if getattr(self, name) < 0:
                raise LMForgeError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or (self.min_lr is not None and not 0 <= self.min_lr <= self.lr):
            raise LMForgeError(f"need lr > 0 and 0 <= min_lr <= lr, got lr {self.lr}, min_lr {self.min_lr}")
        for name in ("beta1", "beta2", "label_smoothing") + (
            ("dropout",) if self.dropout is not None else ()
        ):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise LMForgeError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.eps <= 0 or (self.max_minutes is not None and self.max_minutes <= 0):
            raise LMForgeError(f"eps and max_minutes must be positive, got {self.eps} and {self.max_minutes}")
        if self.optimizer == "muon" and self.distributed == "fsdp":
            raise LMForgeError(
                "--optimizer muon runs without FSDP (its sharded state is AdamW's); use --distributed ddp"
            )

    def training(self) -> TrainConfig:
        """The plain `TrainConfig` part of a config that extends it (what the Trainer and its resume
        check see)."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})


@dataclass
class TrainResult:
    """What a training run returns: where it wrote, how far it got, its last losses and timings.
    Reads like the summary dict it replaces (`result["steps"]`); `to_dict()` gives JSON-ready values."""

    run_dir: Path
    final: Path  # the checkpoint directory `lmforge.load` reads (the adapter, for a LoRA run)
    steps: int
    train_loss: float
    best_val_loss: float
    val: dict[str, float]
    elapsed_s: float  # the training loop
    total_s: float | None = None  # the whole call: loading, data, training (set by the API functions)
    rank: int = 0  # this process's rank under torchrun (only rank 0 writes)
    merged: Path | None = None  # finetune --merge: the checkpoint with the LoRA adapters folded in
    quantized: Path | None = None  # finetune --qat: the checkpoint quantized in the trained format
    precision: str | None = None  # the precision the run used (`precision auto` resolved)

    def __getitem__(self, key: str) -> Any:
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


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


def set_dropout(model: nn.Module, p: float) -> None:
    """Set a model's embedding, residual and attention dropout (its config too, so checkpoints record
    it); LoRA's own input dropout keeps its setting."""
    lora_dropouts = {id(m.dropout) for m in model.modules() if isinstance(m, LoRALinear)}
    config = getattr(model, "config", None)
    if config is not None:
        config.dropout = config.attn_dropout = p
    for m in model.modules():
        if isinstance(m, nn.Dropout) and id(m) not in lora_dropouts:
            m.p = p


def calibrate_steps(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    seconds: float,
    grad_accum: int = 1,
    precision: str = "fp32",
) -> int:
    """Optimizer steps that fit in `seconds`, from the fastest of a few timed forward/backward passes
    of `batch` (after two warm-up passes) in `precision`; a run's `max_minutes` still stops it if the
    machine gets busier. The model's gradients are cleared afterwards."""
    device_type = next(model.parameters()).device.type
    times = []
    for i in range(6):
        start = time.perf_counter()
        with torch.autocast(device_type, dtype=AUTOCAST.get(precision), enabled=precision in AUTOCAST):
            logits = model(batch["input_ids"])
        loss_fn(logits, batch["labels"]).backward()
        if i >= 2:
            times.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    per_step = min(times) * grad_accum * 1.25  # + optimizer step, logging, validation
    return max(10, int(seconds / per_step))


def flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: 6 per matmul weight (forward + backward) plus attention scores and
    values, 12·L·d_attn·T (the PaLM appendix estimate, causal masking not discounted)."""
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    config = getattr(model, "config", None)
    attn = 12 * config.n_layer * config.n_head * config.head_dim * seq_len if config is not None else 0
    return 6.0 * matmul + attn


def measured_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """Matmul FLOP/s this device reaches in `dtype` (measured once per machine and cached on disk by
    `lmforge.hardware.matmul_flops`): MFU's denominator."""
    precision = next(p for p, d in hardware.PRECISION_DTYPES.items() if d == dtype)
    return hardware.matmul_flops(precision, device)


class Objective:
    """What the Trainer trains: everything that depends on the kind of model, so the loop (accumulation,
    clipping, precision, NaN handling, logs, checkpoints, exact resume) stays one.

    Batches are dicts of tensors from a `BatchSource` (a pure function of the micro-batch index);
    `loss` turns one into a scalar, `evaluate` scores the Trainer's `val_data` (whatever the objective
    reads), `write_model` / `load_weights` write the model part of a checkpoint directory and read its
    weights back (resume, NaN rollback). `unit` names what `units_per_batch` counts in the
    throughput record (`<unit>_per_s`); `flops_per_unit` (None: unknown) gives MFU.
    """

    name = "objective"
    unit, unit_short = "samples", "samples"
    distributed = False  # whether it runs under torchrun (its loss goes through the wrapped forward)

    def check(self, model: nn.Module, config: TrainConfig) -> None:
        """Refuse settings this objective cannot honour (one-line LMForgeError)."""
        if config.monitor_activations:
            raise LMForgeError(
                f"--monitor-activations watches transformer LMs; not available for {self.name}"
            )

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], config: TrainConfig) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, trainer: Trainer) -> dict[str, float]:
        """The mean of `loss` over the validation batches, in eval mode without gradients."""
        model = trainer._inspected_model()
        model.eval()
        with torch.no_grad(), trainer._autocast():
            losses = [
                float(self.loss(model, trainer._to_device(b), trainer.config))
                for b in trainer.val_data.batches
            ]
        model.train()
        return {"loss": sum(losses) / len(losses)}

    def write_model(self, directory: Path, model: nn.Module) -> None:
        raise NotImplementedError

    def load_weights(self, model: nn.Module, path: Path) -> None:
        raise NotImplementedError

    def model_config(self, model: nn.Module) -> dict[str, Any] | None:
        config = getattr(model, "config", None)
        return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else None

    def units_per_batch(self, config: TrainConfig) -> int:
        return config.batch_size

    def flops_per_unit(self, model: nn.Module, config: TrainConfig) -> float | None:
        return None


class LMObjective(Objective):
    """A transformer LM on token batches (`input_ids`, `labels`): cross-entropy over the labelled
    positions; validation loss, perplexity and bits-per-byte; checkpoints `lmforge.load` reads (or a
    LoRA adapter)."""

    name = "lm"
    unit, unit_short = "tokens", "tok"
    distributed = True

    def __init__(
        self,
        tokenizer: Any = None,
        generation_config: dict | None = None,
        lora: LoRAConfig | None = None,
        base_model: str | None = None,
    ):
        self.tokenizer, self.generation_config = tokenizer, generation_config
        self.lora, self.base_model = lora, base_model

    def check(self, model: nn.Module, config: TrainConfig) -> None:
        model_config = getattr(model, "config", None)
        if model_config is not None and config.seq_len > model_config.max_seq_len:
            raise LMForgeError(
                f"--seq-len {config.seq_len} exceeds the model's context of {model_config.max_seq_len}; "
                f"lower --seq-len or build the model with a larger max_seq_len"
            )

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], config: TrainConfig) -> torch.Tensor:
        return loss_fn(model(batch["input_ids"]), batch["labels"], config.label_smoothing)

    def evaluate(self, trainer: Trainer) -> dict[str, float]:
        """Validation loss (nats/token), perplexity and bits-per-byte (when byte counts are known);
        batches are split across ranks and the sums all-reduced."""
        val_data, dist = trainer.val_data, trainer.dist
        model = trainer._inspected_model()
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=trainer.device)  # nats, tokens, bytes
        with torch.no_grad(), trainer._autocast():
            for i in range(dist.rank, len(val_data), dist.world_size):
                batch = trainer._to_device(val_data.batches[i])
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
                if val_data.num_bytes:
                    sums[2] += val_data.num_bytes[i]
        model.train()
        dist_lib.all_reduce_sum(sums, dist)
        nats, tokens, nbytes = sums.tolist()
        loss = nats / max(tokens, 1)
        out = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": int(tokens)}
        if nbytes > 0:
            out["bits_per_byte"] = nats / (math.log(2) * nbytes)
        return out

    def write_model(self, directory: Path, model: nn.Module) -> None:
        ckpt.write_model_files(
            directory, model, self.tokenizer, self.generation_config, self.lora, self.base_model
        )

    def load_weights(self, model: nn.Module, path: Path) -> None:
        ckpt.load_model_weights(model, path)

    def model_config(self, model: nn.Module) -> dict[str, Any] | None:
        config = getattr(model, "config", None)
        return config.to_dict() if config is not None else None

    def units_per_batch(self, config: TrainConfig) -> int:
        return config.batch_size * config.seq_len

    def flops_per_unit(self, model: nn.Module, config: TrainConfig) -> float | None:
        return flops_per_token(model, config.seq_len)


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


class Trainer:
    """Trains `model` on `train_data` for `objective` (default: an LM returning logits, `LMObjective`
    built from `tokenizer`, `generation_config`, `lora` and `base_model`), validating on `val_data`."""

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
        objective: Objective | None = None,
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
        self.objective = objective or LMObjective(tokenizer, generation_config, lora, base_model)
        self.objective.check(model, config)
        hardware.keep_freed_memory()
        self.dist = dist_lib.init_distributed(config.device)
        self.device = self.dist.device
        if self.dist.enabled and not self.objective.distributed:
            raise LMForgeError(
                f"objective {self.objective.name} trains in one process; run it without torchrun"
            )
        if config.dropout is not None:
            set_dropout(model, config.dropout)
        self.model = model.to(self.device)
        self.model.train()
        min_lr = config.lr / 10 if config.min_lr is None else config.min_lr
        self.schedule = LRSchedule(
            config.lr, config.steps, min(config.warmup_steps, config.steps), config.schedule, min_lr
        )
        # `auto` resolved from this machine (the same on every rank: same hardware, same cached probe)
        self.precision_choice = hardware.choose_precision(
            config.precision, self.device, config.precision_fallback
        )
        self.precision = self.precision_choice.precision
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.wrapped = dist_lib.wrap_model(self.model, self.dist, config.distributed)
        # after wrapping: FSDP swaps the parameters for sharded ones, which the optimizer must hold
        self.optimizer = build_optimizer(
            self.model,
            config.lr,
            config.weight_decay,
            (config.beta1, config.beta2),
            config.eps,
            config.optimizer,
        )
        self.forward_model = torch.compile(self.wrapped) if config.compile else self.wrapped
        self.step = 0
        self.best_val = math.inf
        self.logger: RunLogger | None = None

    # -- pieces ----------------------------------------------------------------------------------

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AUTOCAST[self.precision])

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def run_config(self) -> dict[str, Any]:
        return {
            "train": dataclasses.asdict(self.config),
            "model": self.objective.model_config(self.model),
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

    def _inspected_model(self) -> torch.nn.Module:
        """The model a no-grad pass runs (validation, activation statistics): the sharded wrapper under
        FSDP (it gathers the weights), else the model itself (no DDP gradient hooks, not compiled)."""
        return self.wrapped if self.config.distributed == "fsdp" else self.model

    def evaluate(self) -> dict[str, float]:
        """The objective's validation metrics over `val_data` (empty without it)."""
        if self.val_data is None or not len(self.val_data):
            return {}
        return self.objective.evaluate(self)

    def _ratio_due(self, step: int) -> bool:
        every = self.config.update_ratio_every
        return bool(every) and step % every == 0

    def _alert(self, kind: str, message: str, **values: Any) -> None:
        """A warning record in log.jsonl (kind "alert"), also printed (rank 0 only)."""
        if self.logger is not None:
            shown = {
                k: (v if isinstance(v, (int, str)) or math.isfinite(v) else str(v)) for k, v in values.items()
            }
            self.logger.log({"kind": "alert", "step": self.step, "alert": kind, "message": message, **shown})
        print(f"warning: {message}", file=sys.stderr, flush=True)

    def _non_finite(self, loss: float, grad_norm: float, bad_steps: int) -> None:
        """A non-finite loss or gradient at the coming step: stop with the step and the last good
        checkpoint named, or (on_nan skip) drop the update, rolling back to the last good checkpoint
        where there is one; stops after 3 bad steps in a row."""
        step = self.step + 1
        last_good = ckpt.latest_checkpoint(self.run_dir)
        named = f"last good checkpoint: {last_good}" if last_good else "no checkpoint yet (see --save-every)"
        what = f"the loss became {loss} (gradient norm {grad_norm}) at step {step}"
        if self.config.on_nan == "stop" or bad_steps > 3:
            if self.dist.is_main:
                self._alert("non_finite", f"{what}; stopped", loss=loss, grad_norm=grad_norm)
            again = " (3 rollbacks in a row did not help)" if bad_steps > 3 else ""
            raise LMForgeError(f"{what}{again}; {named}. Lower --lr, enable --grad-clip or use --on-nan skip")
        weights_ok = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        if last_good is not None and not (self.dist.enabled and self.config.distributed == "fsdp"):
            self.objective.load_weights(self.model, last_good)
            self.optimizer.load_state_dict(ckpt.load_trainer_state(last_good)["optimizer"])
            action = f"skipped the step and rolled back to {last_good}"
        elif weights_ok:
            action = "skipped the step (no checkpoint to roll back to; the weights are still finite)"
        else:
            raise LMForgeError(f"{what} and the weights are no longer finite; {named}. Lower --lr")
        if self.dist.is_main:
            self._alert("non_finite", f"{what}: {action}", loss=loss, grad_norm=grad_norm)

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
                path, model, state, extra_files=extra, write_model=self.objective.write_model
            )
            if kind == "step":
                ckpt.prune(self.run_dir, self.config.keep_last)
        dist_lib.barrier(self.dist)
        return path

    def _resume(self) -> None:
        path = ckpt.latest_checkpoint(self.run_dir)  # fit() checked that there is one
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
            self.objective.load_weights(self.model, path)
            self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        ckpt.set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])
        self.step = int(state["step"])
        self.best_val = float(state["best_val"])
        if self.dist.is_main:
            RunLogger.truncate(self.run_dir, self.step)

    # -- the loop --------------------------------------------------------------------------------

    def fit(self, resume: bool | None = None) -> TrainResult:
        """Train to `config.steps` (or `max_minutes`); `resume` (default: `config.resume`) continues
        the run directory from its latest checkpoint."""
        cfg, info = self.config, self.dist
        resume = cfg.resume if resume is None else resume
        ckpt.check_run_dir(self.run_dir, resume)
        if resume:
            self._resume()
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.write_run_config(self.run_dir, self.run_config())
            self.logger = RunLogger(self.run_dir, tensorboard=cfg.tensorboard)
        dist_lib.barrier(info)

        objective = self.objective
        units_per_step = objective.units_per_batch(cfg) * cfg.grad_accum * info.world_size
        peak = None
        flops_unit = objective.flops_per_unit(self.model, cfg)
        flops_step = None if flops_unit is None else flops_unit * units_per_step
        if info.is_main:
            # measured again (the higher figure kept): a peak probed under contention would put MFU past 100%
            measured = hardware.matmul_flops(self.precision, self.device, 0.1, refresh=True)
            self.precision_choice = dataclasses.replace(self.precision_choice, peak_flops=measured)
            peak = measured * info.world_size
            self.logger.log({"kind": "precision", "step": self.step, **self.precision_choice.to_dict()})
            if cfg.progress:
                print(
                    f"precision: {self.precision} ({self.precision_choice.reason})",
                    file=sys.stderr,
                    flush=True,
                )
        bar = None
        if info.is_main and cfg.progress and sys.stderr.isatty():
            from tqdm import tqdm

            if cfg.max_minutes is None:
                bar = tqdm(total=cfg.steps, initial=self.step, unit="step", dynamic_ncols=True)
            else:  # the clock ends the run: the bar (and its ETA) counts seconds of the budget
                bar = tqdm(total=int(cfg.max_minutes * 60), unit="s", dynamic_ncols=True)
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = monitor.Groups(self.model)
        watch = monitor.LossWatch(cfg.spike_factor)
        activation_stats = monitor.ActivationStats(self.model) if cfg.monitor_activations else None
        warmup_end: tuple[int, float] | None = None  # (step, seconds) where a clock-run's warmup ended
        bad_steps = 0
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
            warmup = self.schedule.warmup_steps
            if cfg.max_minutes is not None and self.step >= warmup:
                # warmup counts steps; the decay then spans the time left: min_lr at the deadline
                now = time.perf_counter() - start_time
                if warmup_end is None:
                    warmup_end = (self.step, now)
                left = cfg.max_minutes * 60 - warmup_end[1]
                fraction = (now - warmup_end[1]) / left if left > 0 else 1.0
                schedule_step = max(self.step, warmup + int(fraction * (cfg.steps - warmup)))
            lr = self.schedule.apply(self.optimizer, schedule_step)
            stats: dict[str, float] = {}
            loss_sum = torch.zeros((), device=self.device)
            for micro in range(cfg.grad_accum):
                index = (self.step * cfg.grad_accum + micro) * info.world_size + info.rank
                batch = self._to_device(self.train_data.batch(index))
                sync = micro == cfg.grad_accum - 1 or not (info.enabled and cfg.distributed == "ddp")
                ctx = contextlib.nullcontext() if sync else self.wrapped.no_sync()
                with ctx:
                    with self._autocast():
                        loss = objective.loss(self.forward_model, batch, cfg)
                    self.scaler.scale(loss / cfg.grad_accum).backward()
                loss_sum += loss.detach()
                if (
                    micro == 0
                    and activation_stats is not None
                    and (self.step + 1) % cfg.monitor_activations == 0
                    and (self.step + 1) % cfg.log_every == 0  # measured on steps that write a record
                ):
                    with self._autocast():
                        stats = activation_stats.measure(self._inspected_model(), batch["input_ids"])
            self.scaler.unscale_(self.optimizer)
            # every rank computes the statistics (sharded FSDP parameters reduce across ranks); rank 0 logs
            log_now = (self.step + 1) % cfg.log_every == 0
            group_norms = groups.grad_norms() if log_now else {}
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            dist_lib.all_reduce_sum(loss_sum, info)
            train_loss = loss_sum.item() / (cfg.grad_accum * info.world_size)
            # fp16's GradScaler skips steps with inf gradients itself
            if self.precision != "fp16" and not (math.isfinite(train_loss) and math.isfinite(grad_norm)):
                bad_steps += 1
                self._non_finite(train_loss, grad_norm, bad_steps)
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                continue
            bad_steps = 0
            before = groups.snapshot() if log_now and self._ratio_due(self.step + 1) else None
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            ratios = groups.update_ratios(before) if before is not None else {}
            spike = watch.train_step(train_loss)
            if spike and info.is_main:
                self._alert("loss_spike", f"step {self.step}: {spike}", loss=train_loss)

            now = time.perf_counter()
            elapsed = now - start_time
            if cfg.max_minutes is not None:
                stop = bool(dist_lib.broadcast_object(elapsed >= cfg.max_minutes * 60, info))
            if info.is_main and (self.step % cfg.log_every == 0 or self.step == cfg.steps or stop):
                dt = max(now - last_time, 1e-9)
                rate = units_per_step * (self.step - last_step) / dt
                mfu = flops_step * (self.step - last_step) / dt / peak if peak and flops_step else None
                last_time, last_step = now, self.step
                record = {
                    "kind": "train",
                    "step": self.step,
                    "loss": train_loss,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    f"{objective.unit}_per_s": rate,
                    "mfu": mfu,
                    "elapsed_s": elapsed,
                    **{f"grad_norm/{k}": v for k, v in group_norms.items()},
                    **{f"update_ratio/{k}": v for k, v in ratios.items()},
                    **stats,
                }
                self.logger.log(record)
                if bar is not None:
                    bar.set_postfix(
                        {"loss": f"{train_loss:.3f}", f"{objective.unit_short}/s": f"{rate:,.0f}"}
                        | ({"mfu": f"{100 * mfu:.1f}%"} if mfu is not None else {})
                    )
                elif cfg.progress and (now - last_print > 30 or self.step == cfg.steps):
                    last_print = now
                    eta = (cfg.steps - self.step) * elapsed / max(self.step - first_step, 1)
                    if cfg.max_minutes is not None:  # the clock ends the run, not the step cap
                        eta = min(eta, max(cfg.max_minutes * 60 - elapsed, 0.0))
                    shown_mfu = f"mfu {100 * mfu:.1f}% | " if mfu is not None else ""
                    print(
                        f"step {self.step}/{cfg.steps} | loss {train_loss:.4f} | "
                        f"{rate:,.0f} {objective.unit_short}/s | {shown_mfu}"
                        f"elapsed {_fmt_time(elapsed)} | eta {_fmt_time(eta)}",
                        file=sys.stderr,
                        flush=True,
                    )
            if bar is not None:
                bar.update(1 if cfg.max_minutes is None else min(int(elapsed), bar.total) - bar.n)

            last = self.step == cfg.steps or stop
            if self.val_data is not None and ((cfg.eval_every and self.step % cfg.eval_every == 0) or last):
                val_metrics = self.evaluate()
                if info.is_main:
                    self.logger.log({"kind": "val", "step": self.step, **val_metrics})
                    overfit = watch.validation(val_metrics["loss"]) if "loss" in val_metrics else None
                    if overfit:
                        self._alert("overfitting", f"step {self.step}: {overfit}")
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
        if info.is_main:
            self.logger.plot()
            self.logger.close()
        return TrainResult(
            run_dir=self.run_dir,
            final=self.run_dir / "final",
            steps=self.step,
            train_loss=train_loss,
            best_val_loss=self.best_val,
            val=val_metrics,
            elapsed_s=total,
            rank=info.rank,
            precision=self.precision,
        )
