"""The one-token decode step compiled ahead of time (torch.export + AOTInductor): `aot=True`.

With `compile=True` every step still passes through dynamo: its guards, its wrappers and the Python that
hands the graph its ~250 inputs (on SmolLM2, 184 parameters and 60 cache tensors). All of that runs on
every step, and after 513 MiB of weights have streamed through the CPU caches, so it runs cold: on
SmolLM2 it costs about 1.9 ms of a 22 ms step (`benchmarks/generate.py`). Here the same graph is exported
once and called through AOTInductor's C++ runner:
- the parameters are the runner's constants: the model's own tensors, shared and not copied, so a step
  passes only its tokens, positions, cache tensors and RoPE cos/sin, and later in-place weight changes
  are seen;
- the cache's fill level travels as the length of an empty (L, 0) tensor, so it is a symbolic size of
  the graph, like the cache capacity.

The package serves batch 1 without padding, the case where per-step cost matters most. The engine
sends every other step (batches, padding, a step that fills the cache's last slot) to `compile=True`'s
path, or to the eager step under `compile="auto"`. Packages are kept on disk in `$LMFORGE_CACHE/aot`
(default `~/.cache/lmforge/aot`). They hold no weights (3.4 MB for SmolLM2). Their key is the model's
config, the dtype, the device, torch's version, the number of threads (inductor builds its parallel loops
for it), the CPU's instruction set (`torch.backends.cpu.get_cpu_capability()` and the relevant CPU
flags, `lmforge.hardware`: the kernels are built for them) and
the source of the modules the graph is traced from, so an edited model file compiles anew. The first
compile of SmolLM2 takes about 75 s on a 2-core CPU; loading a kept package takes well under a second.
Each `Engine` owns its `AOTStep` (`LM.engine` lives as long as the model).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from lmforge.errors import LMForgeError
from lmforge.generate.cache import KVCache
from lmforge.hardware import FLAGS, cpu_flags
from lmforge.io.atomic import atomic_file

# the files whose code the exported graph is traced from: editing one must not reuse an old package
_TRACED = (
    "model/transformer.py",
    "model/linear.py",
    "model/attention.py",
    "model/position.py",
    "generate/cache.py",
    "generate/aot.py",
)


MIN_SLOTS = 4  # the smallest cache the package serves (export proves no smaller one for bf16 weights)


def cache_dir() -> Path:
    return Path(os.environ.get("LMFORGE_CACHE", "~/.cache/lmforge")).expanduser() / "aot"


class _Step(nn.Module):
    """The exported function: one new token per row, the KV cache as two tuples of tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens, positions, filled, k, v, rope) -> torch.Tensor:
        cache = KVCache(list(k), list(v), filled.shape[0])
        extra = {"rope": rope} if rope else {}  # RoPE's (cos, sin); learned positions need none
        return self.model(tokens, positions=positions, cache=cache, attention_mask=None, **extra)


def package_key(model: nn.Module, dtype: torch.dtype) -> str:
    """What the compiled package depends on, hashed: config, dtype, device, torch, threads, CPU
    instruction set and the traced source files."""
    parts = {
        "config": dataclasses.asdict(model.config),
        "dtype": str(dtype),
        "device": next(model.parameters()).device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": [flag for flag in FLAGS if flag in cpu_flags()],
        "code": _code_hashes(),
    }
    if getattr(model, "quantization", None):  # a quantized model's graph differs (lmforge.quant)
        parts["quantization"] = model.quantization
        parts["quant_code"] = _code_hashes(("quant/modules.py", "quant/kernels.py", "quant/native.py"))
        # and so do the kernels its modules chose in this process (measured: lmforge's int8 kernel or
        # torch's, the activations' dtype); a package traced with other choices would call a kernel with
        # inputs it was not made for. The rows a kernel takes (`kernel_rows`, also measured, and apt to
        # move between processes) are not part of it: the package's one row takes the kernel whenever
        # the module has one
        parts["quant_kernels"] = sorted(
            {
                (type(m).__name__, m.path, str(getattr(m, "kernel_dtype", "")))
                for m in model.modules()
                if type(m).__module__.startswith("lmforge.quant") and hasattr(m, "path")
            }
        )
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


@functools.cache
def _code_hashes(files: tuple[str, ...] = _TRACED) -> tuple[str, ...]:
    """The traced files' hashes, read once per process (the code that runs is the code loaded)."""
    root = Path(__file__).resolve().parents[1]
    return tuple(hashlib.sha256((root / name).read_bytes()).hexdigest() for name in files)


def package_path(model: nn.Module, dtype: torch.dtype) -> Path:
    return cache_dir() / f"{package_key(model, dtype)}.pt2"


def package_kept(model: nn.Module, dtype: torch.dtype) -> bool:
    """Whether this model's package is already on disk (`compile="auto"` then uses it)."""
    return package_path(model, dtype).exists()


