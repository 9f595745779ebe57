"""Fixtures for the reliability tests: a warm writer process to kill (writers.py), a tiny tokenizer,
English-looking text, and a small tmpfs (root only) to fill up."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

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
