"""Fixtures for the reliability tests: a warm writer process to kill (writers.py), a tiny tokenizer,
English-looking text, and a small tmpfs (root only) to fill up."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import lmforge
from lmforge.tokenizer import Tokenizer
from lmforge.train.checkpoint import load_trainer_state
from tiny import tiny_chat_tokenizer

HERE = Path(__file__).resolve().parent
TEXT = (
    "the river ran past the old mill while a teacher walked her dog along the quiet harbour road "
    "and the market opened early on a cold winter morning with letters from the village"
)
WORDS = TEXT.split()


def paragraph(seed: int, words: int = 80) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


@pytest.fixture(scope="session")
def tiny_tok_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok")
    tiny_chat_tokenizer([paragraph(i) for i in range(10)]).save(path)
    return path


@pytest.fixture(scope="session")
def zygote():
    """Send a job to writers.py (one warm process for the session) and get its answer."""
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "writers.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert json.loads(proc.stdout.readline()) == {"ready": True}

    def ask(job: dict) -> dict:
        proc.stdin.write(json.dumps(job) + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    yield ask
    proc.stdin.close()
    proc.wait(timeout=30)


UNSTABLE = {"report.json", "report.md"}  # prepare's reports hold its step timings


def tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` by relative name, leaving out staging. Read through one directory file
    descriptor, so a reader racing a writer sees one directory, as a program holding it open does."""
    if path.is_file():
        return {"": path.read_bytes()}
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return _walk(fd, "")
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


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_tok_dir):
    root = tmp_path_factory.mktemp("inputs")
    corpora = []
    for v in range(2):
        d = root / f"corpus{v}"
        d.mkdir()
        for i in range(8):
            (d / f"doc{i}.txt").write_text(paragraph(100 * v + i, 150), encoding="utf-8")
        corpora.append(str(d))
    return {"inputs": corpora, "tokenizer": str(tiny_tok_dir)}
