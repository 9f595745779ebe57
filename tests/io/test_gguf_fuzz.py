"""The GGUF header reader on untrusted bytes: random files, mutations of a valid file written with the
`gguf` package, and hand-built headers for each way a header can lie (counts and lengths past the end,
unknown or wrong types, nesting, bad tensor entries). Every one must end in a one-line `LMForgeError`
that names the file, never another exception, and never allocate much more than the file's size."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_gguf import (
    ARRAY,
    STRING,
    TINY_LLAMA,
    U32,
    U64,
    VOCAB,
    f32_gguf,
    gguf_string,
    header,
    kv,
    nested_arrays,
    tensor,
    tiny_llama_tensors,
)

import lmforge
from lmforge.errors import LMForgeError
from lmforge.io.gguf import MAX_ARRAY_DEPTH, GGUFFile, read_header

FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,  # the same examples on every run and in CI
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
INTERESTING_U64 = [0, 1, 7, 255, 2**31, 2**32 - 1, 2**32, 2**62, 2**63, 2**64 - 1]


def write_valid(path: Path) -> bytes:
    """A small valid GGUF: scalars of several types, strings, a string array, a nested array, one F32
    and one Q8_0 tensor."""
    w = GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_string("general.name", "fuzz me")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "ab", "<s>"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.0, 0.0])
    w.add_array("test.nested", [[1, 2], [3]])
    w.add_tensor("blk.0.attn_norm.weight", np.ones((2, 32), np.float32))
    q8 = quantize(np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32), GGMLQuantizationType.Q8_0)
    w.add_tensor("blk.0.ffn_norm.weight", q8, raw_dtype=GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> bytes:
    return write_valid(tmp_path_factory.mktemp("gguf") / "valid.gguf")


@pytest.fixture
def target(tmp_path) -> Path:
    return tmp_path / "fuzzed.gguf"


def read_or_refuse(path: Path, data: bytes) -> None:
    """Parse `data` as a GGUF file: it either reads (a mutation can leave a valid file) or is refused with
    a one-line LMForgeError naming the file; either way the reader allocates at most a small multiple of
    the file's size."""
    path.write_bytes(data)
    tracemalloc.start()
    try:
        GGUFFile(path)
    except LMForgeError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(f"{path}: "), message
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= 64 * len(data) + 2**20, f"{peak} bytes allocated for a {len(data)}-byte file"


def test_the_valid_file_reads(valid, target):
    target.write_bytes(valid)
    f = GGUFFile(target)
    assert f.metadata["test.nested"] == [[1, 2], [3]]
    assert f.metadata["tokenizer.ggml.tokens"] == ["a", "b", "ab", "<s>"]
    assert f.metadata["llama.rope.freq_base"] == 10000.0 and f.metadata["llama.block_count"] == 1
    assert f.tensors["blk.0.ffn_norm.weight"].shape == (2, 32)


@FUZZ
@given(data=st.binary(max_size=600), header=st.booleans())
def test_random_bytes(target, data, header):
    if header:  # past the magic and version checks, into the counts
        data = b"GGUF" + struct.pack("<I", 3) + data
    read_or_refuse(target, data)


# an edit: (kind, position as a fraction of the file, payload)
EDITS = st.one_of(
    st.tuples(
        st.just("u64"), st.floats(0, 1), st.sampled_from(INTERESTING_U64).map(lambda v: struct.pack("<Q", v))
    ),
    st.tuples(st.just("u32"), st.floats(0, 1), st.integers(0, 20).map(lambda v: struct.pack("<I", v))),
    st.tuples(st.just("bytes"), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 16).map(bytes)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(b"")),
)


def apply_edit(data: bytes, kind: str, where: float, payload: bytes) -> bytes:
    at = int(where * len(data))
    if kind == "insert":
        return data[:at] + payload + data[at:]
    if kind == "delete":
        return data[:at] + data[at + len(payload) :]
    if kind == "truncate":
        return data[:at]
    return data[:at] + payload + data[at + len(payload) :]


@FUZZ
@given(edits=st.lists(EDITS, min_size=1, max_size=4))
def test_mutations_of_a_valid_file(valid, target, edits):
    data = valid
    for edit in edits:
        data = apply_edit(data, *edit)
    read_or_refuse(target, data)


def test_every_truncation(valid, target):
    for n in range(len(valid)):
        read_or_refuse(target, valid[:n])


# ---- hand-built headers -----------------------------------------------------------------------------


