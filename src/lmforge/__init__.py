"""lmforge: a hackable, end-to-end language-model toolkit."""

from lmforge.config import ModelConfig
from lmforge.data.api import PrepareResult, prepare
from lmforge.data.clean import QualityConfig
from lmforge.data.pipeline import PrepareOptions
from lmforge.errors import LMForgeError
from lmforge.eval.api import (
    EvalResult,
    TokenizerComparison,
    compare_reports,
    compare_tokenizers,
    evaluate,
    score,
)
from lmforge.eval.harness import EvalConfig, list_tasks, load_task
from lmforge.generate.config import GenerationConfig
from lmforge.lm import LM, load
from lmforge.tokenizer import Tokenizer
from lmforge.tokenizer.train import TokenizerTrainConfig, train_tokenizer

__version__ = "0.1.0"

__all__ = [
    "EvalConfig",
    "EvalResult",
    "GenerationConfig",
    "LM",
    "LMForgeError",
    "ModelConfig",
    "PrepareOptions",
    "PrepareResult",
    "QualityConfig",
    "Tokenizer",
    "TokenizerComparison",
    "TokenizerTrainConfig",
    "__version__",
    "compare_reports",
    "compare_tokenizers",
    "evaluate",
    "list_tasks",
    "load",
    "load_task",
    "prepare",
    "score",
    "train_tokenizer",
]
