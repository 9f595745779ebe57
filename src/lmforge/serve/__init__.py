"""The OpenAI-compatible server: `lmforge serve` / `lmforge.serve(...)` (see `app` and `scheduler`)."""

from lmforge.serve.api import serve
from lmforge.serve.config import ServeConfig

__all__ = ["ServeConfig", "serve"]
