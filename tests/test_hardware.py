"""The machine record every benchmark saves: the CPU model and the flags that decide the fast dtype."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmforge import hardware
from lmforge.errors import LMForgeError


def test_machine_record_names_cpu_and_flags():
    record = hardware.machine()
    assert record["cpu"] and record["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next(
        (line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []
    )
    assert record["cpu_flags"] == [f for f in hardware.FLAGS if f in flags]
    if cpuinfo:
        assert record["cpu"] in cpuinfo
    assert record["cpu"] in hardware.describe()


# -- the precision decision, for given capabilities and probe results (any machine, not only this one) --

AMX = {"fp32": "fp32 is native everywhere", "bf16": "the CPU has amx_bf16", "fp16": None}
ZEN3 = {"fp32": "fp32 is native everywhere", "bf16": None, "fp16": None}


def test_auto_picks_bf16_only_where_native_and_measured_faster():
    choice = hardware.decide_precision("auto", AMX, {"fp32": 1.0e11, "bf16": 1.17e12})
    assert choice.precision == "bf16" and "amx_bf16" in choice.reason and "1,170 GFLOP/s" in choice.reason
    # native flags but a probe that finds no gain (e.g. a hypervisor hiding AMX state): fp32
    slow = hardware.decide_precision("auto", AMX, {"fp32": 1.0e11, "bf16": 1.1e11})
    assert slow.precision == "fp32" and "fp32 is as fast" in slow.reason
    zen3 = hardware.decide_precision("auto", ZEN3, {"fp32": 1.0e11, "bf16": 1.0e10})
    assert zen3.precision == "fp32" and "no native bf16" in zen3.reason


def test_requested_bf16_without_support_falls_back_or_stops():
    fallback = hardware.decide_precision("bf16", ZEN3, fallback=True)
    assert fallback.precision == "fp32" and fallback.requested == "bf16"
    assert "no native bf16" in fallback.reason and "falling back to fp32" in fallback.reason
    with pytest.raises(LMForgeError, match="no native bf16.*--precision auto or fp32"):
        hardware.decide_precision("bf16", ZEN3, fallback=False)
    assert hardware.decide_precision("bf16", AMX).precision == "bf16"
    assert hardware.decide_precision("fp32", AMX, {"fp32": 1.0, "bf16": 100.0}).precision == "fp32"


def test_native_support_reads_the_flags():
    assert hardware.native_support("bf16", "cpu", frozenset({"avx512f", "avx512_bf16"})) is not None
    assert hardware.native_support("bf16", "cpu", frozenset({"avx2", "fma"})) is None
    assert hardware.native_support("fp16", "cpu", frozenset({"avx512_fp16"})) is not None
    assert hardware.native_support("fp32", "cpu", frozenset()) is not None


def test_probe_is_measured_once_and_cached_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    calls = []
    real = hardware._measure_matmul
    monkeypatch.setattr(hardware, "_measure_matmul", lambda *a: calls.append(a[0]) or real(*a[:2], 0.02))
    first = hardware.matmul_flops("fp32")
    assert hardware.matmul_flops("fp32") == first and calls == [torch.float32]
    (cached,) = (tmp_path / "hardware").glob("*.json")
    assert cached.stem == hardware.probe_key("cpu")
    assert json.loads(cached.read_text())["matmul_flops"]["fp32"] == first > 0
    # another thread count is another machine as far as the probe is concerned
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        assert hardware.probe_key("cpu") != cached.stem
    finally:
        torch.set_num_threads(threads)


def test_a_refreshed_peak_keeps_the_highest_measurement(tmp_path, monkeypatch):
    """A probe taken while other work held the cores reads low; the trainer's refresh raises it, and a
    later contended measurement never lowers it (MFU against a low peak passed 100%)."""
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    figures = iter([150e9, 320e9, 200e9])
    monkeypatch.setattr(hardware, "_measure_matmul", lambda *a: next(figures))
    assert hardware.matmul_flops("fp32") == 150e9  # first probe, contended
    assert hardware.matmul_flops("fp32") == 150e9  # cached: not measured again
    assert hardware.matmul_flops("fp32", refresh=True) == 320e9
    assert hardware.matmul_flops("fp32", refresh=True) == 320e9  # 200e9 measured, the peak kept
    assert hardware.matmul_flops("fp32") == 320e9


def test_choose_precision_on_this_machine_matches_its_flags(tmp_path, monkeypatch):
    """On the machine the suite runs on: bf16 only if its flags give native bf16; the choice carries the
    measured peak of the dtype it uses (MFU's denominator)."""
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    choice = hardware.choose_precision("auto")
    native = bool({"amx_bf16", "avx512_bf16"} & hardware.cpu_flags())
    assert choice.precision in (("bf16", "fp32") if native else ("fp32",))
    assert choice.peak_flops == hardware.matmul_flops(choice.precision)


FAULTS = """
import importlib.util, os, resource, sys, torch
# hardware.py alone (not the lmforge package: its imports would take most of the test's time)
spec = importlib.util.spec_from_file_location("hardware", sys.argv[1])
hardware = sys.modules["hardware"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hardware)
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Embedding(4096, 128), torch.nn.Linear(128, 512), torch.nn.GELU(), torch.nn.Linear(512, 4096)
)
opt = torch.optim.AdamW(model.parameters())
x = torch.randint(0, 4096, (16, 128))
def faults_of_five_steps():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
        opt.step()
        opt.zero_grad()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_five_steps()  # first touches: the weights, AdamW's moments
default = faults_of_five_steps()
os.environ["LMFORGE_KEEP_FREED_MEMORY"] = "0"
refused = hardware.keep_freed_memory.__wrapped__()
del os.environ["LMFORGE_KEEP_FREED_MEMORY"]
applied = hardware.keep_freed_memory()
faults_of_five_steps()  # the heap grows to hold what the steps used to map and unmap
print(refused, applied, default, faults_of_five_steps())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_training_steps_reuse_freed_memory_instead_of_faulting_it_in_again():
    env = {k: v for k, v in os.environ.items() if k != "LMFORGE_KEEP_FREED_MEMORY"}
    out = subprocess.run(
        [sys.executable, "-c", FAULTS, hardware.__file__], env=env, capture_output=True, text=True, check=True
    )
    refused, applied, default, kept = out.stdout.split()
    assert (refused, applied) == ("False", "True")
    # by default the steps' big activations and gradients go back to the kernel when freed and come
    # back as fresh zeroed pages (~33k page faults a step here); kept, they are reused (~0 here)
    assert int(kept) * 5 < int(default), (kept, default)


def test_probe_measures_on_the_cpu_under_a_meta_default_device(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    with torch.device("meta"):
        seen = hardware.cached_probe("test", "device", lambda: str(torch.empty(1).device))
    assert seen == "cpu"
