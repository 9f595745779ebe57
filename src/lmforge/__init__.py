"""lmforge: a hackable, end-to-end language-model toolkit."""

from lmforge import rag
from lmforge.config import ModelConfig
from lmforge.data.api import PrepareResult, prepare
from lmforge.data.clean import QualityConfig
from lmforge.data.pipeline import PrepareOptions
from lmforge.embeddings import EmbeddingPlot, EmbeddingPlotConfig, plot_embeddings
from lmforge.errors import LMForgeError
from lmforge.eval.api import (
    EvalResult,
    TokenizerComparison,
    compare_reports,
    compare_tokenizers,
    evaluate,
    score,
)
from lmforge.eval.bias import BiasConfig, bias
from lmforge.eval.consistency import ConsistencyConfig, consistency
from lmforge.eval.harness import EvalConfig, list_tasks, load_task
from lmforge.eval.human import HumanEvalConfig, human_eval, human_results
from lmforge.eval.judge import JudgeConfig, JudgeResult, judge
from lmforge.eval.refree import ReferenceFreeConfig, reference_free
from lmforge.eval.safety import SafetyConfig, safety
from lmforge.generate.config import GenerationConfig
from lmforge.hardware import keep_freed_memory
from lmforge.lm import LM, load
from lmforge.multimodal import (
    CLIP,
    VLM,
    ClipConfig,
    ClipQuickstartResult,
    ClipTrainConfig,
    VLMConfig,
    VLMQuickstartResult,
    VLMTrainConfig,
    train_clip,
    train_vlm,
)
from lmforge.quant import QuantizeConfig, QuantizeResult, quantize
from lmforge.quant.gguf_export import export_gguf
from lmforge.serve import ServeConfig, serve
from lmforge.tokenizer import Tokenizer
from lmforge.tokenizer.train import TokenizerTrainConfig, train_tokenizer
from lmforge.train.api import QuickstartResult, finetune, merge_lora, pretrain, quickstart
from lmforge.train.config import FinetuneConfig, PretrainConfig, QuickstartConfig
from lmforge.train.trainer import TrainConfig, TrainResult

__version__ = "0.1.0"

__all__ = [
    "BiasConfig",
    "CLIP",
    "ClipConfig",
    "ClipQuickstartResult",
    "ClipTrainConfig",
    "VLM",
    "VLMConfig",
    "VLMQuickstartResult",
    "VLMTrainConfig",
    "ConsistencyConfig",
    "EmbeddingPlot",
    "EmbeddingPlotConfig",
    "EvalConfig",
    "EvalResult",
    "FinetuneConfig",
    "GenerationConfig",
    "HumanEvalConfig",
    "JudgeConfig",
    "JudgeResult",
    "LM",
    "LMForgeError",
    "ModelConfig",
    "PrepareOptions",
    "PrepareResult",
    "PretrainConfig",
    "QualityConfig",
    "QuantizeConfig",
    "QuantizeResult",
    "QuickstartConfig",
    "QuickstartResult",
    "ReferenceFreeConfig",
    "SafetyConfig",
    "ServeConfig",
    "Tokenizer",
    "TokenizerComparison",
    "TokenizerTrainConfig",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "bias",
    "compare_reports",
    "consistency",
    "compare_tokenizers",
    "evaluate",
    "export_gguf",
    "finetune",
    "human_eval",
    "human_results",
    "judge",
    "keep_freed_memory",
    "list_tasks",
    "load",
    "load_task",
    "merge_lora",
    "plot_embeddings",
    "prepare",
    "pretrain",
    "quantize",
    "quickstart",
    "rag",
    "reference_free",
    "safety",
    "score",
    "serve",
    "train_clip",
    "train_vlm",
    "train_tokenizer",
]
