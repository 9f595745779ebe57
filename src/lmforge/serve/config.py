"""ServeConfig: every option of `lmforge serve` / `lmforge.serve(...)`, declared once with its help."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from lmforge.errors import LMForgeError
from lmforge.options import check_types, option

API_KEY_ENV = "LMFORGE_API_KEY"


@dataclass
class ServeConfig:
    """How the OpenAI-compatible server runs: which models, where it listens, and its limits."""

    model: str = option(
        "smollm2", "generation model: asset name (smollm2), checkpoint directory or .gguf file"
    )
    embedding_model: str | None = option(
        None, "model for /v1/embeddings: asset name (minilm) or checkpoint directory with a pooling config"
    )
    served_model_name: str | None = option(
        None, "the id clients pass as `model` for the generation model (unset: the --model value)"
    )
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0 exposes the server to the network)")
    port: int = option(8000, "port to listen on")
    api_key: str | None = option(
        None,
        f"require `Authorization: Bearer KEY` on /v1/*, /tokenize, /detokenize (also read from {API_KEY_ENV})",
    )
    max_batch: int = option(16, "requests decoded together in the running batch")
    prefill_tokens: int = option(
        2048,
        "prompt tokens (padded: rows x longest prompt) prefilled together in one step; more new requests "
        "join at the next step, so running streams keep their pace",
    )
    max_queue: int = option(64, "requests that may wait for a row; more are refused with 429 and Retry-After")
    max_tokens: int = option(512, "new tokens for a request that sets no max_tokens (capped to the context)")
    max_body_bytes: int = option(1_048_576, "largest request body; a larger one is refused with 413")
    compile: Literal["auto", "eager", "compile", "aot"] = option(
        "auto", "decode step of the running batch (see lmforge.load): auto, eager, compile or aot"
    )
    dtype: str = option(
        "auto",
        "generation model's weights dtype: auto (bfloat16 where this machine runs it natively and the cached "
        "matmul probe finds it faster, else float32; see lmforge.hardware.choose_precision), float32, "
        "bfloat16, ...",
    )
    embedding_dtype: str = option(
        "float32", "embedding model's weights dtype (float32: /v1/embeddings equals LM.embed; auto as above)"
    )
    pack_weights: bool = option(
        True,
        "float32 on the CPU: keep each linear weight also in oneDNN's packed layout, which batched decode "
        "reads 1.3-1.8x faster (the weights' memory twice over; lmforge.model.linear.pack_fp32)",
    )
    threads: int | None = option(None, "torch intra-op threads (unset: torch's choice)")
    log_level: Literal["debug", "info", "warning", "error"] = option("info", "uvicorn's log level")

    def __post_init__(self) -> None:
        check_types(self, "serve options")
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
        checks = [
            ("port", 0 <= self.port <= 65535, "must be in 0..65535"),
            ("max_batch", self.max_batch >= 1, "must be >= 1"),
            ("prefill_tokens", self.prefill_tokens >= 1, "must be >= 1"),
            ("max_queue", self.max_queue >= 0, "must be >= 0"),
            ("max_tokens", self.max_tokens >= 1, "must be >= 1"),
            ("max_body_bytes", self.max_body_bytes >= 1024, "must be >= 1024"),
            ("threads", self.threads is None or self.threads >= 1, "must be >= 1"),
            ("api_key", self.api_key is None or bool(self.api_key.strip()), "must not be empty"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise LMForgeError(f"serve options: {name}={getattr(self, name)!r} {why}")

    @property
    def model_id(self) -> str:
        return self.served_model_name or self.model
