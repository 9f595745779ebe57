"""Retrieval-augmented generation: ingest, chunk, index (SQLite + FAISS, or PostgreSQL + pgvector),
retrieve (BM25, dense, hybrid), rerank, answer with citations, check faithfulness, evaluate."""

from lmforge.rag.api import Hit, Index, IndexReport, index, open_index, search
from lmforge.rag.config import AskConfig, IndexConfig, SearchConfig

__all__ = [
    "AskConfig",
    "Hit",
    "Index",
    "IndexConfig",
    "IndexReport",
    "SearchConfig",
    "index",
    "open_index",
    "search",
]
