"""What `lmforge rag index --sentence-vectors` costs: embedding every chunk of a store against embedding
every chunk's sentences (one forward per sentence, as the sentence reranker's cache holds them), on a
copy of the wikipedia store `rag_eval.py` builds (646 chunks) with its sentence cache emptied.

Writes benchmarks/results/rag_sentence_fill.json (CPU model and flags, load average).

    python benchmarks/rag_sentence_fill.py [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "rag_sentence_fill.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="~/.cache/lmforge/bench-rag/wikipedia.db")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from lmforge.hardware import describe
    from lmforge.io.atomic import atomic_write_text
    from lmforge.rag import Index

    folder = Path(tempfile.mkdtemp(prefix="rag_fill_"))
    try:
        store = folder / "copy.db"
        shutil.copy(Path(args.source).expanduser(), store)
        with sqlite3.connect(store) as con:
            con.execute("DELETE FROM sentence_vectors")
        out = {"machine": describe(), "load_average_before": os.getloadavg()}
        idx = Index(store)
        _, texts = idx.store.chunk_texts()
        idx.embed(["warm-up"])
        start = time.perf_counter()
        idx.embed(texts)
        out["chunks"], out["chunk_embed_s"] = len(texts), time.perf_counter() - start
        start = time.perf_counter()
        idx.fill_sentence_vectors()
        out["sentences"], out["sentence_fill_s"] = idx.sentence_vectors_embedded, time.perf_counter() - start
        out["ratio"] = out["sentence_fill_s"] / out["chunk_embed_s"]
        out["load_average_after"] = os.getloadavg()
        idx.store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}))
    atomic_write_text(RESULTS, json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
