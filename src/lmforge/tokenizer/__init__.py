"""Tokenizers: train, load, encode/decode, chat templates and streaming detokenization.

`Tokenizer` (core.py) wraps a Hugging Face `tokenizers` engine and is built from every format
(`Tokenizer.load`, `.from_gguf`, `.from_tiktoken`, ...); loaders.py reads GGUF metadata, tiktoken
ranks, SentencePiece `.model` and BERT vocab.txt into the engine each implies (core imports loaders,
not the other way round); train.py trains BPE, WordPiece and Unigram; chat.py renders chat templates
in a sandbox; detok.py streams text; reference_bpe.py is a readable pure-Python BPE for learning.
"""

from lmforge.tokenizer.core import Encoded, Tokenizer

__all__ = ["Encoded", "Tokenizer"]
