"""lmforge: a hackable, end-to-end language-model toolkit."""

from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError
from lmforge.generate.config import GenerationConfig
from lmforge.lm import LM, load

__version__ = "0.1.0"

__all__ = ["LM", "GenerationConfig", "LMForgeError", "ModelConfig", "__version__", "load"]
