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


@with_options(lmforge.rag.AskConfig)
def ask(question: str, *, store: str, stream: bool = True, json: bool = False, **options: Any):
    """Answer QUESTION from an index: the generator reads the best chunks as numbered sources and cites
    them as [n]; the sources and each sentence's support (faithfulness) follow the answer.

    Args:
        question: the question.
        store: the index (SQLite file or postgresql:// URL).
        stream: print the answer as it is generated.
        json: print the answer, sources and scores as one JSON object.
    """
    answer = None
    for event in lmforge.rag.ask(store, question, stream=True, **options):
        if isinstance(event, str):
            print(event, end="", flush=True) if stream and not json else None
        else:
            answer = event
    if json:
        print(jsonlib.dumps(answer.to_dict(), ensure_ascii=False, indent=1))
        return answer
    print(
        ("" if stream else answer.text)
        + ("" if answer.retrieved else f"\n(no retrieval: confidence {answer.confidence:.2f})")
    )
    for s in answer.sources:
        print(f"[{s.n}] {s.path} [{s.start}:{s.end}]" + (f" § {s.section}" if s.section else ""))
    f = answer.faithfulness
    if f is not None:
        print(
            f"faithfulness {f.faithfulness:.2f}, citation recall {f.citation_recall:.2f}, "
            f"precision {f.citation_precision:.2f}"
            + (" — UNSUPPORTED: " + " | ".join(f.unsupported) if f.flagged else "")
        )
    return answer


@with_options(lmforge.rag.SearchConfig, skip=("mode", "k"))
def evaluate(
    *,
    store: str,
    qrels: str,
    modes: list[str] = ["bm25", "dense", "hybrid", "hybrid-rerank"],  # noqa: B006 - read-only
    k: int = 10,
    n_resamples: int = 1000,
    json: bool = False,
    **options: Any,
) -> dict:
    """Retrieval quality of each mode on a qrels file: recall@k, mrr@k, ndcg@k, map with bootstrap
    intervals (a qrels line: {"query": "...", "relevant": ["path/in/the/indexed/folder.md", ...]});
    the search options (fusion, reranker, ...) apply to every mode.

    Args:
        store: the index (SQLite file or postgresql:// URL).
        qrels: JSONL file of queries and their relevant documents (graded: {"path": grade}).
        modes: retrieval modes to compare (bm25, dense, hybrid, hybrid-rerank).
        k: the cutoff of the metrics (documents).
        n_resamples: bootstrap resamples for the 95% intervals.
        json: print the metrics as one JSON object instead of a table.
    """
    results = lmforge.rag.evaluate(store, qrels, modes=modes, k=k, n_resamples=n_resamples, **options)
    if json:
        flat = {m: {name: v["value"] for name, v in r.items()} for m, r in results.items()}
        print(jsonlib.dumps(flat[modes[0]] if len(modes) == 1 else flat, indent=1))
    else:
        print(lmforge.rag.eval_table(results))
    return results


COMMANDS = {"rag index": index, "rag search": search, "rag ask": ask, "rag eval": evaluate}
