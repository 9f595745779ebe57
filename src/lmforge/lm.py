"""`lmforge.load(...) -> LM`: a model with its tokenizer, generation defaults and embedding recipe.

Sources: an asset name (`smollm2`, `minilm`), an lmforge or Hugging Face checkpoint directory, or a
`.gguf` file. Nothing is ever downloaded: a hub name gives an error that names the local-path form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError
from lmforge.generate.engine import COMPILE_MODES, CompileMode, Engine
from lmforge.io import checkpoint
from lmforge.io.load import read_model
from lmforge.io.sentence_transformers import EmbeddingSpec
from lmforge.model import Transformer


class LM:
    """A loaded model: `.model` (pure nn.Module), `.tokenizer`, `.config`, generation defaults, and one
    long-lived `.engine` that every `generate`/`stream`/`chat` call (and a `ContinuousBatcher`) runs on.

    `compile` is how the engine's one-token decode steps run unless a call says otherwise: "auto" (the
    ahead-of-time compiled step when its package is already on disk, else eager), "eager", "compile"
    (torch.compile) or "aot" (compiled ahead of time, kept on disk); see `lmforge.generate.engine`.
    """

    def __init__(
        self,
        model: Transformer,
        tokenizer=None,
        generation_config: dict[str, Any] | None = None,
        embedding: EmbeddingSpec | None = None,
        source: str | None = None,
        compile: CompileMode = "auto",
    ):
        if compile not in COMPILE_MODES:
            raise LMForgeError(f"unknown compile mode {compile!r}; use one of {', '.join(COMPILE_MODES)}")
        self.model = model
        self.tokenizer = tokenizer
        self.generation_config = generation_config or {}
        self.embedding = embedding
        self.source = source
        self.compile = compile
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """The model's engine, built on first use and kept (with its compiled decode steps); a new one
        if `.model` was replaced."""
        if self._engine is None or self._engine.model is not self.model:
            self._engine = Engine(self.model, compile=self.compile)
        return self._engine

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def __repr__(self) -> str:
        return (
            f"LM(source={self.source!r}, family={self.config.family}, params={self.model.num_parameters():,})"
        )

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise LMForgeError(f"{self.source}: this checkpoint has no tokenizer; pass token ids instead")
        return self.tokenizer

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._require_tokenizer().encode(text, add_special_tokens=add_special_tokens)

    @torch.inference_mode()
    def logits(self, text_or_ids: str | list[int] | torch.Tensor) -> torch.Tensor:
        """Logits (T, V) of one sequence given as text or token ids (hidden states for encoders)."""
        if isinstance(text_or_ids, str):
            ids = torch.tensor([self.encode(text_or_ids)], device=self.device)
        else:
            ids = torch.as_tensor(text_or_ids, device=self.device).reshape(1, -1)
        if ids.shape[1] == 0:
            raise LMForgeError("empty input: nothing to compute logits for")
        if ids.shape[1] > self.config.max_seq_len:
            raise LMForgeError(
                f"input of {ids.shape[1]} tokens exceeds the model's context of {self.config.max_seq_len}"
            )
        return self.model(ids)[0].float()

    @torch.inference_mode()
    def embed(
        self, texts: str | list[str], batch_size: int = 32, normalize: bool | None = None
    ) -> torch.Tensor:
        """Sentence embeddings (N, d) pooled as the checkpoint's sentence-transformers config says."""
        if self.config.causal and self.embedding is None:
            raise LMForgeError(
                "embed() needs an encoder or a checkpoint with a pooling config (modules.json)"
            )
        spec = self.embedding or EmbeddingSpec()
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if not texts:
            raise LMForgeError("embed() got no texts")
        tok = self._require_tokenizer()
        max_len = min(spec.max_len or self.config.max_seq_len, self.config.max_seq_len)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        out = []
        for i in range(0, len(texts), batch_size):
            batch = [t.lower() if spec.do_lower_case else t for t in texts[i : i + batch_size]]
            ids = [tok.encode(t, add_special_tokens=True, max_length=max_len) for t in batch]
            width = max(len(x) for x in ids)
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=self.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=self.device)
            h = self.model.hidden_states(input_ids, attention_mask=mask).float()  # (B, T, C)
            out.append(pool(h, mask, spec.pooling))
        emb = torch.cat(out)
        if spec.normalize if normalize is None else normalize:
            emb = torch.nn.functional.normalize(emb, dim=-1)
        return emb[0] if single else emb

    def generate(self, prompt, **options):
        """Generate text; see `lmforge.generate.generate` for prompts, options and strategies."""
        from lmforge.generate import generate

        return generate(self, prompt, **options)

    def stream(self, prompt, **options):
        """Yield text deltas as they are generated; see `lmforge.generate.stream`."""
        from lmforge.generate import stream

        return stream(self, prompt, **options)

    def chat(self, messages, **options):
        """Answer a conversation through the chat template; see `lmforge.generate.chat`."""
        from lmforge.generate import chat

        return chat(self, messages, **options)

    def save(self, path: str | Path) -> Path:
        """Write our checkpoint directory (loads in transformers for standard families)."""
        extra = self.embedding.files(self.config.d_model) if self.embedding else None
        return checkpoint.write_checkpoint(path, self.model, self.tokenizer, self.generation_config, extra)

    def _kv_cache_info(self) -> dict[str, Any]:
        """What generation adds to the weights: KV-cache memory per sequence, per token and at full context."""
        if not self.config.causal:
            return {}
        from lmforge.generate.cache import KVCache

        per_token = KVCache.bytes_per_token(self.config, self.dtype)
        return {
            "kv_cache_kb_per_token": round(per_token / 2**10, 2),
            "kv_cache_mb_full_context": round(per_token * self.config.max_seq_len / 2**20, 1),
        }

    def _kernel_paths(self) -> str:
        """Which kernel each kind of quantized layer runs here ("native": lmforge's own; "kernel" or
        "int_mm": torch's; "dequantize": dequantize-then-matmul, where neither runs on this machine)."""
        paths = {
            f"{type(m).__name__} {m.path}"
            for m in self.model.modules()
            if isinstance(getattr(m, "path", None), str)
        }
        return ", ".join(sorted(paths)) or "none"

    def info(self) -> dict[str, Any]:
        from lmforge.quant.convert import describe
        from lmforge.quant.report import memory_bytes

        c = self.config
        record = getattr(self.model, "quantization", None)
        # a quantized layer holds its weight as integer codes (buffers): count the weights it stands for
        n = c.num_parameters() if record else self.model.num_parameters()
        return {
            "source": self.source,
            "family": c.family,
            "kind": "decoder" if c.causal else "encoder",
            "parameters": n,
            "dtype": str(self.dtype).removeprefix("torch."),
            **({"quantization": describe(record), "kernels": self._kernel_paths()} if record else {}),
            "memory_mb": round(memory_bytes(self.model) / 2**20, 1),
            "context_length": c.max_seq_len,
            **self._kv_cache_info(),
            "layers": c.n_layer,
            "heads": f"{c.n_head} query / {c.n_kv_head} kv",
            "d_model": c.d_model,
            "vocab_size": c.vocab_size,
            "position": c.position,
            "tokenizer": type(self.tokenizer).__name__ if self.tokenizer is not None else None,
            "chat_template": bool(getattr(self.tokenizer, "chat_template", None)),
        }


