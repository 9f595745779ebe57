"""What machine this is: the CPU model, the instruction-set flags that decide which dtype is fast, and
torch's own view of them. Benchmarks record it with every result (the machines this project runs on
change CPU model between sessions: bf16 matmuls are ~10x faster than fp32 on a Xeon with AMX and ~10x
slower on a Zen 3), and the AOT decode step's package key includes the instruction set."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

import torch

# the flags that change which kernels and dtypes are fast (Linux /proc/cpuinfo names)
FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "avx_vnni",
)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not there)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """A record of the machine for benchmark results: CPU model, relevant flags, torch's dispatch
    level, cores and threads, torch version, and the GPU when there is one."""
    record: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_flags": [f for f in FLAGS if f in cpu_flags()],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
    }
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name()
    return record


def describe() -> str:
    """One line for a benchmark's printout."""
    m = machine()
    return (
        f"{m['cpu']} ({', '.join(m['cpu_flags']) or 'no listed flags'}; torch dispatch "
        f"{m['torch_cpu_capability']}), {m['torch_threads']} threads, torch {m['torch']}"
    )