NAME = kv("general.name", STRING, gguf_string("x"))
CASES = {
    "bad magic": b"GGUG" + bytes(40),
    "version 1": b"GGUF" + struct.pack("<IQQ", 1, 0, 0),
    "huge tensor count": header([NAME], n_tensors=2**63),
    "huge kv count": header([NAME], n_kv=2**64 - 1),
    "kv count one too many": header([NAME], n_kv=2),
    "key length past the end": b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 2**40) + b"key",
    "string value past the end": header([kv("k", STRING, struct.pack("<Q", 10**12) + b"abc")]),
    "key not UTF-8": header([kv("k", STRING, gguf_string("v")).replace(b"k", b"\xff", 1)]),
    "string not UTF-8": header([kv("k", STRING, gguf_string(b"\xc3\x28"))]),
    "unknown value type": header([kv("k", 13, b"\0" * 8)]),
    "huge value type": header([kv("k", 2**32 - 1, b"\0" * 8)]),
    "unknown array item type": header([kv("k", ARRAY, struct.pack("<IQ", 99, 1) + b"\0" * 8)]),
    "enormous u64 array": header([kv("k", ARRAY, struct.pack("<IQ", U64, 2**61) + b"\0" * 64)]),
    "enormous string array": header([kv("k", ARRAY, struct.pack("<IQ", STRING, 2**62) + gguf_string("a"))]),
    "enormous array of arrays": header([kv("k", ARRAY, struct.pack("<IQ", ARRAY, 2**60) + nested_arrays(2))]),
    "arrays nested 100,000 deep": header([kv("k", ARRAY, nested_arrays(100_000))]),
    "arrays nested one too deep": header([kv("k", ARRAY, nested_arrays(MAX_ARRAY_DEPTH + 1))]),
    "duplicate key": header([NAME, NAME]),
    "duplicate key with a newline": header([kv("a\nb", U32, bytes(4))] * 2),
    "alignment is a string": header([kv("general.alignment", STRING, gguf_string("32"))]),
    "alignment is zero": header([kv("general.alignment", U32, struct.pack("<I", 0))]),
    "alignment is not a power of two": header([kv("general.alignment", U32, struct.pack("<I", 48))]),
    "tensor with 5 dimensions": header([], [tensor("t", [32, 1, 1, 1, 1])]),
    "tensor with 2**32-1 dimensions": header(
        [], [gguf_string("t") + struct.pack("<I", 2**32 - 1) + bytes(64)]
    ),
    "tensor with a zero dimension": header([], [tensor("t", [32, 0])]),
    "tensor with dimensions that overflow int64": header([], [tensor("t", [2**63, 2**63, 2**63, 2**63])]),
    "tensor of unknown type": header([], [tensor("t", [32], qtype=1000)]),
    "tensor with a newline in its name": header([], [tensor("line\nbreak", [32], qtype=1000)]),
    "tensor not whole Q8_0 blocks": header([], [tensor("t", [33], qtype=8)]),
    "tensor data past the end": header([], [tensor("t", [1024])]),
    "tensor offset past the end": header([], [tensor("t", [1], offset=2**64 - 1)]),
    "duplicate tensor": header([], [tensor("t", [1]), tensor("t", [1])]) + bytes(64),
    "empty file": b"",
}


@pytest.mark.parametrize("case", list(CASES))
def test_lying_headers(target, case):
    target.write_bytes(CASES[case])
    with pytest.raises(LMForgeError, match=r"fuzzed\.gguf: ") as info:
        read_header(target)
    assert "\n" not in str(info.value)
    read_or_refuse(target, CASES[case])


def test_a_directory_or_missing_file_is_one_line(tmp_path):
    for path in (tmp_path, tmp_path / "missing.gguf"):
        with pytest.raises(LMForgeError, match="cannot read GGUF file"):
            read_header(path)


# ---- through lmforge.load: wrong values and types in the metadata ---------------------------------


TENSORS = tiny_llama_tensors()


def test_the_tiny_llama_loads(target):
    target.write_bytes(f32_gguf(TINY_LLAMA, TENSORS))
    lm = lmforge.load(target, device="cpu")
    assert lm.config.n_layer == 2 and lm.tokenizer.encode("ab") == [VOCAB - 1]


ODD_VALUES = [
    0,
    1,
    3,
    7,
    100_000,
    2**31,
    2**32 - 1,
    -1.0,
    0.0,
    1e30,
    float("nan"),
    "",
    "x",
    "gpt2",
    [],
    [1],
    ["a"],
    ["a b"],
    ["x y"],
]


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from(list(TINY_LLAMA)), st.sampled_from(ODD_VALUES), min_size=1, max_size=3
    )
)
def test_load_with_odd_metadata(target, changes):
    """Sizes that disagree with the tensors, counts of zero or 2**32-1, strings where numbers belong,
    merges that make tokens the vocabulary lacks: a model, or one line naming the file."""
    target.write_bytes(f32_gguf(TINY_LLAMA | changes, TENSORS))
    try:
        lmforge.load(target, device="cpu")
    except LMForgeError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"{target}: "), str(exc)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("llama.block_count", "thirty", r"'llama.block_count' is 'thirty', expected int"),
        ("llama.block_count", 3, "says 3 blocks, the file has tensors for 2"),
        ("llama.embedding_length", [64], r"'llama.embedding_length' is \[64\], expected int"),
        (
            "llama.embedding_length",
            2**31,
            r"token_embd.weight has shape \(16, 8\), .* embedding_length=2147483648",
        ),
        ("llama.attention.head_count", 0, r"invalid ModelConfig.n_head=0"),
        (
            "llama.attention.head_count",
            4,
            r"'blk.0.attn_k.weight' has 4 rows, the metadata says 1 heads of 2",
        ),
        ("llama.rope.freq_base", "high", "'llama.rope.freq_base' is 'high', expected float"),
        ("general.architecture", 7, "unsupported GGUF architecture 7"),
        ("tokenizer.ggml.tokens", 7, r"'tokenizer.ggml.tokens' is 7, expected a list of str"),
        ("tokenizer.ggml.merges", ["x y"], "merge 'x y' makes a token that is not in the vocabulary"),
    ],
)
def test_wrong_metadata_is_a_one_line_error_naming_the_file(target, key, value, message):
    target.write_bytes(f32_gguf(TINY_LLAMA | {key: value}, TENSORS))
    with pytest.raises(LMForgeError, match=message) as info:
        lmforge.load(target, device="cpu")
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{target}: ")