def pool(h: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool token states (B, T, C) over real tokens (mask 1) into (B, C)."""
    m = mask[..., None].to(h.dtype)
    if how == "mean":
        return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if how == "max":
        return h.masked_fill(m == 0, float("-inf")).max(1).values
    if how == "cls":
        return h[:, 0]
    if how == "last":
        return h[torch.arange(h.shape[0]), mask.sum(1) - 1]
    raise LMForgeError(f"unknown pooling '{how}'; use mean, max, cls or last")


def load(
    source: str | Path,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    compile: CompileMode = "auto",
) -> LM:
    """Load a model from an asset name, a checkpoint directory or a GGUF file (a VLM directory gives a
    `lmforge.multimodal.vlm.VLM`, which generates like an LM and takes `image=`).

    `dtype` is a torch dtype or a name (`bf16`, `float32`, ...); the defaults are fp32 on CPU and bf16
    on a GPU that supports it. Reading the formats is `lmforge.io.load.read_model`'s job.
    `compile` picks the decode step generation uses (a call's `compile=`/`aot=` options override it):
    "auto" uses the ahead-of-time compiled step when its package is already kept on disk (nothing to
    wait for), else eager steps; "eager"; "compile" (torch.compile, compiled on first use); "aot"
    (compiled ahead of time on first use, tens of seconds, then kept on disk for "auto" to find).
    """
    if compile not in COMPILE_MODES:
        raise LMForgeError(f"unknown compile mode {compile!r}; use one of {', '.join(COMPILE_MODES)}")
    from lmforge.multimodal.vlm import VLM, is_vlm_dir

    if is_vlm_dir(source):  # a vision-language model: generation takes image=
        return VLM.load(source, compile=compile)
    loaded = read_model(source, dtype, device)
    return LM(
        loaded.model,
        loaded.tokenizer,
        loaded.generation_config,
        loaded.embedding,
        source=str(source),
        compile=compile,
    )
