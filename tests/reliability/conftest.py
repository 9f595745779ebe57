"""Fixtures for the reliability tests: a warm writer process to kill (writers.py), a tiny tokenizer,
English-looking text, and a small tmpfs (root only) to fill up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from faultlib import paragraph

from tiny import tiny_chat_tokenizer

HERE = Path(__file__).resolve().parent


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
