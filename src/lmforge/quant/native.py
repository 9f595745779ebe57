"""lmforge's own decode kernels (`native.c`): int8 and int4 weight-only products for a few input rows,
and bfloat16 weights' (the `bf16` scheme's linears, `BF16Linear`).

torch's CPU kernels stream a one-row product's weights slowly: `_weight_int8pack_mm` at 5-10 GB/s with
bf16 activations (1.3 with float32 ones) where a float32 matrix-vector product reads 12-18, and
`_weight_int4pack_mm_for_cpu` at 4-6, so quantized decode, reading a quarter or an eighth of float32's
bytes, gained little. These read each weight row once for up to four input rows (int4: eight), and
multiply the codes with int16 activations (one scale per row and group of inputs: each value at most
2^-16 of its group's largest off) in integer multiply-adds, one float conversion a group: int8 streams
near the memory bandwidth (17-20 GB/s on a 2-thread Zen 3, where a plain read of memory reached 19-23),
int4 at 9-13 GB/s; where the CPU has AVX-512 VNNI one 512-bit multiply-accumulate takes 32 codes. (int8
activations, as llama.cpp's Q4_0 x Q8_0, ran int4 1.3-1.7x faster, but its steps' perplexity on SmolLM2
rose 6% over the dequantized weights': not taken.) The source is compiled
once per machine with the system C compiler (`cc -O3 -march=native -fopenmp`, into the lmforge cache,
keyed by the source, the compiler, the CPU and the flags) and loaded with ctypes; the OpenMP runtime is
the one torch already loaded, so they share torch's threads. Where there is no compiler, the build fails, or
`LMFORGE_NATIVE_KERNELS=0`, `available()` is False (`reason()` says why) and the modules use torch's
kernels. Decode steps (eager, compiled or AOT) reach them through the operators `lmforge::int8_native`
/ `int4_native` / `bf16_native`, whose CPU kernels are C++ (`native_ops.cpp`, `_load_ops`) where that
builds (`entry`).

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
from collections.abc import Callable
from pathlib import Path

import torch

from lmforge.hardware import cpu_flags, cpu_model
from lmforge.model.ops import define_op, drop_cpu_kernel, register_cpu_kernel

SOURCE = Path(__file__).with_name("native.c")
OPS_SOURCE = Path(__file__).with_name("native_ops.cpp")
BLOCK = 32  # the kernel's inputs must be a multiple of this
_DTYPES = (torch.float32, torch.bfloat16)
_failure: list[str] = []
_ops: list[Path] = []  # the C++ operators' library, once loaded
_ops_failure: list[str] = []


def _build_dir() -> Path:
    return Path(os.environ.get("LMFORGE_CACHE", "~/.cache/lmforge")).expanduser() / "native"


def _compiler_version(cc: str) -> str:
    return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout


def _key(*parts: str | bytes) -> str:
    return hashlib.sha256(b"\0".join(p if isinstance(p, bytes) else p.encode() for p in parts)).hexdigest()[
        :20
    ]


def _build(path: Path, command: Callable[[Path], list[str]]) -> None:
    """Run the compiler `command(out)` into a temporary folder beside `path`, then rename the result in
    (a failed or interrupted build leaves nothing behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        out = Path(tmp) / path.name
        args = command(out)
        done = subprocess.run(args, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise OSError(f"{' '.join(args[:6])} failed: {done.stderr.strip()[-300:]}")
        os.replace(out, path)


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use (a second or so), or None with `reason()` set. The C++
    registration of its operators (`_load_ops`) comes with it where it builds."""
    if os.environ.get("LMFORGE_NATIVE_KERNELS", "1") == "0":
        _failure.append("LMFORGE_NATIVE_KERNELS=0")
        return None
    cc = os.environ.get("CC", "cc")
    try:
        machine = f"{cpu_model()} {' '.join(sorted(cpu_flags()))}"
        # -fno-math-errno: lrintf inlined as one instruction (a call each had cost 2-3 us per kernel call)
        flags = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC"]
        key = _key(SOURCE.read_bytes(), _compiler_version(cc), machine, " ".join(flags))
        path = _build_dir() / f"lmforge_native_{key}.so"
        if not path.exists():
            _build(path, lambda out: [cc, *flags, "-o", str(out), str(SOURCE)])
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as e:
        _failure.append(f"could not build {SOURCE.name} ({e})")
        return None
    p, i, c_long = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    lib.lmf_int8_mm.argtypes = [p, i, c_long, c_long, p, p, p, c_long, p, i]
    lib.lmf_int4_mm.argtypes = [p, i, c_long, c_long, p, p, c_long, p, c_long, p, i]
    lib.lmf_bf16_mm.argtypes = [p, i, c_long, c_long, p, p, c_long, p, i]
    for kernel in (lib.lmf_int8_mm, lib.lmf_int4_mm, lib.lmf_bf16_mm):
        kernel.restype = ctypes.c_int  # -1: out of memory
    _load_ops(path)
    return lib


def _load_ops(kernels: Path) -> None:
    """Build (once per machine, ~10 s) and load `native_ops.cpp`, the C++ CPU kernels of
    `lmforge::int8_native` / `int4_native` linked to the library at `kernels`, in place of the Python
    ones below: then no decode step enters Python to reach the kernels. Once per process; where the C++
    build fails (no C++ compiler, no torch headers) the Python kernels stay and `ops_reason()` says why."""
    if _ops:
        return
    cxx = os.environ.get("CXX", "c++")
    torch_dir = Path(torch.__file__).parent
    try:
        key = _key(OPS_SOURCE.read_bytes(), kernels.name, torch.__version__, _compiler_version(cxx))
        path = _build_dir() / f"lmforge_native_ops_{key}.so"
        if not path.exists():
            abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
            includes = [
                "-I",
                str(torch_dir / "include"),
                "-I",
                str(torch_dir / "include/torch/csrc/api/include"),
            ]
            links = [str(kernels), "-L", str(torch_dir / "lib"), "-lc10", "-ltorch_cpu"]
            rpath = f"-Wl,-rpath,{torch_dir / 'lib'}"
            flags = ["-O2", "-std=c++20", "-shared", "-fPIC", abi, *includes]
            _build(path, lambda out: [cxx, *flags, "-o", str(out), str(OPS_SOURCE), *links, rpath])
    except (OSError, subprocess.SubprocessError) as e:
        _ops_failure.append(f"could not build {OPS_SOURCE.name} ({e})")
        return
    for name in PYTHON_KERNELS:  # off first: torch warns when a kernel replaces another
        drop_cpu_kernel(name)
    try:
        torch.ops.load_library(str(path))
    except OSError as e:
        for name, kernel in PYTHON_KERNELS.items():
            register_cpu_kernel(name, kernel)
        _ops_failure.append(f"could not load {path.name} ({e})")
        return
    _ops.append(path)


def compiled_ops() -> bool:
    """Whether `lmforge::int8_native` / `int4_native` / `bf16_native` run the C++ kernels (`_load_ops`,
    run by `library()`: a module that chose the native path has called it)."""
    return bool(_ops)


def entry(name: str) -> Callable[..., torch.Tensor]:
    """How a module's forward reaches kernel `name` ("int8_native", "int4_native", "bf16_native"): the
    operator `lmforge::<name>` where it runs the C++ kernel (no Python between a decode step and the
    kernel) or a graph is being traced (a traced graph cannot make a ctypes call), else the ctypes call
    straight away (the operator's Python kernel would only add a dispatch)."""
    if torch.compiler.is_compiling() or compiled_ops():
        return getattr(torch.ops.lmforge, name)
    return globals()[PYTHON_KERNELS[name].__name__]  # looked up by name: a test may wrap it


def ops_reason() -> str:
    """Why the operators run Python kernels ("" when they run the C++ ones)."""
    return "" if _ops else (_ops_failure[-1] if _ops_failure else reason())


def available() -> bool:
    return library() is not None


def build_name() -> str:
    """The built library's file name: it changes with the source, the compiler and the CPU."""
    return Path(library()._name).name


def reason() -> str:
    """Why the kernel is not available ("" when it is)."""
    return "" if available() else _failure[-1]


def fits(in_features: int, group_size: int | None = None) -> bool:
    """Whether a weight's inputs (and int4 groups) suit the kernels: multiples of 32."""
    return in_features % BLOCK == 0 and (group_size is None or group_size % BLOCK == 0)


def int8_group(k: int) -> int:
    """The inputs per int16 activation group in the int8 kernel, for rows of `k` (a multiple of 32)."""
    return 128 if k % 128 == 0 else 64 if k % 64 == 0 else 32


def _check(x, codes, codes_dtype, scales, scales_numel: int, bias, k: int) -> None:
    """The kernels read raw memory: refuse what they would misread (a microsecond a call); the C++
    operators (`native_ops.cpp`) check the same. `codes` are the weights (bfloat16 for bf16_mm, which
    has no `scales`)."""

    def fits(t, numel: int) -> bool:
        return t.dtype == torch.float32 and t.is_cpu and t.is_contiguous() and t.numel() == numel

    if (
        x.dtype not in _DTYPES
        or x.dim() != 2
        or x.shape[1] != k
        or k % BLOCK
        or codes.dtype != codes_dtype
        or codes.dim() != 2
        or not (x.is_cpu and codes.is_cpu and x.is_contiguous() and codes.is_contiguous())
        or (scales is not None and not fits(scales, scales_numel))
        or (bias is not None and not fits(bias, codes.shape[0]))
    ):
        raise ValueError(
            f"lmforge's native kernels take contiguous CPU tensors: x float32/bfloat16 (M, K), K a multiple "
            f"of {BLOCK}, codes {codes_dtype}, scales and bias float32 of matching sizes"
        )


def int8_mm(
    x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """x (M, K) · (codes int8 (N, K) · scale float32 (N,))ᵀ + bias float32 (N,), in x's dtype (float32
    or bfloat16); x contiguous, K a multiple of 32."""
    return _run("lmf_int8_mm", torch.int8, x, codes, scale, codes.shape[0], bias, codes.shape[1])


def int4_mm(
    x: torch.Tensor,
    packed: torch.Tensor,
    group_size: int,
    scale_offset: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """x (M, K) · wᵀ + bias, w = scale · q + offset from `pack_int4` codes (N, K/2) and (N, K/g, 2)
    float32 pairs (`scale_offset`); the activations enter as int16 per row and group (see native.c)."""
    k = 2 * packed.shape[1]
    if group_size <= 0 or group_size % BLOCK or k % group_size:
        raise ValueError("lmforge's int4 kernel takes groups of a multiple of 32 inputs that divide K")
    n_scales = 2 * packed.shape[0] * (k // group_size)
    return _run("lmf_int4_mm", torch.uint8, x, packed, scale_offset, n_scales, bias, k, group_size)


def bf16_mm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (M, K) · weightᵀ + bias float32 (N,), weight bfloat16 (N, K), in x's dtype (float32 or bfloat16);
    where the CPU multiplies bfloat16 natively (AVX-512 BF16) the activations are rounded to bfloat16
    (exact for bfloat16 ones), elsewhere the weights are widened to float32 (see native.c)."""
    return _run("lmf_bf16_mm", torch.bfloat16, x, weight, None, 0, bias, weight.shape[1])


def _run(
    kernel: str, codes_dtype, x, codes, scales, scales_numel: int, bias, k: int, *options
) -> torch.Tensor:
    """Check the tensors, then call `kernel`(x, bf16?, M, K, codes, scales, *options, bias, N, out,
    threads) (no scales: `scales` None)."""
    _check(x, codes, codes_dtype, scales, scales_numel, bias, k)
    m, n = x.shape[0], codes.shape[0]
    out = x.new_empty(m, n)
    bias_ptr = None if bias is None else bias.data_ptr()
    bf16, threads = x.dtype == torch.bfloat16, torch.get_num_threads()
    scales_ptr = () if scales is None else (scales.data_ptr(),)
    rest = (codes.data_ptr(), *scales_ptr, *options, bias_ptr, n, out.data_ptr(), threads)
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


# what decode steps call; the fakes give the output's shape while tracing. These Python kernels serve
# until `_load_ops` registers the C++ ones
PYTHON_KERNELS = {"int8_native": int8_mm, "int4_native": int4_mm, "bf16_native": bf16_mm}
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
define_op(
    "bf16_native(Tensor x, Tensor weight, Tensor? bias) -> Tensor",
    bf16_mm,
    lambda x, weight, bias: x.new_empty(x.shape[0], weight.shape[0]),
)
