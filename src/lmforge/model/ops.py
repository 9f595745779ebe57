"""lmforge's own torch operators (namespace `lmforge`), the form in which compiled and exported graphs
call kernels that torch does not lower itself (`lmforge::linear_fp32`, `lmforge::int8_native`, ...).

`define_op` registers a CPU kernel written in Python through `torch.library.Library` rather than
`torch.library.custom_op`: a call from a compiled decode step then costs about 11 µs instead of 25
(custom_op's wrapper checks its arguments on every call, measured on a Zen 3), and a decode step makes
one call per linear layer (121 in SmolLM2)."""

from __future__ import annotations

from collections.abc import Callable

import torch

_LIB = torch.library.Library("lmforge", "FRAGMENT")


_CPU_KERNELS: dict[str, torch.library.Library] = {}  # each operator's Python CPU kernel, kept alive


def define_op(schema: str, cpu_kernel: Callable, fake: Callable) -> None:
    """Define `lmforge::<schema>` with `cpu_kernel` as its CPU implementation and `fake` giving its
    output's shape and dtype while tracing."""
    name = schema.split("(", 1)[0]
    _LIB.define(schema)
    torch.library.register_fake(f"lmforge::{name}", fake, lib=_LIB)
    register_cpu_kernel(name, cpu_kernel)


def register_cpu_kernel(name: str, cpu_kernel: Callable) -> None:
    """`cpu_kernel` as `lmforge::<name>`'s CPU implementation, in a fragment of its own (a fragment's
    registrations end with it, so it is kept here until `drop_cpu_kernel`)."""
    kernel = torch.library.Library("lmforge", "FRAGMENT")
    kernel.impl(name, cpu_kernel, "CPU")
    _CPU_KERNELS[name] = kernel


def drop_cpu_kernel(name: str) -> None:
    """Remove `lmforge::<name>`'s Python CPU kernel, for a C++ one to serve (`lmforge.quant.native`)."""
    _CPU_KERNELS.pop(name)._destroy()
