"""Real servers for the serve tests: `lmforge serve` in a subprocess on a free loopback port, driven over
HTTP (the official `openai` client, httpx, a browser). Started once per session each:

- `tiny_server`: a tiny random Llama saved with a small byte-level BPE tokenizer and a chat template
  (tests/tiny.py's model, 1,024-token context): fast, for most tests;
- `limits_server`: the same checkpoint behind an API key, one row, a one-request queue and a 4 KiB body
  limit, for 401, 413 and 429; it and `fuzz_server` keep the default dtype (auto);
- `fuzz_server`: the tiny model with a 96-token context (every fuzzed request stays short);
- `smollm2_server`: SmolLM2-135M-Instruct with all-MiniLM-L6-v2 for /v1/embeddings.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_helpers import API_KEY, save_tiny_checkpoint, start_server


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="session")
def tiny_lm(tiny_checkpoint):
    """The tiny checkpoint loaded in the test process (eager steps, as the server's batch runs them)."""
    import lmforge

    return lmforge.load(tiny_checkpoint, compile="eager")


@pytest.fixture(scope="session")
def tiny_server(tiny_checkpoint, tmp_path_factory):
    server = start_server(
        str(tiny_checkpoint),
        tmp_path_factory.mktemp("logs"),
        max_batch=8,
        compile="eager",
        dtype="float32",  # its replies are compared with tiny_lm's, loaded in float32
        served_model_name="tiny",
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def limits_server(tiny_checkpoint, tmp_path_factory):
    server = start_server(
        str(tiny_checkpoint),
        tmp_path_factory.mktemp("logs"),
        max_batch=1,
        max_queue=1,
        max_body_bytes=4096,
        compile="eager",
        api_key=API_KEY,
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smollm2_server(tmp_path_factory):
    server = start_server(
        "smollm2",
        tmp_path_factory.mktemp("logs"),
        embedding_model="minilm",
        compile="eager",
        max_batch=4,
        dtype="float32",  # replies compared with the float32 `smollm2` fixture's
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fuzz_server(tmp_path_factory):
    checkpoint = save_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny96", context=96)
    server = start_server(
        str(checkpoint), tmp_path_factory.mktemp("logs"), max_batch=4, max_queue=4, compile="eager"
    )
    yield server
    server.stop()
