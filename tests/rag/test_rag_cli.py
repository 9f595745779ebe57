"""`lmforge rag index` and `lmforge rag search` through the CLI entry point (in process)."""

from __future__ import annotations

import json

from rag_corpus import write_corpus

from lmforge.cli import main


def test_index_then_search_json(tmp_path, capsys, minilm):
    folder = write_corpus(tmp_path / "docs")
    store = tmp_path / "docs.db"
    (folder / "blob.txt").write_bytes(b"\x00\x01\x02")
    assert (
        main(["rag", "index", str(folder), "--store", str(store), "--chunk-tokens", "48", "--overlap", "8"])
        == 0
    )
    out = capsys.readouterr().out
    assert "6 documents" in out and "+6 added" in out and "skipped" in out and "blob.txt" in out
    assert (
        main(
            [
                "rag",
                "search",
                "--store",
                str(store),
                "--mode",
                "bm25",
                "--k",
                "2",
                "--json",
                "Sicilian Defence",
            ]
        )
        == 0
    )
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (
        len(hits) == 1 and hits[0]["path"] == "chess.html"
    )  # BM25 returns only chunks that match: and hits[0]["rank"] == 1
    assert {"score", "start", "end", "section", "text", "title"} <= set(hits[0])


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["rag", "search", "--store", str(tmp_path / "none.db"), "q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    assert main(["rag", "index", str(tmp_path / "nowhere"), "--store", str(tmp_path / "x.db")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
