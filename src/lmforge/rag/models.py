"""The encoder and generator, loaded once per process and shared by every index and call."""

from __future__ import annotations

from typing import Any

_MODELS: dict[str, Any] = {}


def load_model(name: str):
    """`lmforge.load(name)`, cached (an asset name or a checkpoint path)."""
    if name not in _MODELS:
        from lmforge.lm import load

        _MODELS[name] = load(name)
    return _MODELS[name]
