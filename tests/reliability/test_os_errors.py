"""OS errors are user errors: each command that writes, on a full disk, a read-only file system, a
denied directory, a file in the way of its output and a file in the way of its parent, prints one line
that names the path and the cause, leaves nothing behind, and keeps any earlier output whole. Real
faults where the tests run as root (a small tmpfs, a read-only tmpfs); the same faults raised at the
write (as the OSError the kernel gives) so the tests also run as any user."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from faultlib import paragraph

from lmforge.cli import main
from lmforge.io import atomic
from lmforge.io.checkpoint import write_checkpoint
from tiny import tiny_model

ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not ROOT, reason="mounting needs root; the simulated faults run anyway")


@pytest.fixture(scope="module")
def sources(tmp_path_factory, tiny_tok_dir):
    root = tmp_path_factory.mktemp("sources")
    write_checkpoint(root / "model", tiny_model(d_model=128, d_mlp=256))
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"doc{i}.txt").write_text(paragraph(i, 300), encoding="utf-8")
    return {"model": root / "model", "corpus": corpus, "tokenizer": tiny_tok_dir}


def command(name: str, src: dict, out: Path) -> list[str]:
    """The CLI words of each writing command, writing to `out`."""
    return {
        "convert": ["convert", str(src["model"]), str(out)],
        "prepare": [
            "prepare",
            str(src["corpus"]),
            "--tokenizer",
            str(src["tokenizer"]),
            "--output",
            str(out),
        ],
        "tokenizer train": [
            "tokenizer",
            "train",
            str(src["corpus"]),
            "--vocab-size",
            "300",
            "--output",
            str(out),
        ],
        "quantize": ["quantize", str(src["model"]), "--out", str(out), "--no-report", "--no-aot"],
    }[name]


COMMANDS = ["convert", "prepare", "tokenizer train", "quantize"]
# the default suite tries each fault on convert; every command under every fault runs with -m slow
EACH = ["convert", *(pytest.param(name, marks=pytest.mark.slow) for name in COMMANDS[1:])]


def run_cli(words: list[str], capsys) -> tuple[int, str]:
    code = main(words)
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("lmforge: error")]
    assert len(errors) == 1 and captured.err.strip().endswith(errors[0]), captured.err  # after progress lines
    assert "Traceback" not in captured.err
    return code, errors[0]


def report(fault: str, name: str, line: str) -> None:
    """The line the user sees, for the README's fault table (`pytest -s` prints them)."""
    print(f"\nFAULT-TABLE | {fault} | lmforge {name} | {line}")


@pytest.fixture
def mount(tmp_path):
    mounted = []

    def make(options: str) -> Path:
        path = tmp_path / f"mnt{len(mounted)}"
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", str(path)], check=True)


@root_only
@pytest.mark.parametrize("name", EACH)
def test_full_disk(name, sources, mount, capsys):
    disk = mount("size=4k")
    code, line = run_cli(command(name, sources, disk / "OUT"), capsys)
    report("full disk (4 kB tmpfs)", name, line)
    assert code == 2
    assert "no space left on device while writing" in line and str(disk / "OUT") in line
    assert "free space or choose another path" in line
    assert list(disk.iterdir()) == []  # nothing partial, no staging


@root_only
@pytest.mark.parametrize("name", EACH)
def test_read_only_file_system(name, sources, mount, capsys):
    disk = mount("size=1m,ro")
    code, line = run_cli(command(name, sources, disk / "OUT"), capsys)
    report("read-only file system", name, line)
    assert code == 2
    assert f"read-only file system while writing {disk / 'OUT'}" in line


SIMULATED = {
    "ENOSPC": "no space left on device",
    "EDQUOT": "disk quota exceeded",
    "EACCES": "permission denied",
    "EROFS": "read-only file system",
}


@pytest.mark.parametrize(
    ("name", "code_name"),
    [(name, "ENOSPC") for name in COMMANDS] + [("convert", code) for code in SIMULATED if code != "ENOSPC"],
)
def test_simulated_write_faults(name, code_name, sources, tmp_path, capsys, monkeypatch):
    """The OSError raised as the staged output is flushed (after every byte is written): the same
    handling as a real fault, without root."""
    number = getattr(errno, code_name)

    def fail(path):
        raise OSError(number, os.strerror(number), str(next(iter(sorted(Path(path).rglob("*"))), path)))

    monkeypatch.setattr(atomic, "_fsync_tree", fail)
    out = tmp_path / "OUT"
    code, line = run_cli(command(name, sources, out), capsys)
    if name == "convert":
        report(f"{code_name} (simulated)", name, line)
    assert code == 2
    assert f"{SIMULATED[code_name]} while writing {out}" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_denied_directory(sources, tmp_path, capsys, monkeypatch):
    """A directory the user cannot write (simulated: root may write anywhere)."""

    def denied(dir=None, prefix=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, prefix + "xxxxxxxx"))

    monkeypatch.setattr(atomic.tempfile, "mkdtemp", denied)
    out = tmp_path / "OUT"
    code, line = run_cli(command("convert", sources, out), capsys)
    report("directory not writable (EACCES, simulated)", "convert", line)
    assert code == 2 and f"permission denied while writing {out}" in line


@pytest.mark.parametrize("name", EACH)
def test_a_file_in_the_way(name, sources, tmp_path, capsys):
    out = tmp_path / "OUT"
    out.write_text("keep me")
    code, line = run_cli(command(name, sources, out), capsys)
    report("output path is a file", name, line)
    assert code == 2 and str(out) in line
    assert "a file is there" in line or "is not an lmforge prepare directory" in line
    assert out.read_text() == "keep me"


@pytest.mark.parametrize("name", EACH)
def test_a_file_in_the_way_of_the_parent(name, sources, tmp_path, capsys):
    (tmp_path / "parent").write_text("keep me")
    out = tmp_path / "parent" / "OUT"
    code, line = run_cli(command(name, sources, out), capsys)
    report("a parent of the output is a file", name, line)
    assert code == 2 and f"{tmp_path / 'parent'} is a file, not a directory" in line


def test_missing_parents_are_created(sources, tmp_path, capsys):
    out = tmp_path / "a" / "b" / "OUT"
    assert main(command("convert", sources, out)) == 0
    assert (out / "model.safetensors").is_file()


def test_the_cli_turns_any_other_os_error_into_one_line(tmp_path, capsys, monkeypatch):
    """An OSError that no command caught: one line and a hint; --debug or LMFORGE_DEBUG=1 add the traceback."""
    import lmforge

    def unreadable(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/models/secret.gguf")

    monkeypatch.setattr(lmforge, "load", unreadable)
    code, line = run_cli(["info", "x"], capsys)
    report("an OSError no command caught", "info", line)
    assert code == 1
    assert line == (
        "lmforge: error: permission denied while accessing /models/secret.gguf; choose a path you can write "
        "or fix its permissions (run with --debug or LMFORGE_DEBUG=1 for the traceback)"
    )
    for words, env in (
        (["info", "x", "--debug"], None),
        (["--debug", "info", "x"], None),
        (["info", "x"], "1"),
    ):
        if env:
            monkeypatch.setenv("LMFORGE_DEBUG", env)
        assert main(words) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "PermissionError" in err
        assert err.strip().splitlines()[-1].startswith("lmforge: error: permission denied")
