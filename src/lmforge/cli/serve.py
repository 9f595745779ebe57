"""`lmforge serve`: the OpenAI-compatible server (every option is a `ServeConfig` field)."""

from __future__ import annotations

from typing import Any

import lmforge
from lmforge.options import with_options


@with_options(lmforge.ServeConfig)
def serve(**options: Any) -> None:
    """Serve a model behind the OpenAI HTTP API (/v1/chat/completions, /v1/completions, /v1/embeddings,
    /v1/models, /tokenize, /detokenize, /health, /metrics) with continuous batching, and a chat page at /.

    Point any OpenAI client at http://HOST:PORT/v1, e.g. `OpenAI(base_url="http://127.0.0.1:8000/v1",
    api_key="KEY or anything")`; open http://HOST:PORT/ in a browser to chat.
    """
    lmforge.serve(**options)


COMMANDS = {"serve": serve}
