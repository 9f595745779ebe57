"""The sentence-transformers format: how an encoder's token states become one sentence vector.

A sentence-transformers directory is a Hugging Face checkpoint plus `modules.json` (the pipeline:
Transformer -> Pooling -> optional Normalize), `1_Pooling/config.json` (which pooling) and
`sentence_bert_config.json` (maximum length, lower-casing). `EmbeddingSpec` is that recipe, read from
and written to those files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import LMForgeError

# our pooling name -> the `pooling_mode_*` flag sentence-transformers sets for it
POOLING_MODES = {"cls": "cls_token", "mean": "mean_tokens", "max": "max_tokens", "last": "lasttoken"}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LMForgeError(f"{path}: not readable sentence-transformers JSON ({exc})") from None


@dataclass
class EmbeddingSpec:
    """How an encoder turns token states into one vector (sentence-transformers' Pooling/Normalize)."""

    pooling: str = "mean"  # mean | cls | max | last
    normalize: bool = False
    max_len: int | None = None
    do_lower_case: bool = False

    @classmethod
    def from_dir(cls, path: Path) -> EmbeddingSpec | None:
        """The recipe of a sentence-transformers directory; None when it has no `modules.json`."""
        modules_file = path / "modules.json"
        if not modules_file.is_file():
            return None
        spec = cls()
        for module in _read_json(modules_file):
            kind = module.get("type", "")
            if kind.endswith("Pooling"):
                pooling = _read_json(path / module["path"] / "config.json")
                for ours, mode in POOLING_MODES.items():
                    if pooling.get(f"pooling_mode_{mode}"):
                        spec.pooling = ours
                        break
            elif kind.endswith("Normalize"):
                spec.normalize = True
        st_config = path / "sentence_bert_config.json"
        if st_config.is_file():
            data = _read_json(st_config)
            spec.max_len = data.get("max_seq_length")
            spec.do_lower_case = data.get("do_lower_case", False)
        return spec

    def files(self, dim: int) -> dict[str, str]:
        """The sentence-transformers files that describe this recipe (written by `LM.save`)."""
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        if self.normalize:
            modules.append(
                {
                    "idx": 2,
                    "name": "2",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                }
            )
        pooling = {"word_embedding_dimension": dim}
        pooling.update(
            {f"pooling_mode_{m}": m == POOLING_MODES[self.pooling] for m in POOLING_MODES.values()}
        )
        return {
            "modules.json": json.dumps(modules, indent=2),
            "1_Pooling/config.json": json.dumps(pooling, indent=2),
            "sentence_bert_config.json": json.dumps(
                {"max_seq_length": self.max_len, "do_lower_case": self.do_lower_case}, indent=2
            ),
        }
