"""The encoder and generator, loaded once per process and shared by every index and call."""

from __future__ import annotations

from typing import Any

_MODELS: dict[tuple[str, str | None], Any] = {}


def load_model(name: str, dtype: str | None = None):
    """`lmforge.load(name, dtype)`, cached (an asset name or a checkpoint path)."""
    if (name, dtype) not in _MODELS:
        from lmforge.lm import load

        _MODELS[name, dtype] = load(name, dtype=dtype)
    return _MODELS[name, dtype]
