"""What machine this is: the CPU model, the instruction-set flags that decide which dtype is fast, and
torch's own view of them. Benchmarks record it with every result (the machines this project runs on
change CPU model between sessions: bf16 matmuls are ~10x faster than fp32 on a Xeon with AMX and ~10x
slower on a Zen 3), and the AOT decode step's package key includes the instruction set."""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import json
import os
import platform
import time
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


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    By default a big tensor is a fresh mmap, unmapped when freed, and the heap's top is trimmed: a
    training step of a small model then takes tens of thousands of page faults (3.8M in 40 steps of
    the quickstart's default model and batch, a quarter of the time in the kernel). Here big blocks
    come from the heap (no mmap; glibc still falls back to it when the heap cannot grow), 1 GiB of
    freed heap is kept and the heap grows 256 MB at a time: ~10-25x fewer faults, 20-40% more tokens/s, peak memory 8-12% higher
    (benchmarks/allocator.py). Once per process, Linux with glibc; LMFORGE_KEEP_FREED_MEMORY=0
    leaves malloc as it is. Returns whether the settings were applied."""
    if os.environ.get("LMFORGE_KEEP_FREED_MEMORY", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 256 << 20))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


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


def thp_mode() -> str:
    """Linux's transparent huge page setting ("always", "madvise" or "never"; "absent" elsewhere): with
    "madvise", only memory that asks gets 2 MiB pages (lmforge.model.huge_pages asks for its weights)."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "absent"
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else text.strip()


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
        "transparent_huge_pages": thp_mode(),
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
        f"{m['torch_cpu_capability']}), {m['torch_threads']} threads, torch {m['torch']}, "
        f"transparent huge pages: {m['transparent_huge_pages']}"
    )


# -- the fast training dtype -------------------------------------------------------------------------
#
# `--precision auto` asks two questions of the machine it runs on, never of a table of CPU names:
# does the instruction set (or the GPU) run bf16 natively, and does a measured matmul confirm that it is
# faster than fp32? The probe's figures are cached per machine (CPU model, flags, torch dispatch level,
# threads, torch version, device) under ~/.cache/lmforge/hardware, so a run pays for it once; they are
# also MFU's denominator, for the dtype the run actually uses.

PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# the CPU flags that make a low-precision matmul native rather than emulated (Linux /proc/cpuinfo names)
NATIVE_CPU_FLAGS = {"bf16": ("amx_bf16", "avx512_bf16"), "fp16": ("amx_fp16", "avx512_fp16")}
MIN_SPEEDUP = 1.2  # auto picks bf16 only when the probe measures it at least this much faster than fp32


