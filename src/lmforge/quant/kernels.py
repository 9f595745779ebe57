"""torch's CPU weight-only kernels, which of them this machine runs fast, and the int4 packing.

- `aten._weight_int8pack_mm(x (M, K), codes int8 (N, K), scales (N,)) -> (M, N)`;
- `aten._weight_int4pack_mm_for_cpu(x (M, K), packed, group_size, scale_and_zero (K/g, N, 2))`, with
  `packed = aten._convert_weight_to_int4pack_for_cpu(codes int32 (N, K), inner_k_tiles)`: a layout
  chosen by the kernel (it may depend on the CPU), so checkpoints store the codes two to a byte
  (`nibbles`) and a module packs them for the kernel when built; `unpack_int4` reads the kernel's
  layout back by packing index digits through the kernel itself (no assumption about the layout).
Both kernels run bfloat16 activations about 10x faster than float32 ones, on CPUs with AVX-512 BF16 /
AMX and (measured on a Zen 3) on CPUs without; `fast_dtype()` measures which (once per process). What
is not a kernel's input (norms, attention, matmuls of dequantized weights) runs in `matmul_dtype()`.
Where a kernel is missing (another device, an older torch), `available()` says so and the modules
dequantize and use `F.linear` — the same arithmetic, slower.
"""

from __future__ import annotations

import functools
import time

import torch
import torch.nn.functional as F

from lmforge.hardware import PRECISION_DTYPES, cached_probe, choose_precision, on_cpu
from lmforge.model.ops import define_op

INNER_K_TILES = 8  # what the CPU packer expects for K ≥ 64 (tiles of 8 × 16 × 2 values)


@functools.cache
@on_cpu
def available(kind: str) -> bool:
    """Whether torch has the CPU kernel for `kind` ("int8" or "int4") and it runs here."""
    x = torch.randn(1, 64, dtype=torch.bfloat16)
    try:
        if kind == "int8":
            codes = torch.ones(32, 64, dtype=torch.int8)
            torch.ops.aten._weight_int8pack_mm(x, codes, torch.ones(32, dtype=torch.bfloat16))
        else:
            packed = pack_int4(torch.ones(32, 64, dtype=torch.uint8))
            scale_zero = torch.ones(2, 32, 2, dtype=torch.bfloat16)
            torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, 32, scale_zero)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return True


@functools.cache
@on_cpu
def fast_dtype() -> torch.dtype:
    """The activations' dtype for the kernels: bfloat16 where the int8 kernel runs faster with bf16
    activations than with fp32 (measured once per process on a 1536 × 576 matrix-vector product,
    SmolLM2's MLP shape), else float32. Not a question of native bf16 alone: on a Zen 3 without it the
    kernels ran bf16 activations 6-12x faster than float32 ones (and faster than a float32 matmul)."""
    if not available("int8"):
        return torch.float32
    codes = torch.randint(-127, 128, (1536, 576), dtype=torch.int8)
    times = {}
    for dtype in (torch.bfloat16, torch.float32):
        x, scale = torch.randn(1, 576, dtype=dtype), torch.rand(1536, dtype=dtype)
        times[dtype] = _cpu_time(lambda x=x, scale=scale: torch.ops.aten._weight_int8pack_mm(x, codes, scale))
    return min(times, key=times.get)


@functools.cache
def matmul_dtype() -> torch.dtype:
    """The dtype a quantized model computes the rest in (norms, attention, the matmuls of dequantized
    weights): bfloat16 where this CPU runs it natively and its matmul probe measures it faster (AMX,
    AVX-512 BF16), else float32 — `lmforge.hardware.choose_precision("auto")`."""
    return PRECISION_DTYPES[choose_precision("auto").precision]


def aligned(t: torch.Tensor) -> torch.Tensor:
    """`t`, copied when its data is not 64-byte aligned (the kernels' vector loads need it)."""
    return t if t.device.type == "meta" or t.data_ptr() % 64 == 0 else t.clone()


