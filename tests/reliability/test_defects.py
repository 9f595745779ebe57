"""The three defects issue 20 found, each reproduced as a user meets it: `convert` on a full disk printed
a 23-line traceback; a `convert` killed mid-write left a hidden staging directory that nothing removed;
`prepare` (and every directory or file renamed into place from mkdtemp/mkstemp) got mode 0700/0600."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
from faultlib import paragraph

import lmforge
from lmforge.cli import main
from lmforge.io.atomic import atomic_write_text
from lmforge.io.checkpoint import write_checkpoint
from tiny import tiny_model

ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A ~1.7 MB checkpoint to convert (lmforge.load reads it like any model directory)."""
    path = tmp_path_factory.mktemp("src") / "model"
    write_checkpoint(path, tiny_model(d_model=128, d_mlp=256))
    return path


@pytest.fixture
def tmpfs(tmp_path):
    """A 512 kB tmpfs: too small for the source's 1.7 MB of weights."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err.strip()


@pytest.mark.skipif(not ROOT, reason="mounting a tmpfs needs root; the simulated test below runs anyway")
def test_convert_on_a_full_disk_is_one_line(source, tmpfs, capsys):
    out = tmpfs / "OUT"
    assert main(["convert", str(source), str(out)]) == 2
    line = one_line_error(capsys)
    assert f"no space left on device while writing {out}" in line
    needed, free = map(float, re.search(r"\(needs ~([\d.]+) MB, ([\d.]+) MB free\)", line).groups())
    assert abs(needed * 1e6 - (source / "model.safetensors").stat().st_size) < 0.06e6
    assert free == 0.5  # the empty 512 kB tmpfs
    assert "free space or choose another path" in line
    assert list(tmpfs.iterdir()) == []  # nothing partial, no staging


def test_convert_full_disk_simulated_is_one_line(source, tmp_path, capsys, monkeypatch):
    """What safetensors raises on a full disk (its Rust error, not an OSError), for non-root runs."""
    real = safetensors.torch.save_file

    def disk_full(tensors, filename, metadata=None):
        real(tensors, filename, metadata)
        raise safetensors.SafetensorError(
            "Error while serializing: IoError(Os { code: 28, kind: ... (os error 28)"
        )

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    out = tmp_path / "OUT"
    assert main(["convert", str(source), str(out)]) == 2
    line = one_line_error(capsys)
    assert f"no space left on device while writing {out}" in line and "needs ~" in line
    assert list(tmp_path.iterdir()) == []  # nothing partial, no staging


KILLED_CONVERT = """
import sys, time
import lmforge.io.checkpoint as c
from lmforge.cli import main
real = c.save_state
def save_then_hang(*args, **kwargs):
    result = real(*args, **kwargs)
    print("WRITTEN", flush=True)
    time.sleep(120)
    return result
c.save_state = save_then_hang
main(sys.argv[1:])
"""


def test_killed_convert_leaves_staging_that_the_next_convert_removes(source, tmp_path):
    out = tmp_path / "OUT"
    write_checkpoint(out, tiny_model(seed=5))  # the previous version
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_CONVERT, "convert", str(source), str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "WRITTEN"  # the weights are written, not yet renamed
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous version, whole
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".OUT.")]
    assert leftovers, "the killed convert's staging should be there before the next run"

    assert main(["convert", str(source), str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OUT"]  # the next run removed the staging
    lmforge.load(out, device="cpu", compile="eager")


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_outputs_get_the_umask_permissions(tmp_path, umask_022, tiny_tok_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"doc{i}.txt").write_text(paragraph(i, 150), encoding="utf-8")
    result = lmforge.prepare(
        str(corpus), tokenizer=str(tiny_tok_dir), output=tmp_path / "prepared", workers=1
    )
    assert oct(result.output.stat().st_mode & 0o777) == oct(0o755)
    for file in result.output.iterdir():
        assert oct(file.stat().st_mode & 0o777) == oct(0o644), file
    write_checkpoint(tmp_path / "ckpt", tiny_model())
    assert oct((tmp_path / "ckpt").stat().st_mode & 0o777) == oct(0o755)
    atomic_write_text(tmp_path / "report.json", "{}")
    assert oct((tmp_path / "report.json").stat().st_mode & 0o777) == oct(0o644)


@pytest.mark.slow
@pytest.mark.skipif(not ROOT, reason="mounting a tmpfs needs root")
def test_convert_smollm2_on_a_60_mb_disk_is_one_line(tmp_path, capsys):
    """The issue's own case: 540 MB of weights onto a 60 MB tmpfs."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m", "tmpfs", str(disk)], check=True)
    try:
        assert main(["convert", "smollm2", str(disk / "OUT")]) == 2
        line = one_line_error(capsys)
        print(f"\n{line}")
        assert f"no space left on device while writing {disk / 'OUT'}" in line
        assert re.search(r"\(needs ~5\d\d MB, 6\d MB free\)", line), line  # 60 MiB = 63 MB
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)
