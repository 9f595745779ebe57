"""A CPU model's weights in 2 MiB pages.

A decode step reads every weight once per token, a few hundred MB for SmolLM2, and with the 4 KiB pages
a CPU allocation gets by default that walk needs a new TLB entry every 4 KiB. On the Xeon VM this
project runs on, the bf16 kernel read SmolLM2's linears at 11-13 GB/s from 4 KiB pages and at 15-16 GB/s
from 2 MiB ones, and bf16 decode ran 1.3-1.4x as fast (2 threads; benchmarks/huge_pages.py).

An `Arena` is one anonymous mapping that Linux backs with transparent huge pages
(`madvise(MADV_HUGEPAGE)`, honoured where /sys/kernel/mm/transparent_hugepage/enabled says "always" or
"madvise"). `lmforge.load` reads a float checkpoint's weights straight into one and `place`s a quantized
model once its modules have repacked their codes; `place(model)` moves any model built in memory. Each
tensor keeps a storage of its own (tied weights still share theirs), so saving, copying and the AOT
runner see the same tensors as before, at other addresses. Where huge pages are not to be had (another
OS, THP "never", a model on a GPU, LMFORGE_HUGE_PAGES=0) nothing changes.
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from lmforge import hardware

PAGE = 2 << 20  # the huge page of x86-64 and arm64 Linux: the arena starts on one
ALIGN = 64  # each tensor starts on a cache line (lmforge's kernels want 64-byte aligned weights)


def available() -> bool:
    """Whether this process can ask for transparent huge pages."""
    if os.environ.get("LMFORGE_HUGE_PAGES", "1") == "0" or not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    return hardware.thp_mode() in ("always", "madvise")


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


class Arena:
    """`nbytes` of memory in huge pages, handed out front to back as tensors of their own storage.
    `Arena.create` gives None where huge pages are unavailable or `nbytes` is under one page."""

    def __init__(self, nbytes: int):
        # private and anonymous (a shared mapping is shmem, which THP governs by another setting), with
        # a spare page so the blocks can start on a page boundary
        self.memory = mmap.mmap(-1, nbytes + PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.next = -torch.frombuffer(self.memory, dtype=torch.uint8, count=1).data_ptr() % PAGE
        self.memory.madvise(mmap.MADV_HUGEPAGE, self.next, nbytes)  # before the first write touches it
        self.end = self.next + nbytes

    @classmethod
    def create(cls, nbytes: int) -> Arena | None:
        return cls(nbytes) if nbytes >= PAGE and available() else None

    @staticmethod
    def size(tensors: Iterable[tuple[torch.Size, torch.dtype]]) -> int:
        """The bytes an arena needs for tensors of these shapes and dtypes."""
        return sum(_aligned(math.prod(shape) * dtype.itemsize) for shape, dtype in tensors)

    def empty(self, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised contiguous tensor in the arena (it keeps the arena's memory alive)."""
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes == 0:
            return torch.empty(shape, dtype=dtype)
        if self.next + nbytes > self.end:
            raise ValueError(f"the arena has {self.end - self.next} bytes left, not {nbytes}")
        block = torch.frombuffer(self.memory, dtype=torch.uint8, count=nbytes, offset=self.next)
        self.next += _aligned(nbytes)
        return block.view(dtype).view(shape)

    def copy(self, tensor: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """`tensor` (converted to `dtype`) as a contiguous copy in the arena."""
        return self.empty(tensor.shape, dtype or tensor.dtype).copy_(tensor)


def place(model: nn.Module) -> int:
    """Move `model`'s CPU parameters and buffers into an arena; returns the bytes moved (0 where nothing
    moved). A storage several tensors share (tied weights, views) moves once and stays shared."""
    entries = [
        (table, name, tensor)
        for module in model.modules()
        for table in (module._parameters, module._buffers)
        for name, tensor in table.items()
        if tensor is not None and tensor.device.type == "cpu" and tensor.layout is torch.strided
    ]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage() for _, _, t in entries}
    nbytes = Arena.size((torch.Size([s.nbytes()]), torch.uint8) for s in storages.values())
    arena = Arena.create(nbytes)
    if arena is None:
        return 0
    moved = {}
    for ptr, storage in storages.items():
        moved[ptr] = arena.copy(torch.empty(0, dtype=torch.uint8).set_(storage)).untyped_storage()
    replaced: dict[int, torch.Tensor] = {}  # a tensor registered under several names (tied) moves once
    for table, name, tensor in entries:
        if id(tensor) not in replaced:
            storage = moved[tensor.untyped_storage().data_ptr()]
            data = torch.empty(0, dtype=tensor.dtype).set_(
                storage, tensor.storage_offset(), tensor.shape, tensor.stride()
            )
            if isinstance(tensor, nn.Parameter):
                data = nn.Parameter(data, requires_grad=tensor.requires_grad)
            replaced[id(tensor)] = data
        table[name] = replaced[id(tensor)]
    return nbytes


def backed_kb(tensor: torch.Tensor) -> int | None:
    """kB of 2 MiB pages in the mapping that holds `tensor`'s data, from /proc/self/smaps (None where
    that file is absent): how much of an arena the kernel actually backed with huge pages."""
    ptr, inside, huge = tensor.data_ptr(), False, 0
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        head = line.split(" ", 1)[0]
        if "-" in head and ":" not in head:  # a mapping's first line: start-end perms ...
            if inside:
                break
            start, end = (int(x, 16) for x in head.split("-"))
            inside, huge = start <= ptr < end, 0
        elif inside and line.startswith("AnonHugePages:"):
            huge = int(line.split()[1])
    return huge if inside else 0
