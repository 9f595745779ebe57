"""lmforge's own decode kernel (`native.c`): the int8 weight-only product for a few input rows.

torch's `_weight_int8pack_mm` streams a one-row product's weights at 5-10 GB/s with bf16 activations
(1.3 with float32 ones) where a float32 matrix-vector product reads 12-18, so int8 decode, which reads
a quarter of float32's bytes, gained little. This kernel converts the codes to float32 in registers and
multiplies in several accumulators, reading each weight row once for up to four input rows (12-20 GB/s
on a 2-thread Zen 3). The source is compiled once per machine with the system C compiler (`cc -O3
-march=native -fopenmp`, into the lmforge cache, keyed by the source, the compiler and the CPU) and
loaded with ctypes; the OpenMP runtime is the one torch already loaded, so it shares torch's threads.
Where there is no compiler, the build fails, or `LMFORGE_NATIVE_KERNELS=0`, `available()` is False
(`reason()` says why) and `Int8Linear` uses torch's kernel. Compiled decode steps reach it through the
custom op `lmforge::int8_native`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import torch

from lmforge.hardware import cpu_flags, cpu_model

SOURCE = Path(__file__).with_name("native.c")
BLOCK = 32  # the kernel's inputs must be a multiple of this
_failure: list[str] = []


def _build_dir() -> Path:
    return Path(os.environ.get("LMFORGE_CACHE", "~/.cache/lmforge")).expanduser() / "native"


def _compiler_version(cc: str) -> str:
    return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use (a second or so), or None with `reason()` set."""
    if os.environ.get("LMFORGE_NATIVE_KERNELS", "1") == "0":
        _failure.append("LMFORGE_NATIVE_KERNELS=0")
        return None
    cc = os.environ.get("CC", "cc")
    try:
        machine = f"{cpu_model()} {' '.join(sorted(cpu_flags()))}"
        key = hashlib.sha256(
            b"\0".join([SOURCE.read_bytes(), _compiler_version(cc).encode(), machine.encode()])
        )
        path = _build_dir() / f"lmforge_native_{key.hexdigest()[:20]}.so"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # built aside, then renamed in
                out = Path(tmp) / path.name
                flags = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
                command = [cc, *flags, "-o", str(out), str(SOURCE)]
                done = subprocess.run(command, capture_output=True, text=True, timeout=300)
                if done.returncode != 0:
                    raise OSError(f"{' '.join(command[:6])} failed: {done.stderr.strip()[-300:]}")
                os.replace(out, path)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as e:
        _failure.append(f"could not build {SOURCE.name} ({e})")
        return None
    p, i, c_long = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    lib.lmf_int8_mm.argtypes = [p, i, c_long, c_long, p, p, p, c_long, p, i]
    lib.lmf_int8_mm.restype = None
    return lib


def available() -> bool:
    return library() is not None


def reason() -> str:
    """Why the kernel is not available ("" when it is)."""
    return "" if available() else _failure[-1]


def fits(in_features: int) -> bool:
    """Whether a weight's inputs suit the kernel (a multiple of 32)."""
    return in_features % BLOCK == 0


def int8_mm(
    x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """x (M, K) · (codes int8 (N, K) · scale float32 (N,))ᵀ + bias float32 (N,), in x's dtype (float32
    or bfloat16); x contiguous, K a multiple of 32."""
    (n, k), (m, _) = codes.shape, x.shape
    out = torch.empty(m, n, dtype=x.dtype)
    bias_ptr = None if bias is None else bias.data_ptr()
    threads = torch.get_num_threads()
    bf16 = x.dtype == torch.bfloat16
    library().lmf_int8_mm(
        x.data_ptr(), bf16, m, k, codes.data_ptr(), scale.data_ptr(), bias_ptr, n, out.data_ptr(), threads
    )
    return out


@torch.library.custom_op("lmforge::int8_native", mutates_args=())
def _int8_op(
    x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    return int8_mm(x, codes, scale, bias)


@_int8_op.register_fake
def _(x, codes, scale, bias):  # what a compiled graph needs to know: the output's shape
    return x.new_empty(x.shape[0], codes.shape[0])
