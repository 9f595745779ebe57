"""The machine record every benchmark saves: the CPU model and the flags that decide the fast dtype."""

from pathlib import Path

import torch

from lmforge import hardware


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
