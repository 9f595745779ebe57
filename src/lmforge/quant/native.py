"""lmforge's own decode kernels (`native.c`): int8 and int4 weight-only products for a few input rows.

torch's CPU kernels stream a one-row product's weights slowly: `_weight_int8pack_mm` at 5-10 GB/s with
bf16 activations (1.3 with float32 ones) where a float32 matrix-vector product reads 12-18, and
`_weight_int4pack_mm_for_cpu` at 4-6, so quantized decode, reading a quarter or an eighth of float32's
bytes, gained little. These read each weight row once for up to four input rows (int4: eight): int8 codes become
float32 in registers and multiply in several accumulators (12-20 GB/s on a 2-thread Zen 3); int4 codes
multiply int16 activations (one scale per row and group) in integer multiply-adds, one conversion a
group (6-9 GB/s). The source is compiled once per machine with the system C compiler (`cc -O3
-march=native -fopenmp`, into the lmforge cache, keyed by the source, the compiler and the CPU) and
loaded with ctypes; the OpenMP runtime is the one torch already loaded, so they share torch's threads.
Where there is no compiler, the build fails, or `LMFORGE_NATIVE_KERNELS=0`, `available()` is False
(`reason()` says why) and the modules use torch's kernels. Compiled decode steps reach them through the
custom ops `lmforge::int8_native` / `lmforge::int4_native`.

The int4 codes have their own layout here (`pack_int4`), and scale and offset per group are float32
pairs, w = scale · q + offset (`scale_offset`).
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
from lmforge.model.ops import define_op

SOURCE = Path(__file__).with_name("native.c")
BLOCK = 32  # the kernel's inputs must be a multiple of this
_DTYPES = (torch.float32, torch.bfloat16)
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
    lib.lmf_int4_mm.argtypes = [p, i, c_long, c_long, p, p, c_long, p, c_long, p, i]
    lib.lmf_int8_mm.restype = lib.lmf_int4_mm.restype = ctypes.c_int  # -1: out of memory
    return lib


def available() -> bool:
    return library() is not None


def reason() -> str:
    """Why the kernel is not available ("" when it is)."""
    return "" if available() else _failure[-1]


def fits(in_features: int, group_size: int | None = None) -> bool:
    """Whether a weight's inputs (and int4 groups) suit the kernels: multiples of 32."""
    return in_features % BLOCK == 0 and (group_size is None or group_size % BLOCK == 0)


def _check(x, codes, codes_dtype, scales, bias) -> None:
    """The kernels read raw memory: refuse what they would misread (a microsecond a call)."""
    if (
        x.dtype not in _DTYPES
        or codes.dtype != codes_dtype
        or scales.dtype != torch.float32
        or (bias is not None and (bias.dtype != torch.float32 or not bias.is_cpu))
        or not (x.is_cpu and codes.is_cpu and scales.is_cpu)
        or not (x.is_contiguous() and codes.is_contiguous() and scales.is_contiguous())
    ):
        raise ValueError(
            f"lmforge's native kernels take contiguous CPU tensors: x float32/bfloat16, codes {codes_dtype}, "
            "scales and bias float32"
        )


def int8_mm(
    x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """x (M, K) · (codes int8 (N, K) · scale float32 (N,))ᵀ + bias float32 (N,), in x's dtype (float32
    or bfloat16); x contiguous, K a multiple of 32."""
    return _run("lmf_int8_mm", torch.int8, x, codes, scale, bias, codes.shape[1])


def int4_mm(
    x: torch.Tensor,
    packed: torch.Tensor,
    group_size: int,
    scale_offset: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """x (M, K) · wᵀ + bias, w = scale · q + offset from `pack_int4` codes (N, K/2) and (N, K/g, 2)
    float32 pairs (`scale_offset`); the activations enter as int16 per row and group (see native.c)."""
    return _run("lmf_int4_mm", torch.uint8, x, packed, scale_offset, bias, 2 * packed.shape[1], group_size)


def _run(kernel: str, codes_dtype: torch.dtype, x, codes, scales, bias, k: int, *options) -> torch.Tensor:
    """Check the tensors, then call `kernel`(x, bf16?, M, K, codes, scales, *options, bias, N, out,
    threads)."""
    _check(x, codes, codes_dtype, scales, bias)
    m, n = x.shape[0], codes.shape[0]
    out = x.new_empty(m, n)
    bias_ptr = None if bias is None else bias.data_ptr()
    bf16, threads = x.dtype == torch.bfloat16, torch.get_num_threads()
    rest = (codes.data_ptr(), scales.data_ptr(), *options, bias_ptr, n, out.data_ptr(), threads)
    if getattr(library(), kernel)(x.data_ptr(), bf16, m, k, *rest):
        raise MemoryError(
            f"lmforge's native kernel could not allocate the activations of {m} rows x {k} inputs"
        )
    return out


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Codes 0..15 (N, K) as (N, K/2) bytes: in each block of 32 inputs, byte j holds input j in its low
    nibble and input j + 16 in its high one."""
    n, k = codes.shape
    blocks = codes.to(torch.uint8).reshape(n, k // BLOCK, 2, BLOCK // 2)
    return (blocks[:, :, 0] | (blocks[:, :, 1] << 4)).reshape(n, k // 2)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    n, half = packed.shape
    blocks = packed.reshape(n, 2 * half // BLOCK, 1, BLOCK // 2)
    return torch.cat([blocks & 15, blocks >> 4], dim=2).reshape(n, 2 * half)


def scale_offset(scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Int4Linear's (N, K/g) scale and zero (w = (q − 8) · scale + zero) as the kernel's (N, K/g, 2)
    float32 pairs (scale, zero − 8 · scale)."""
    scale, zero = scale.float(), zero.float()
    return torch.stack([scale, zero - 8 * scale], dim=-1).contiguous()


# what compiled steps call; the fakes give the output's shape while tracing
define_op(
    "int8_native(Tensor x, Tensor codes, Tensor scale, Tensor? bias) -> Tensor",
    int8_mm,
    lambda x, codes, scale, bias: x.new_empty(x.shape[0], codes.shape[0]),
)
define_op(
    "int4_native(Tensor x, Tensor packed, int group_size, Tensor scale_offset, Tensor? bias) -> Tensor",
    int4_mm,
    lambda x, packed, group_size, scale_offset, bias: x.new_empty(x.shape[0], packed.shape[0]),
)
