"""Training checkpoints: our checkpoint directory plus `trainer_state.pt`, written atomically.

Layout of a run directory:
    run_config.json                what must match for `--resume` (training + model config, data identity)
    log.jsonl, plot.png            metrics (see train/logging.py)
    checkpoints/step-000200/       config.json, model.safetensors, tokenizer files, trainer_state.pt
                                   (a LoRA run stores adapter_model.safetensors + adapter_config.json)
    best/                          the checkpoint with the lowest validation loss so far (+ best.json)
    final/                         the model at the end of training (loads with `lmforge.load`)

Each directory is built under a temporary name and renamed into place, so a crash or a full disk
leaves either the old state or the complete new one. `trainer_state.pt` holds only tensors, numbers
and strings (optimizer, scaler, RNG states, step) and is read with `weights_only=True`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmforge.errors import LMForgeError
from lmforge.io import checkpoint as ckpt_io
from lmforge.io.atomic import atomic_dir, atomic_write_text
from lmforge.train import lora as lora_lib

TRAINER_STATE = "trainer_state.pt"
STEP_DIR = re.compile(r"^step-(\d+)$")


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states, in weights_only-loadable types."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(x: Any) -> Any:
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def step_dirs(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete periodic checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and (p / TRAINER_STATE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    dirs = step_dirs(run_dir)
    return dirs[-1][1] if dirs else None


def check_run_dir(run_dir: str | Path, resume: bool) -> None:
    """Refuse to start a run over an earlier one's checkpoints, or to resume a run that has none
    (cheap: callers check this before loading a model or reading data)."""
    has_checkpoints = bool(step_dirs(run_dir))
    if resume and not has_checkpoints:
        raise LMForgeError(f"nothing to resume in {run_dir}: it has no complete checkpoint")
    if not resume and has_checkpoints:
        raise LMForgeError(
            f"{run_dir} already holds checkpoints; pass --resume to continue it or choose a new --out"
        )


def write_model_files(
    directory: Path,
    model: nn.Module,
    tokenizer=None,
    generation_config: dict | None = None,
    lora_config: lora_lib.LoRAConfig | None = None,
    base_model: str | None = None,
) -> None:
    """The model part of a checkpoint into `directory`: a full checkpoint, or adapter files for LoRA."""
    if lora_config is not None:
        lora_lib.write_adapter_files(directory, model, lora_config, base_model)
        if tokenizer is not None:
            tokenizer.save(directory)
    else:
        ckpt_io.write_checkpoint(directory, model, tokenizer, generation_config)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    trainer_state: dict[str, Any] | None = None,
    tokenizer=None,
    generation_config: dict | None = None,
    lora_config: lora_lib.LoRAConfig | None = None,
    base_model: str | None = None,
    extra_files: dict[str, str] | None = None,
    write_model: Callable[[Path, nn.Module], None] | None = None,
) -> Path:
    """Write one checkpoint directory atomically; a failure (e.g. a full disk) raises LMForgeError
    and leaves no partial directory behind. `write_model(directory, model)` writes the model part
    (default: `write_model_files`; a Trainer objective passes its own, e.g. a CLIP directory)."""
    path = Path(path)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    try:
        with atomic_dir(path, expected_bytes=size) as tmp:
            if write_model is not None:
                write_model(tmp, model)
            else:
                write_model_files(tmp, model, tokenizer, generation_config, lora_config, base_model)
            if trainer_state is not None:
                torch.save(trainer_state, tmp / TRAINER_STATE)
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)
    except LMForgeError as exc:
        cause = getattr(exc.__cause__, "strerror", None) or "see below"
        raise LMForgeError(
            f"could not write checkpoint {path.name} ({cause}): {exc}; nothing partial was left and "
            "earlier checkpoints are intact, resume with --resume"
        ) from exc.__cause__
    return path


def prune(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` periodic checkpoints (renamed away first, so a crash
    mid-delete never leaves a half-deleted checkpoint under a valid name)."""
    if keep_last <= 0:
        return
    root = Path(run_dir) / "checkpoints"
    for leftover in root.glob(".step-*.deleting"):  # a prune killed mid-delete
        shutil.rmtree(leftover, ignore_errors=True)
    for _, p in step_dirs(run_dir)[:-keep_last]:
        doomed = p.with_name(f".{p.name}.deleting")
        os.replace(p, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    file = Path(path) / TRAINER_STATE
    if not file.is_file():
        raise LMForgeError(f"{path}: no {TRAINER_STATE}; not a training checkpoint")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LMForgeError(f"{file}: unreadable trainer state ({type(exc).__name__}: {exc})") from None


def load_model_weights(model: nn.Module, path: str | Path) -> None:
    """Copy a checkpoint's weights (or LoRA adapter) into an already-built model of the same config."""
    path = Path(path)
    if lora_lib.has_lora(model):
        lora_lib.load_adapter(model, path)
        return
    config, naming = ckpt_io.read_config(path)
    if config != model.config:
        raise LMForgeError(f"{path}: the checkpoint's model config differs from this run's model")
    state = ckpt_io.read_state(path, config, naming)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight", "mlm.decoder.weight"} if config.tie_embeddings else set()
    missing = [m for m in missing if m not in tied]
    if missing or unexpected:
        raise LMForgeError(
            f"{path}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def write_run_config(run_dir: Path, run_config: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "run_config.json", json.dumps(run_config, indent=2, default=str))


# Settings that may change between a run and its resumption without changing its trajectory.
RESUMABLE_CHANGES = {
    "steps",
    "max_minutes",
    "eval_every",
    "eval_batches",
    "save_every",
    "keep_last",
    "log_every",
    "compile",
    "device",
    "progress",
    "tensorboard",
    "monitor_activations",  # a no-grad eval-mode pass: no change to the weights or random numbers
    "resume",
    "grad_accum",  # compared as grad_accum × world size (the global batch) below
    "world_size",
}


def check_resume_config(run_dir: Path, current: dict[str, Any]) -> None:
    """Refuse to resume a run directory made with a different model, data or training setup."""
    file = run_dir / "run_config.json"
    if not file.is_file():
        raise LMForgeError(f"{run_dir}: no run_config.json; not a training run directory")
    saved = json.loads(file.read_text())
    current = json.loads(json.dumps(current, default=str))  # same normalisation as when written
    diffs = []
    for section in sorted(set(saved) | set(current)):
        a, b = saved.get(section), current.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if key not in RESUMABLE_CHANGES and a.get(key) != b.get(key):
                    diffs.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
        elif section not in RESUMABLE_CHANGES and a != b:
            diffs.append(f"{section}: {a!r} -> {b!r}")
    a_batch = saved.get("train", {}).get("grad_accum", 1) * saved.get("world_size", 1)
    b_batch = current.get("train", {}).get("grad_accum", 1) * current.get("world_size", 1)
    if a_batch != b_batch:
        diffs.append(f"grad_accum × processes: {a_batch} -> {b_batch}")
    if diffs:
        raise LMForgeError(
            f"cannot resume {run_dir}: it was made with another configuration ({'; '.join(diffs[:4])}); "
            "use the original settings or a new --out directory"
        )
