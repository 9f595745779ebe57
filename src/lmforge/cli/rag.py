"""`lmforge rag ...`: index documents, search them, answer from them, evaluate retrieval.

Thin layers over `lmforge.rag`; the options are the fields of `IndexConfig`, `SearchConfig` and
`AskConfig`."""

from __future__ import annotations

import json as jsonlib
from typing import Any

import lmforge
from lmforge.options import with_options


@with_options(lmforge.rag.IndexConfig)
def index(paths: list[str], *, store: str, **options: Any) -> lmforge.rag.IndexReport:
    """Index files, folders (.txt .md .html .jsonl) or built-in corpora (shakespeare, wikipedia) into a
    store; re-running adds new documents, replaces changed ones and deletes removed ones.

    Args:
        paths: files, folders or built-in corpus names.
        store: SQLite file (created if missing; a FAISS index goes beside it) or postgresql:// URL.
    """
    report = lmforge.rag.index(paths, store, progress=None, **options)
    print(report.summary())
    return report


@with_options(lmforge.rag.SearchConfig)
def search(query: str, *, store: str, json: bool = False, **options: Any) -> list:
    """Search an index: the best chunks for QUERY with their document, section and character span.

    Args:
        query: what to search for.
        store: the index (SQLite file or postgresql:// URL).
        json: print the hits as JSON lines instead of text.
    """
    hits = lmforge.rag.search(store, query, **options)
    for h in hits:
        if json:
            print(jsonlib.dumps(h.to_dict(), ensure_ascii=False))
        else:
            where = f"{h.path} [{h.start}:{h.end}]" + (f" § {h.section}" if h.section else "")
            print(f"{h.rank:>3}. {h.score:.4f}  {where}\n     {' '.join(h.text.split())[:200]}")
    return hits


COMMANDS = {"rag index": index, "rag search": search}
