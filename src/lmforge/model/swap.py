"""Module swap: find a model's linear layers by name and put other modules in their place.

One helper for every pass that replaces `nn.Linear` layers: LoRA wraps them (`lmforge.train.lora`),
quantization replaces them by integer-weight linears (`lmforge.quant`). Names are module paths
(`blocks.3.attn.qkv`); globs match a whole name or its tail (`mlp.fc` matches `blocks.0.mlp.fc`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable

from torch import nn


def matches(name: str, pattern: str) -> bool:
    """Whether module `name` matches glob `pattern` as a whole name or as a dotted tail."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, f"*.{pattern}")


def linear_layers(model: nn.Module, lm_head: bool = False) -> dict[str, nn.Linear]:
    """The model's `nn.Linear` layers by name, in module order; the LM head only with `lm_head`."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and (lm_head or not name.endswith("lm_head"))
    }


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at dotted path `name` in `model`."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def swap_modules(
    model: nn.Module, names: Iterable[str], make: Callable[[str, nn.Module], nn.Module]
) -> list[str]:
    """Replace each named module by `make(name, module)`, in place; returns the names swapped."""
    swapped = []
    for name in names:
        set_module(model, name, make(name, model.get_submodule(name)))
        swapped.append(name)
    return swapped