def int8_mm(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten._weight_int8pack_mm(x, codes, scale.to(x.dtype))


def int4_mm(x: torch.Tensor, packed: torch.Tensor, group_size: int, scale_zero: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group_size, scale_zero.to(x.dtype))


# what compiled steps call for torch's int4 kernel: inductor lowers `_weight_int4pack_mm_for_cpu` with
# its group size as a tensor constant of the graph, which an AOT package (its constants the model's own
# tensors) cannot be given; an operator of ours keeps the group size an integer argument
define_op(
    "int4_torch(Tensor x, Tensor packed, int group_size, Tensor scale_zero) -> Tensor",
    int4_mm,
    lambda x, packed, group_size, scale_zero: x.new_empty(x.shape[0], packed.shape[0]),
)


def scale_and_zero(scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """(N, K/g) scale and zero as the kernel's (K/g, N, 2)."""
    return torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Codes 0..15 (N, K) in the CPU int4 kernel's packed layout."""
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), INNER_K_TILES)


@functools.lru_cache(maxsize=4)
def _int4_layout(n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each packed byte, the flat (N·K) index of the code in its low and its high nibble: pack
    the flat index of every element four bits at a time and read the digits back."""
    index = torch.arange(n * k, dtype=torch.int64).reshape(n, k)
    low = torch.zeros(n * k // 2, dtype=torch.int64)
    high = torch.zeros(n * k // 2, dtype=torch.int64)
    shift = 0
    while (n * k - 1) >> shift:
        packed = pack_int4(((index >> shift) & 15).to(torch.uint8)).reshape(-1).to(torch.int64)
        low |= (packed & 15) << shift
        high |= (packed >> 4) << shift
        shift += 4
    return low, high


def unpack_int4(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """The codes (N, K) uint8 that `pack_int4` packed."""
    low, high = _int4_layout(n, k)
    flat = packed.reshape(-1)
    codes = torch.empty(n * k, dtype=torch.uint8)
    codes[low] = flat & 15
    codes[high] = flat >> 4
    return codes.reshape(n, k)


def nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Codes 0..15 (N, K) two to a byte (N, K/2): column 2j in the low nibble, 2j+1 in the high one."""
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).to(torch.uint8)


