"""Helpers the reliability tests share (a module of its own: `from conftest import` is ambiguous when
several test folders have a conftest.py): seeded text, a directory read as one snapshot, and how each
writer's output is opened by its consumer."""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path

import lmforge
from lmforge.tokenizer import Tokenizer
from lmforge.train.checkpoint import load_trainer_state

TEXT = (
    "the river ran past the old mill while a teacher walked her dog along the quiet harbour road "
    "and the market opened early on a cold winter morning with letters from the village"
)
WORDS = TEXT.split()


def paragraph(seed: int, words: int = 80) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


UNSTABLE = {"report.json", "report.md"}  # prepare's reports hold its step timings


def tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` by relative name, leaving out staging. Read through one directory file
    descriptor, so a reader racing a writer sees one directory, as a program holding it open does."""
    if path.is_file():
        return {"": path.read_bytes()}
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        files = _walk(fd, "")
        # a directory swapped out while being read is the old version being deleted file by file: its
        # listing can be a part of it, which a reader must not take for the destination (read again)
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise FileNotFoundError(f"{path} was replaced while being read")
        return files
    finally:
        os.close(fd)


def _walk(fd: int, prefix: str) -> dict[str, bytes]:
    files = {}
    for name in sorted(os.listdir(fd)):
        if ".lmforge-" in name or name in UNSTABLE:
            continue
        if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            try:
                files.update(_walk(sub, f"{prefix}{name}/"))
            finally:
                os.close(sub)
        else:
            with os.fdopen(os.open(name, os.O_RDONLY, dir_fd=fd), "rb") as f:
                files[prefix + name] = f.read()
    return files


def loads(writer: str, path: Path) -> None:
    """Open the output the way its consumer does."""
    if writer == "save":
        lmforge.load(path, device="cpu", compile="eager")
    elif writer == "checkpoint":
        load_trainer_state(path)
        lmforge.load(path, device="cpu", compile="eager")
    elif writer == "prepare":
        manifest = json.loads((path / "manifest.json").read_text())
        assert manifest and (path / "report.json").is_file()
    elif writer == "tokenizer":
        Tokenizer.load(path)
    else:
        json.loads(path.read_text())