class AOTStep:
    """`step(tokens (1, 1), positions (1, 1), cache, rope) -> logits (1, 1, V)` through the runner;
    `rope` is RoPE's (cos, sin) for the positions, or None for a model without RoPE."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        self.config, self.dtype, self.threads = model.config, dtype, torch.get_num_threads()
        device = next(model.parameters()).device
        # filled[:n] carries the fill level n (no data: only its length is read)
        self.filled = torch.empty(self.config.max_seq_len, 0, device=device)
        self.path = package_path(model, dtype)
        if not self.path.exists():
            self._compile(model, dtype)
        try:
            self.runner = torch._inductor.aoti_load_package(str(self.path))
        except Exception:  # a kept package that no longer loads (truncated, or from another build)
            self._compile(model, dtype)
            try:
                self.runner = torch._inductor.aoti_load_package(str(self.path))
            except Exception as error:
                raise LMForgeError(
                    f"the AOT package {self.path} was just compiled but does not load "
                    f"({type(error).__name__}); generate without aot (compile=True still works)"
                ) from error
        tensors = model_tensors(model)
        names = self.runner.get_constant_fqns()
        missing = [n for n in names if n.removeprefix("model.") not in tensors]
        if missing:
            raise LMForgeError(
                f"the AOT package {self.path} expects tensors this model lacks ({', '.join(missing[:3])}); "
                "delete the package to compile it again"
            )
        # user_managed: the runner reads the model's own tensors (no copy; in-place updates are seen).
        # It does not own them, so they are kept alive here for as long as the runner
        self.tensors = tensors
        self.storage = storage(tensors)
        self.runner.load_constants(
            {n: tensors[n.removeprefix("model.")] for n in names}, check_full_update=True, user_managed=True
        )

    def current(self, model: nn.Module, dtype: torch.dtype) -> bool:
        """Whether this runner still fits `model`: same dtype and thread count, and the model's tensors
        where the runner reads them (`model.to(...)` or a parameter given new data moves them)."""
        same = dtype == self.dtype and torch.get_num_threads() == self.threads
        return same and storage(model_tensors(model)) == self.storage

    def _compile(self, model: nn.Module, dtype: torch.dtype) -> None:
        """Export with example shapes unrelated to the caller's (capacity 64, 32 filled), so every
        package is the same, and compile into a temporary file that replaces the package at the end."""
        config, capacity, filled, device = self.config, 64, 32, self.filled.device
        cache = KVCache.allocate(config, 1, capacity, dtype=dtype, device=device)
        tokens = torch.zeros((1, 1), dtype=torch.long, device=device)
        positions = torch.full((1, 1), filled, dtype=torch.long, device=device)
        rope = tuple(model.rope(positions, dtype)) if getattr(model, "rope", None) is not None else ()
        args = (tokens, positions, self.filled[:filled], tuple(cache.k), tuple(cache.v), rope)
        # the fill level stays below the capacity less 1: a free slot after the step's (`serves`)
        slots = torch.export.Dim("slots", min=MIN_SLOTS, max=config.max_seq_len)
        kv = tuple({2: slots} for _ in range(config.n_layer))
        fill = {0: torch.export.Dim("filled", min=1, max=config.max_seq_len - 2)}
        # AOTInductor insists that the package's name end in .pt2
        with atomic_file(self.path, suffix=".pt2") as tmp, torch.inference_mode():
            try:
                exported = torch.export.export(
                    _Step(model),
                    args,
                    dynamic_shapes=(None, None, fill, kv, kv, tuple(None for _ in rope)),
                    strict=False,
                )
            except Exception as error:  # e.g. LLM.int8's outlier columns: shapes that depend on data
                raise LMForgeError(
                    f"this model's decode step does not export for aot ({_first_line(error)}); "
                    "generate with compile=True or eager steps"
                ) from error
            try:
                torch._inductor.aoti_compile_and_package(
                    exported,
                    package_path=str(tmp),
                    inductor_configs={"aot_inductor.package_constants_in_so": False},
                )
            except Exception as error:  # inductor or the C++ compiler failing: nothing is kept
                raise LMForgeError(
                    f"compiling the decode step ahead of time failed ({_first_line(error)}); "
                    "generate with compile=True or eager steps"
                ) from error

    def __call__(self, tokens, positions, cache: KVCache, rope) -> torch.Tensor:
        inputs = [tokens, positions, self.filled[: cache.length], *cache.k, *cache.v, *(rope or ())]
        return self.runner.loader.run(inputs)[0]


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:160] if text else ''}"


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by name, a tied weight under each of its names (the runner asks for
    constants by the names the exported graph used)."""
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    return tensors


def storage(tensors: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """Where each tensor's data lives: the runner reads these addresses."""
    return tuple(t.data_ptr() for t in tensors.values())


def serves(batch_size: int, padded: bool, end: int, capacity: int) -> bool:
    """Whether a one-token step goes through the AOT package: batch 1, no padding, a cache of at least
    `MIN_SLOTS` slots and a free slot after this step's (the shapes the package was exported for; other
    steps take `compile=True`'s path)."""
    return batch_size == 1 and not padded and end < capacity and capacity >= MIN_SLOTS