def from_nibbles(packed: torch.Tensor) -> torch.Tensor:
    return torch.stack([packed & 15, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The fallback: `F.linear` on dequantized weights, in the activations' dtype."""
    return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


def _int8_probe_weight() -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and float32 scales of a 1536 × 576 weight (SmolLM2's MLP shape), as the probes time."""
    return torch.randint(-127, 128, (1536, 576), dtype=torch.int8), torch.rand(1536)


def _int4_probe_weight(group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes, scale and zero of a 1536 × 1152 weight (which 32, 64 and 128 divide) in groups of
    `group_size`."""
    codes = torch.randint(0, 16, (1536, 1152), dtype=torch.uint8)
    scale = torch.rand(1536, 1152 // group_size, dtype=torch.bfloat16)
    return codes, scale, torch.rand(1536, 1152 // group_size, dtype=torch.bfloat16)


@functools.cache
@on_cpu
def int8_rows(native_kernel: bool) -> int:
    """The most input rows for which `_weight_int8pack_mm` (`native_kernel`: lmforge's own, its
    activations in `matmul_dtype()`) beats dequantizing to `matmul_dtype()` and a plain matmul, measured
    once per process on a 1536 × 576 weight; 0 when torch's kernel is missing. Decode steps (a few rows)
    take the kernel, prefill (its cost grows with the rows, the matmul's hardly) the other."""
    from lmforge.quant import native

    if not native_kernel and not available("int8"):
        return 0
    mm_dtype = matmul_dtype()
    codes, scale = _int8_probe_weight()
    scale_fast = scale.to(fast_dtype())
    return _rows_kernel_wins(
        (lambda x: native.entry("int8_native")(x, codes, scale, None))
        if native_kernel
        else (lambda x: int8_mm(x, codes, scale_fast)),
        lambda x: F.linear(x, codes.to(mm_dtype) * scale[:, None].to(mm_dtype)),
        576,
        kernel_dtype=mm_dtype if native_kernel else fast_dtype(),
    )


@functools.cache
@on_cpu
def int4_rows(group_size: int, native_kernel: bool) -> int:
    """Like `int8_rows` for `_weight_int4pack_mm_for_cpu` (or lmforge's int4 kernel) with groups of
    `group_size` (a 1536 × 1152 weight): prefill-sized inputs run faster as a matmul of dequantized
    weights (a Zen 3, before this choice, prefilled SmolLM2 int4 at 9 tok/s)."""
    from lmforge.quant import native
    from lmforge.quant.formats import dequantize_int4

    if not native_kernel and not available("int4"):
        return 0
    mm_dtype = matmul_dtype()
    codes, scale, zero = _int4_probe_weight(group_size)
    if native_kernel:
        packed, scale_offset = native.pack_int4(codes), native.scale_offset(scale, zero)
        kernel = lambda x: native.entry("int4_native")(x, packed, group_size, scale_offset, None)  # noqa: E731
    else:
        packed, scale_zero = pack_int4(codes), scale_and_zero(scale, zero).to(fast_dtype())
        kernel = lambda x: int4_mm(x, packed, group_size, scale_zero)  # noqa: E731
    return _rows_kernel_wins(
        kernel,
        lambda x: F.linear(x, dequantize_int4(codes, scale, zero, group_size, mm_dtype)),
        1152,
        kernel_dtype=mm_dtype if native_kernel else fast_dtype(),
    )


@functools.cache
@on_cpu
def native_int8() -> bool:
    """Whether lmforge's own int8 kernel (`native.py`) is built here and runs a decode-sized product
    faster than `_weight_int8pack_mm` (`_native_wins`); on a Zen 3 (2 threads) it read the weights at
    12-20 GB/s, torch's kernel at 6-10. Measured once per machine and kernel build, and kept with the
    hardware probe (`lmforge.hardware.cached_probe`): every process then makes the same choice, which
    an AOT-compiled decode step depends on (its package is traced for one kernel)."""
    from lmforge.quant import native

    if not native.available():
        return False
    if not available("int8"):
        return True

    def measure() -> bool:
        codes, scale = _int8_probe_weight()
        scale_fast = scale.to(fast_dtype())
        return _native_wins(
            codes,
            lambda x, c: native.entry("int8_native")(x, c, scale, None),
            lambda x, c: int8_mm(x, c, scale_fast),
            576,
        )

    return cached_probe("native_kernel_wins", f"int8 v3 {native.build_name()}", measure)


@functools.cache
@on_cpu
def native_int4(group_size: int) -> bool:
    """Like `native_int8` for lmforge's int4 kernel against `_weight_int4pack_mm_for_cpu` (a 1536 ×
    1152 weight in groups of `group_size`); on the Zen 3, 9-13 GB/s against 4-6. Kept per machine."""
    from lmforge.quant import native

    if not native.available():
        return False
    if not available("int4"):
        return True

    def measure() -> bool:
        codes, scale, zero = _int4_probe_weight(group_size)
        scale_offset = native.scale_offset(scale, zero)
        scale_zero = scale_and_zero(scale, zero).to(fast_dtype())
        packed = (native.pack_int4(codes), pack_int4(codes))
        return _native_wins(
            packed,
            lambda x, c: native.entry("int4_native")(x, c[0], group_size, scale_offset, None),
            lambda x, c: int4_mm(x, c[1], group_size, scale_zero),
            1152,
        )

    return cached_probe("native_kernel_wins", f"int4 g{group_size} v3 {native.build_name()}", measure)


@functools.cache
@on_cpu
def native_bf16() -> bool:
    """Whether lmforge's bf16 kernel (`native.bf16_mm`) takes a bfloat16 linear's decode rows
    (`BF16Linear`) instead of torch's one-row product (`torch.mv`, what the model's `Linear` runs for one
    bfloat16 row): kept unless measured clearly slower (`_native_wins`, a 1536 × 576 weight, SmolLM2's
    MLP shape). On a Xeon with AVX-512 BF16 (2 threads) torch's read such weights at 12-15 GB/s. Kept
    per machine."""
    from lmforge.quant import native

    if not native.available():
        return False

    def measure() -> bool:
        weight = torch.randn(1536, 576).to(torch.bfloat16)
        return _native_wins(
            weight,
            lambda x, w: native.entry("bf16_native")(x, w, None),
            lambda x, w: torch.mv(w, x[0]),
            576,
            dtype=torch.bfloat16,
        )

    return cached_probe("native_kernel_wins", f"bf16 v2 {native.build_name()}", measure)


@functools.cache
@on_cpu
def bf16_rows() -> int:
    """The most input rows for which lmforge's bf16 kernel beats `F.linear` in bfloat16 (measured once
    per process, 1536 × 576): a few-row batch reads the weights once in the kernel, a prompt runs
    faster through torch's matrix product."""
    from lmforge.quant import native

    weight = torch.randn(1536, 576).to(torch.bfloat16)
    return _rows_kernel_wins(
        lambda x: native.entry("bf16_native")(x, weight, None),
        lambda y: F.linear(y.to(torch.bfloat16), weight),
        576,
        kernel_dtype=torch.bfloat16,
    )


def _native_wins(weights, ours, theirs, width: int, dtype: torch.dtype | None = None) -> bool:
    """Whether lmforge's kernel `ours(x, w)` (x one row in `matmul_dtype()`, or `dtype`) is kept over
    torch's `theirs(x, w)` (x in `fast_dtype()`, or `dtype`): unless torch's is clearly faster
    (`_close_or_faster`) both over 48 copies of the weights (more than the caches hold, as a decode
    step streams its layers) and over one copy read 48 times (held in cache). Ours reads memory at the
    bus's pace and torch's computes, so a neighbour contending for memory slows ours alone; the copy in
    cache is out of its reach (on a Xeon a probe taken while the test suite ran chose torch's int8
    kernel, which a quiet machine runs 1.4-1.9x slower). The choice is kept for the machine. Callers
    pass ours as decode steps call it (`native.entry`: the C++ operator where it is built): through the
    ctypes path's Python, under the probe's `on_cpu` device mode, ours had measured about 1.5x its time
    (Xeon: int8 5.4-6.1 ms against 2.7, int4 g64 8.0 against 5.0), and torch's int4 kernel was chosen."""
    copies = [
        tuple(t.clone() for t in weights) if isinstance(weights, tuple) else weights.clone()
        for _ in range(48)
    ]
    x = torch.randn(1, width)
    x_ours, x_theirs = x.to(dtype or matmul_dtype()), x.to(dtype or fast_dtype())
    for held in (copies, copies[:1] * 48):  # streamed, then (where torch's won that) in cache
        if _close_or_faster(
            lambda held=held: [ours(x_ours, w) for w in held],
            lambda held=held: [theirs(x_theirs, w) for w in held],
        ):
            return True
    return False


def _close_or_faster(ours, theirs) -> bool:
    """Whether `ours()` takes less than 1.25x the CPU time of `theirs()`, each side's best of 8 rounds
    taken in turn: a moment when another process fights for the memory bus must not decide (torch's
    int4 kernel "won" at 2x slower with the best of four rounds and no margin, three times; on that Zen
    3 ours took 5.8-15 ms of CPU, torch's 13.9-16.9)."""
    t_ours, t_theirs = float("inf"), float("inf")
    for _ in range(8):
        t_ours = min(t_ours, _cpu_time(ours, runs=2))
        t_theirs = min(t_theirs, _cpu_time(theirs, runs=2))
    return t_ours < 1.25 * t_theirs


def _rows_kernel_wins(kernel, dequantized, width: int, kernel_dtype: torch.dtype) -> int:
    """The most rows (1, then doubling up to 256) for which `kernel(x)`, x (rows, width) in
    `kernel_dtype`, takes less CPU time than `dequantized(x)` with x in `matmul_dtype()`."""
    best = 1
    for rows in (2, 4, 8, 16, 32, 64, 128, 256):
        x = torch.randn(rows, width, dtype=kernel_dtype)
        y = x.to(matmul_dtype())
        if _cpu_time(lambda x=x: kernel(x)) > _cpu_time(lambda y=y: dequantized(y)):
            break
        best = rows
    return best


def _cpu_time(fn, runs: int = 5) -> float:
    """The fastest of a few runs of `fn` on one thread, in CPU time: what other processes on the
    machine do moves it little."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fn()
        times = []
        for _ in range(runs):
            start = time.thread_time()
            fn()
            times.append(time.thread_time() - start)
    finally:
        torch.set_num_threads(threads)
    return min(times)
