"""Tokenizers: train, load, encode/decode, chat templates and streaming detokenization.

`Tokenizer` (core.py) wraps a Hugging Face `tokenizers` engine; loaders.py builds one from GGUF
metadata, tiktoken ranks, SentencePiece `.model` or BERT vocab.txt; train.py trains BPE, WordPiece and
Unigram; chat.py renders chat templates in a sandbox; detok.py streams text; reference_bpe.py is a
readable pure-Python BPE for learning.
"""

from lmforge.tokenizer.core import Encoded, Tokenizer

__all__ = ["Encoded", "Tokenizer"]
