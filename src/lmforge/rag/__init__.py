"""Retrieval-augmented generation: ingest, chunk, index (SQLite + FAISS, or PostgreSQL + pgvector),
retrieve (BM25, dense, hybrid), rerank, answer with citations, check faithfulness, evaluate."""

from lmforge.rag.answer import Answer, Source
from lmforge.rag.api import Hit, Index, IndexReport, ask, eval_table, evaluate, index, open_index, search
from lmforge.rag.config import AskConfig, IndexConfig, SearchConfig
from lmforge.rag.faithfulness import Faithfulness, score, support

__all__ = [
    "Answer",
    "Faithfulness",
    "Source",
    "ask",
    "score",
    "support",
    "AskConfig",
    "Hit",
    "Index",
    "IndexConfig",
    "IndexReport",
    "eval_table",
    "evaluate",
    "SearchConfig",
    "index",
    "open_index",
    "search",
]
