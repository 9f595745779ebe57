"""Data pipeline: corpus -> cleaned, deduplicated, scrubbed, tokenized shards -> training batches.

corpus.py   read text files, directories, JSONL and built-in corpora into `Document`s
clean.py    Unicode normalization, control characters, Gopher-style quality rules
dedup.py    exact (content hash) and near-duplicate (MinHash + LSH) removal
pii.py      emails, credit cards, IP addresses and phone numbers replaced by tags
shards.py   document-level split, parallel tokenization into uint16/uint32 memmap shards + manifest
pipeline.py all of the above with a JSON/Markdown report
api.py      `prepare`: the pipeline as the public API function (flat options, a `PrepareResult`)
loaders.py  `CLMBatchSampler` (resumable windows over shards), `MLMCollator`, `check_tokenizer`
"""

from lmforge.data.api import PrepareResult, prepare
from lmforge.data.corpus import Document, read_corpus
from lmforge.data.loaders import CLMBatchSampler, MLMCollator, check_tokenizer, word_continuation_table
from lmforge.data.pipeline import PrepareOptions
from lmforge.data.shards import open_split, read_manifest

__all__ = [
    "CLMBatchSampler",
    "Document",
    "MLMCollator",
    "PrepareOptions",
    "PrepareResult",
    "check_tokenizer",
    "open_split",
    "prepare",
    "read_corpus",
    "read_manifest",
    "word_continuation_table",
]
