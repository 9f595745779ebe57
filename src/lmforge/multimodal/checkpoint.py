"""Checkpoint directories of the image–text models (CLIP, the VLM, the MAE): one layout for all three.

A directory holds config.json (`model_type` and the model's config dataclasses under `lmforge`) and
model.safetensors, plus whatever the model adds (a tokenizer, generation defaults), written atomically:
an interrupted save leaves no partial directory. Reading checks the `model_type` and names what went
wrong in one line; config fields a newer version added and an older one does not know are left out.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from lmforge.errors import LMForgeError
from lmforge.io.atomic import atomic_dir


def save_model(
    path: str | Path,
    model: nn.Module,
    model_type: str,
    configs: dict[str, Any],
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write `model`'s weights and config.json (`configs`: name -> dataclass) into `path`, atomically;
    `extra(tmp)` writes the model's other files into the same temporary directory."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    size = sum(t.numel() * t.element_size() for t in state.values())
    meta = {"model_type": model_type, "lmforge": {k: dataclasses.asdict(v) for k, v in configs.items()}}
    with atomic_dir(path, expected_bytes=size) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
        if extra is not None:
            extra(tmp)
    return path


def read_meta(path: str | Path, model_type: str, kind: str, model: str, written_by: str) -> dict[str, Any]:
    """config.json's `lmforge` block of a `model_type` directory ("a CLIP" checkpoint directory holding
    "a CLIP model"); anything else is a one-line error that says which directory to give (`written_by`)."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise LMForgeError(
            f"{path} is not {kind} checkpoint directory (no config.json); give one written by {written_by}"
        )
    try:
        meta = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LMForgeError(f"{config_file} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("model_type") != model_type:
        found = meta.get("model_type", "unknown") if isinstance(meta, dict) else "unknown"
        raise LMForgeError(
            f"{path} holds a {found!r} model, not {model}; give a directory written by {written_by}"
        )
    return meta["lmforge"]


def config_from(cls: type, values: dict[str, Any]) -> Any:
    """`cls(**values)` keeping only the fields `cls` has."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """`model` with the weights of `path`/model.safetensors, in eval mode."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(Path(path) / "model.safetensors")))
    return model.eval()
