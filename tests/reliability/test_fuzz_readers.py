"""Mutation fuzz of the readers of untrusted files: a safetensors checkpoint, tokenizer.json and
tokenizer_config.json, a JSONL corpus and a YAML option file. Each mutated input is read or refused
with a one-line LMForgeError; never another exception, a hang (an alarm stops any read past 10 s) or
an allocation far past the file's size. The GGUF header has its own, larger fuzz in
tests/io/test_gguf_fuzz.py."""

from __future__ import annotations

import resource
import shutil
import signal
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import pytest
from faultlib import paragraph
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lmforge
from lmforge.cli import _load_config as load_config
from lmforge.cli import run
from lmforge.data.corpus import read_corpus
from lmforge.errors import LMForgeError
from lmforge.io.checkpoint import write_checkpoint
from lmforge.tokenizer import Tokenizer
from tiny import tiny_chat_tokenizer, tiny_model

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,  # the same examples on every run and in CI
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
INTERESTING = [
    b"\x00",
    b"\xff",
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b":",
    b",",
    b"\n",
    b"-1",
    b"1e308",
    b"\xff" * 8,
]


@st.composite
def mutations(draw, data: bytes, hot: int | None = None) -> bytes:
    """1-4 edits of `data` (flip, set, insert, delete, truncate, duplicate), half of them inside the
    first `hot` bytes (a header) when given."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        limit = len(out) if hot is None or draw(st.booleans()) else min(hot, len(out))
        at = draw(st.integers(0, max(limit - 1, 0)))
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]))
        if kind == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and out:
            out[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            out[at:at] = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del out[at : at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del out[at:]
        elif kind == "duplicate":
            out[at:at] = out[at : at + draw(st.integers(1, 64))]
    return bytes(out)


@contextmanager
def bounded(max_bytes: int, seconds: int = 10):
    """Fail on a read that takes past `seconds` or allocates (in Python) more than `max_bytes`."""

    def hang(*_):
        raise AssertionError(f"a read ran past {seconds} s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    tracemalloc.start()
    try:
        yield
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert peak < max_bytes, f"peak Python allocation {peak / 1e6:.1f} MB"


def refused_in_one_line(read, max_bytes: int) -> None:
    with bounded(max_bytes):
        try:
            read()
        except LMForgeError as exc:
            assert "\n" not in str(exc) and str(exc), repr(exc)


@pytest.fixture(scope="module")
def rss_limit():
    """Allocations outside Python (safetensors, tokenizers are Rust): the whole run stays small."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 500, f"peak RSS grew by {grown_mb:.0f} MB while reading small mutated files"


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "model"
    write_checkpoint(path, tiny_model())
    return path


def test_safetensors_checkpoint(checkpoint_dir, tmp_path_factory, rss_limit):
    valid = (checkpoint_dir / "model.safetensors").read_bytes()
    header = 8 + int.from_bytes(valid[:8], "little")
    work = tmp_path_factory.mktemp("st") / "model"
    shutil.copytree(checkpoint_dir, work)
    lmforge.load(work, device="cpu", compile="eager")  # first-use imports and registrations, untimed

    @FUZZ
    @given(mutations(valid, hot=header))
    def check(data):
        (work / "model.safetensors").write_bytes(data)
        refused_in_one_line(lambda: lmforge.load(work, device="cpu", compile="eager"), 8 * len(valid) + 2**24)

    check()


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok")
    tiny_chat_tokenizer([paragraph(i) for i in range(5)]).save(path)
    return path


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_tokenizer_files(name, tokenizer_dir, tmp_path_factory, rss_limit):
    valid = (tokenizer_dir / name).read_bytes()
    work = tmp_path_factory.mktemp("tokfuzz")
    shutil.copytree(tokenizer_dir, work, dirs_exist_ok=True)

    @FUZZ
    @given(mutations(valid))
    def check(data):
        (work / name).write_bytes(data)
        refused_in_one_line(lambda: Tokenizer.load(work), 40 * len(valid) + 2**24)

    check()


def test_jsonl_corpus(tmp_path, rss_limit):
    rows = [f'{{"text": "{paragraph(i, 20)}", "id": {i}}}' for i in range(6)]
    valid = ("\n".join(rows) + "\n").encode()
    path = tmp_path / "corpus.jsonl"

    @FUZZ
    @given(mutations(valid))
    def check(data):
        path.write_bytes(data)
        refused_in_one_line(lambda: read_corpus([str(path)]), 40 * len(valid) + 2**20)

    check()


def test_yaml_option_file(tmp_path, rss_limit):
    """The reader behind `--config FILE.yaml`; a broken file also goes through a whole command."""
    valid = b"json_output: true\ndtype: float32 # a comment\nlayers: [1, 2]\nname: 'x'\n"
    path = tmp_path / "options.yaml"
    path.write_bytes(b"json_output: [1")
    with pytest.raises(LMForgeError, match="is not valid YAML/JSON"):
        run(["info", str(tmp_path / "missing-model"), "--config", str(path)])
    extremes = [
        b"&a [*a, *a]",
        b"!!python/object/apply:os.system ['true']",
        b"a: " + b"[" * 1000,
        b"\xff\xfe",
    ]

    @FUZZ
    @given(mutations(valid) | st.sampled_from(extremes))
    def check(data):
        path.write_bytes(data)
        refused_in_one_line(lambda: load_config(path), 2**24)

    check()
