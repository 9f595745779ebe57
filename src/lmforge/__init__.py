"""lmforge: a hackable, end-to-end language-model toolkit."""

from lmforge.errors import LMForgeError

__version__ = "0.1.0"

__all__ = ["LMForgeError", "__version__"]
