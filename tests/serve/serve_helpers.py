"""Helpers for the serve tests: a tiny checkpoint saved to disk, and `lmforge serve` run as a real
process on a free loopback port (see conftest.py for the servers the tests share)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import torch

TEXTS = [
    "hello world, how are you? fine thanks, and you?",
    "the quick brown fox jumps over the lazy dog",
    "to be or not to be, that is the question",
    '{"name": "Ada", "age": 36, "tags": ["x", "y"]}',
]
API_KEY = "test-key-123"


def save_tiny_checkpoint(path: Path, context: int = 1024) -> Path:
    """A tiny random Llama (2 layers, 32 wide, a `context`-token context) with a byte-level BPE tokenizer
    whose chat template uses <|im_start|>/<|im_end|>, saved as an lmforge checkpoint directory."""
    from lmforge.lm import LM
    from tiny import tiny_chat_tokenizer, tiny_model

    tokenizer = tiny_chat_tokenizer(TEXTS, vocab_size=400)
    model = tiny_model(
        "llama", seed=7, vocab_size=tokenizer.vocab_size, max_seq_len=context, tie_embeddings=False
    )
    with torch.no_grad():  # sharper attention and next-token distributions: varied, prompt-dependent text
        model.lm_head.weight.mul_(3.0)
        for name, weight in model.named_parameters():
            weight.mul_(2.0 if "attn.qkv" in name else 4.0 if "attn.proj" in name else 1.0)
    LM(model, tokenizer, {}).save(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running `lmforge serve` process."""

    url: str
    model: str
    process: subprocess.Popen
    log: Path
    api_key: str | None = None

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def client(self, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key or "none", max_retries=0, **kwargs)

    def async_client(self, **kwargs):
        import openai

        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key or "none", max_retries=0, **kwargs
        )

    def http(self, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    def metrics(self) -> dict[str, float]:
        """Prometheus samples by name with labels, e.g. 'lmforge_running_sequences' or
        'lmforge_sequences_finished_total{reason="cancelled"}'."""
        text = httpx.get(self.url + "/metrics", timeout=30).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_server(model: str, tmp: Path, timeout: float = 240, **options) -> Server:
    """`lmforge.serve(model=MODEL, **options)` in a new process on a free loopback port (one torch
    thread, warnings only); returns once /health answers 200. The CLI's own path is tested apart
    (test_serve_config.py), so a command module broken elsewhere in the tree does not stop these servers."""
    port = free_port()
    log = tmp / f"serve-{port}.log"
    options = {"model": model, "port": port, "threads": 1, "log_level": "warning", **options}
    code = "import json, sys, lmforge; lmforge.serve(**json.loads(sys.argv[1]))"
    cmd = [sys.executable, "-c", code, json.dumps(options)]
    env = {**os.environ, "LMFORGE_API_KEY": ""}
    process = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", options.get("served_model_name") or model, process, log)
    server.api_key = options.get("api_key")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"lmforge serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(server.url + "/health", timeout=5).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"lmforge serve did not become ready in {timeout} s:\n{log.read_text()}")