@dataclasses.dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses, why, and the measured matmul FLOP/s of its dtype (MFU's peak)."""

    precision: str  # fp32 | bf16 | fp16
    requested: str  # auto | fp32 | bf16 | fp16
    reason: str
    peak_flops: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def native_support(
    precision: str, device: torch.device | str = "cpu", flags: frozenset[str] | None = None
) -> str | None:
    """Why `precision` runs natively on `device` (the CPU flags or the GPU that provide it), or None where
    it would be emulated. fp32 is always native."""
    device = torch.device(device)
    if precision == "fp32":
        return "fp32 is native everywhere"
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return None
        return f"{torch.cuda.get_device_name(device)} supports {precision}"
    if device.type != "cpu":
        return None
    have = [f for f in NATIVE_CPU_FLAGS.get(precision, ()) if f in (cpu_flags() if flags is None else flags)]
    return f"the CPU has {' and '.join(have)}" if have else None


def decide_precision(
    requested: str,
    support: dict[str, str | None],
    flops: dict[str, float] | None = None,
    fallback: bool = True,
    where: str = "this CPU",
) -> PrecisionChoice:
    """The decision alone, from given capabilities and probe results (so it is testable for any
    machine): `support[p]` says why p is native (None: emulated), `flops[p]` the probe's matmul FLOP/s.

    - auto: bf16 where it is native and the probe measures it >= MIN_SPEEDUP x fp32, else fp32;
    - bf16/fp16 where they are emulated: fp32 with a message (`fallback`) or an LMForgeError;
    - otherwise the request as given."""
    from lmforge.errors import LMForgeError

    flops = flops or {}
    if requested == "auto":
        why = support.get("bf16")
        if why is None:
            return PrecisionChoice(
                "fp32", requested, f"auto: {where} has no native bf16 (no AMX / AVX-512 BF16)"
            )
        bf16, fp32 = flops.get("bf16"), flops.get("fp32")
        if bf16 is None or fp32 is None:
            return PrecisionChoice("bf16", requested, f"auto: {why}")
        measured = f"bf16 matmul {bf16 / 1e9:,.0f} GFLOP/s vs fp32 {fp32 / 1e9:,.0f}"
        if bf16 >= MIN_SPEEDUP * fp32:
            return PrecisionChoice("bf16", requested, f"auto: {why}; {measured}")
        return PrecisionChoice(
            "fp32", requested, f"auto: {why} but the probe measured {measured}: fp32 is as fast"
        )
    if requested not in PRECISION_DTYPES:
        raise LMForgeError(f"unknown precision {requested!r}; use auto, fp32, bf16 or fp16")
    why = support.get(requested)
    if why is None:
        message = f"--precision {requested}: {where} has no native {requested} (it would be emulated, several times slower than fp32)"
        if not fallback:
            raise LMForgeError(
                f"{message}; use --precision auto or fp32 (or --precision-fallback to run in fp32)"
            )
        return PrecisionChoice("fp32", requested, f"{message}: falling back to fp32")
    return PrecisionChoice(requested, requested, f"requested; {why}")


def choose_precision(
    requested: str, device: torch.device | str = "cpu", fallback: bool = True
) -> PrecisionChoice:
    """`decide_precision` on this machine: the native support read from the CPU flags / GPU and, where
    auto has a choice to make, the cached probe; the choice carries its dtype's measured peak."""
    device = torch.device(device)
    support = {p: native_support(p, device) for p in PRECISION_DTYPES}
    flops = {}
    if requested == "auto" and support["bf16"] is not None:
        flops = {p: matmul_flops(p, device) for p in ("fp32", "bf16")}
    where = "this CPU" if device.type == "cpu" else str(device)
    choice = decide_precision(requested, support, flops, fallback, where)
    return dataclasses.replace(choice, peak_flops=matmul_flops(choice.precision, device))


def cache_dir() -> Path:
    return Path(os.environ.get("LMFORGE_CACHE", "~/.cache/lmforge")).expanduser() / "hardware"


def probe_key(device: torch.device | str = "cpu") -> str:
    """What the probe's figures depend on, hashed (like the AOT package key): CPU model, flags, torch
    dispatch level, threads, torch version, device."""
    device = torch.device(device)
    parts = {
        "cpu": cpu_model(),
        "cpu_flags": sorted(cpu_flags()),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def on_cpu(probe):
    """`probe` run with the CPU as the default device: `lmforge.load` builds a model under
    `torch.device("meta")`, and a measurement made while it does (a quantized module choosing its kernel
    when built) would otherwise time meta tensors, which do no work."""

    @functools.wraps(probe)
    def run(*args, **kwargs):
        with torch.device("cpu"):
            return probe(*args, **kwargs)

    return run


def cached_probe(
    section: str, key: str, measure, device: torch.device | str = "cpu", keep_highest: bool = False
):
    """`measure()`'s result for `key` in `section` of this machine's probe record, measured on the
    first call and cached on disk (the record keeps every section; a concurrent writer at worst makes
    the other one measure again). With `keep_highest` (a peak: contention only lowers it) it is
    measured again and the record keeps the larger figure."""
    from lmforge.io.atomic import atomic_write_text

    path = cache_dir() / f"{probe_key(device)}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    figures = record.setdefault(section, {})
    fresh = on_cpu(measure)() if key not in figures or keep_highest else None
    if fresh is not None and (key not in figures or fresh > figures[key]):
        figures[key] = fresh
        record["machine"] = f"{cpu_model()}, {torch.get_num_threads()} threads"
        atomic_write_text(path, json.dumps(record, indent=1))
    return figures[key]


def matmul_flops(
    precision: str, device: torch.device | str = "cpu", seconds: float = 0.3, refresh: bool = False
) -> float:
    """Matmul FLOP/s of `precision` on `device` (square 1024 / 4096 matrices, the best of short windows
    so a moment of contention does not lower it), measured once per machine and cached on disk. A probe
    taken while other work held the cores throughout (a test suite on every core) reads low and stays
    so; `refresh` measures again and keeps the higher figure (the trainer does, for MFU's denominator)."""
    device = torch.device(device)
    measure = lambda: _measure_matmul(PRECISION_DTYPES[precision], device, seconds)  # noqa: E731
    return float(cached_probe("matmul_flops", precision, measure, device, keep_highest=refresh))


def _measure_matmul(dtype: torch.dtype, device: torch.device, seconds: float) -> float:
    n = 1024 if device.type == "cpu" else 4096
    reps = 2 if device.type == "cpu" else 20
    g = torch.Generator().manual_seed(0)  # never the global generator: a resumed run must not see this
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b  # warm-up
    sync()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == 0.0:
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best
