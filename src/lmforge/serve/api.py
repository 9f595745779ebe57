"""`lmforge.serve(...)`: run the OpenAI-compatible server (blocks until it is stopped)."""

from __future__ import annotations

import logging
from typing import Any

from lmforge.errors import LMForgeError
from lmforge.options import configure
from lmforge.serve.config import ServeConfig


def serve(config: ServeConfig | None = None, **options: Any) -> None:
    """Serve a model behind the OpenAI HTTP API, with continuous batching, streaming, embeddings,
    Prometheus metrics and a web chat page at `/`.

    Options are `ServeConfig`'s fields, as keywords or a config object (or both: keywords win), e.g.
    `lmforge.serve(model="smollm2", embedding_model="minilm", port=8000)`. Returns when the server is
    stopped (Ctrl-C); raises `LMForgeError` when a model cannot be loaded.
    """
    config = configure(ServeConfig, config, options, "serve options")
    import uvicorn

    from lmforge.serve.app import ServerState, create_app

    failures: list[Exception] = []
    server: uvicorn.Server | None = None

    def stop(exc: Exception) -> None:
        failures.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(config, ServerState(config, on_error=stop))
    _log_to_stderr(config.log_level)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level=config.log_level,
            log_config=None,  # uvicorn's dictConfig would close every logging handler the process has
            timeout_graceful_shutdown=5,
        )
    )
    server.run()
    if failures:
        exc = failures[0]
        raise exc if isinstance(exc, LMForgeError) else LMForgeError(f"cannot serve {config.model}: {exc}")


def _log_to_stderr(level: str) -> None:
    """uvicorn's and the server's messages at `level`, printed to stderr when the process has no logging
    set up (the CLI); a program or test harness that configured logging keeps its own handlers."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s:     %(message)s")
    for name in ("uvicorn", "lmforge.serve"):
        logging.getLogger(name).setLevel(level.upper())
